"""Do the exponential unit (MUFU) and the tensor cores work at the same time on one SM?

The diffusion product at d = 16, the D = 64 attention forward and the diffmax passes all run, per
tile, as if the tensor-core phase and the exponential phase added (notes/diffusion-tiles.md,
sessions 12-16: 448 + 512 cycles per 128×64 tile, ~960 measured), even in a Gluon kernel whose
two warpgroups alternate by design (FlashAttention-3's ping-pong). This probe asks the hardware
directly, with no schedule in the way: one-warpgroup programs of three roles,

- ``exp``: 64 float32 exponentials per thread and step (a [128, 64] tile of exp2, dependent
  chains per element, 64 independent ones per thread),
- ``exp_cvt``: the same plus the float16 round trip of the diffusion loop's P split
  (F2FP + back), to see whether the conversions are what collides,
- ``dot``: a [128, 64] × [64, 64] float16 wgmma chain per step (A and B resident),
- ``fma``: one dependent FFMA per element and step (the FMA pipe), for calibration,

launched as exactly one wave of ``--per-sm`` programs per SM. A "mixed" launch gives the programs
that land on one SM alternating roles (the SM id from ``%smid`` and a per-SM counter), so each SM
holds half of each. With t_a and t_b the one-role times, a mixed launch that takes
(t_a + t_b) / 2 serialises the two units; max(t_a, t_b) / 2 overlaps them perfectly. ``PAIRS``: exp
and exp_cvt against dot ask the question; fma against dot and exp against fma show what overlap
looks like on the same GPU. The step counts are calibrated first so that each role alone takes
about ``--target-ms``.

    python benchmarks/overlap_probe.py [--per-sm 4] [--target-ms 2] [--out DIR]

Prints one line per pair and writes overlap-probe.json to ``--out``. CUDA only (the SM id is read
by inline PTX); ``--interpret`` runs the kernel through the Triton interpreter at a tiny size, the
roles by program parity, to check the code paths.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch
import triton
import triton.language as tl

ROLES = {"exp": 0, "exp_cvt": 1, "dot": 2, "fma": 3}
PAIRS = (("exp", "dot"), ("exp_cvt", "dot"), ("fma", "dot"), ("exp", "fma"))
"""Mixed launches: the first two ask the question; fma + dot (FMA pipe against the tensor cores) and
exp + fma (two pipes that should overlap) calibrate what overlap looks like on this GPU."""


@triton.jit
def _exp_steps(x, n, CVT: tl.constexpr):
    """n steps of x ← 2^x − 1, which stays in (−1, 0] (a bounded dependent chain per element); CVT adds
    the diffusion loop's float16 round trip of its P split (F2FP and back) to every step."""
    i = 0
    while i < n:  # while: the interpreter cannot take a runtime range bound
        y = tl.exp2(x)
        if CVT:
            y = y.to(tl.float16).to(tl.float32)
        x = y - 1.0
        i += 1
    return x


@triton.jit
def _run_role(role, n):
    """``n`` steps of ``role`` (``ROLES``) on a [128, 64] tile per one-warpgroup program; its sum."""
    o_m = tl.arange(0, 128)
    o_n = tl.arange(0, 64)
    i = 0
    if role == 2:
        # [128, 64] and [64, 64] float16 operands, values in [0, 1/64): the float32 sums stay finite
        a = ((o_m[:, None] * 64 + o_n[None, :]) % 61).to(tl.float16) * (1.0 / 4096)
        b = ((o_n[:, None] * 64 + o_n[None, :]) % 59).to(tl.float16) * (1.0 / 4096)
        acc = tl.zeros([128, 64], dtype=tl.float32)
        while i < n:
            acc = tl.dot(a, b, acc=acc, out_dtype=tl.float32)
            i += 1
        total = tl.sum(acc)
    else:
        x = -((o_m[:, None] * 64 + o_n[None, :]) % 97).to(tl.float32) * (1.0 / 128)
        if role == 3:  # one FFMA per element and step, x → 0.75 x − 0.25 stays in [−1, 0]
            while i < n:
                x = x * 0.75 - 0.25
                i += 1
        elif role == 1:
            x = _exp_steps(x, n, True)
        else:
            x = _exp_steps(x, n, False)
        total = tl.sum(x)
    return total


@triton.jit
def _overlap_kernel(
    out_ptr,      # [grid] float32: one sum per program (keeps the work alive)
    counter_ptr,  # [1024] int32 zeros: programs seen per SM (mixed launches with SMID)
    n_a, n_b,     # steps of ROLE_A and of ROLE_B
    ROLE_A: tl.constexpr, ROLE_B: tl.constexpr,  # the two roles (equal: a one-role launch)
    SMID: tl.constexpr,  # alternate roles per SM by %smid (GPU), else by program parity (interpreter)
):
    pid = tl.program_id(0)
    if ROLE_A == ROLE_B:
        total = _run_role(ROLE_A, n_a)
    else:
        if SMID:
            sm = tl.inline_asm_elementwise("mov.u32 $0, %smid;", "=r", [], dtype=tl.int32, is_pure=False, pack=1)
            slot = tl.atomic_add(counter_ptr + sm, 1)
        else:
            slot = pid
        if slot % 2 == 0:
            total = _run_role(ROLE_A, n_a)
        else:
            total = _run_role(ROLE_B, n_b)
    tl.store(out_ptr + pid, total)


def _launch(role_a: str, role_b: str, n_a: int, n_b: int, grid: int, device: str, smid: bool) -> None:
    out = torch.empty(grid, dtype=torch.float32, device=device)
    counter = torch.zeros(1024, dtype=torch.int32, device=device)
    _overlap_kernel[(grid,)](out, counter, n_a, n_b, ROLE_A=ROLES[role_a], ROLE_B=ROLES[role_b], SMID=smid, num_warps=4)


def _time_ms(fn) -> float:
    return float(triton.testing.do_bench(fn, warmup=25, rep=100, return_mode="median"))


def main() -> None:
    parser = argparse.ArgumentParser(prog="python benchmarks/overlap_probe.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--per-sm", type=int, default=4, help="one-warpgroup programs per SM (one wave)")
    parser.add_argument("--target-ms", type=float, default=2.0, help="time of each role alone after calibration")
    parser.add_argument("--out", default=os.environ.get("OUT", "."), help="directory for overlap-probe.json")
    parser.add_argument("--interpret", action="store_true", help="tiny run through the Triton interpreter")
    args = parser.parse_args()
    if args.interpret:
        for a, b in ((r, r) for r in ROLES):
            _launch(a, b, 2, 2, 4, "cpu", smid=False)
        for a, b in PAIRS:
            _launch(a, b, 2, 2, 4, "cpu", smid=False)
        print("interpreter: every role and pair ran")
        return
    device = "cuda"
    props = torch.cuda.get_device_properties(device)
    grid = props.multi_processor_count * args.per_sm

    def alone(role: str, steps: int) -> float:
        return _time_ms(lambda: _launch(role, role, steps, steps, grid, device, True))

    steps = {}
    for role in ROLES:  # calibrate: time at 64 steps, scale to the target
        steps[role] = max(64, int(64 * args.target_ms / alone(role, 64)))
    single = {role: alone(role, steps[role]) for role in ROLES}
    rows = []
    for a, b in PAIRS:
        t_mixed = _time_ms(lambda a=a, b=b: _launch(a, b, steps[a], steps[b], grid, device, True))
        serial, overlap = (single[a] + single[b]) / 2, max(single[a], single[b]) / 2
        fraction = (serial - t_mixed) / (serial - overlap) if serial > overlap else None
        rows.append(dict(roles=[a, b], t_a_ms=single[a], t_b_ms=single[b], t_mixed_ms=t_mixed, serialised_ms=serial,
                         overlapped_ms=overlap, overlap_fraction=fraction))
        print(f"{a:8s} + {b:4s}: alone {single[a]:.3f} / {single[b]:.3f} ms, mixed {t_mixed:.3f} ms "
              f"(serialised {serial:.3f}, overlapped {overlap:.3f}): overlap fraction "
              f"{'n/a' if fraction is None else f'{fraction:.2f}'}")
    record = dict(device=props.name, sms=props.multi_processor_count, per_sm=args.per_sm, steps=steps, rows=rows,
                  torch=torch.__version__, triton=triton.__version__, date=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                  commit=os.environ.get("FLASHMARKOV_COMMIT", "unknown"))
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "overlap-probe.json").write_text(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
