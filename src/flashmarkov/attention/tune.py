"""Sweep the tile configurations of the attention kernels on the present GPU.

    python -m flashmarkov.attention.tune [--dims 64,128,256] [--seq 8192] [--batch 2] [--heads 16] [--dtype bfloat16]

For each head dim, times the forward, then the backward with each dK/dV candidate (dQ at its
current heuristic), then each dQ candidate (dK/dV at the best found), in bfloat16, causal and
not (``--dtype``: bfloat16 by default; float32 sweeps ``CANDIDATES_FP32``:
its tf32x3 dots hold three operand parts per tile, so the tiles are smaller), with ``triton.testing.do_bench``; prints TFLOP/s (FlashAttention's FLOP convention) and the
best configuration per kind, ready to paste into ``forward.pick_config``. Candidates that do not
fit (shared memory, registers) are reported and skipped.
"""

from __future__ import annotations

import argparse
import math

import torch

from . import backward, forward
from .forward import AttnConfig, attention_forward, make_problem

CANDIDATES = {
    "fwd": [AttnConfig(m, n, w, s) for m, n, w, s in
            [(128, 64, 4, 3), (128, 64, 8, 3), (128, 128, 8, 2), (64, 64, 4, 3), (128, 32, 8, 3), (64, 32, 8, 2)]],
    "dkdv": [AttnConfig(m, n, w, s) for m, n, w, s in
             [(32, 128, 8, 2), (64, 128, 8, 2), (32, 64, 4, 3), (16, 128, 8, 2), (64, 64, 8, 2), (32, 32, 8, 2)]],
    "dq": [AttnConfig(m, n, w, s) for m, n, w, s in
           [(128, 32, 8, 2), (128, 64, 8, 2), (64, 64, 4, 3), (64, 32, 4, 3), (32, 64, 8, 2)]],
}
CANDIDATES_FP32 = {  # tf32x3 dots: wgmma wants 64-row tiles (M < 64 falls back to mma.sync)
    "fwd": [AttnConfig(m, n, w, s) for m, n, w, s in
            [(64, 64, 4, 2), (64, 32, 4, 2), (64, 32, 4, 3), (128, 64, 8, 2), (128, 32, 8, 2), (64, 64, 8, 2),
             (32, 32, 4, 2)]],
    "dkdv": [AttnConfig(m, n, w, s) for m, n, w, s in
             [(16, 64, 4, 1), (16, 64, 4, 2), (32, 64, 4, 1), (32, 64, 4, 2), (16, 128, 8, 1), (32, 128, 8, 1),
              (32, 32, 4, 2)]],
    "dq": [AttnConfig(m, n, w, s) for m, n, w, s in
           [(64, 32, 4, 2), (64, 64, 4, 2), (64, 16, 4, 2), (128, 32, 8, 2), (64, 32, 8, 2), (32, 32, 4, 2)]],
}


def _time(fn) -> float:
    import triton

    return triton.testing.do_bench(fn, warmup=25, rep=100)


def tune(
    batch: int, heads: int, seq: int, dim: int, causal: bool, dtype: torch.dtype = torch.bfloat16
) -> dict[str, tuple[AttnConfig, float]]:
    """Best (config, TFLOP/s) per kernel kind at one shape."""
    q, k, v, do = (torch.randn(batch, heads, seq, dim, device="cuda", dtype=dtype) for _ in range(4))
    candidates = CANDIDATES_FP32 if dtype == torch.float32 else CANDIDATES
    prob = make_problem(q, k, None, None, seq, seq, 1 / math.sqrt(dim), causal, -1, -1, 0.0)
    o, lse = torch.empty_like(q), q.new_empty(batch, heads, seq, dtype=torch.float32)
    dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
    fwd_flop = 4 * batch * heads * seq * seq * dim / (2 if causal else 1)
    chosen = {kind: forward.pick_config(kind, dim, False, q.element_size()) for kind in ("fwd", "dkdv", "dq", "delta")}
    best: dict[str, tuple[AttnConfig, float]] = {}
    original = forward.pick_config
    try:
        for kind in ("fwd", "dkdv", "dq"):
            flop = fwd_flop if kind == "fwd" else 2.5 * fwd_flop
            for cfg in candidates[kind]:
                trial = dict(chosen, **{kind: cfg})
                forward.pick_config = backward.pick_config = lambda kind, head_dim, banded=False, itemsize=2, trial=trial: trial[kind]
                if kind == "fwd":
                    run = lambda: attention_forward(q, k, v, o, lse, prob)  # noqa: E731
                else:
                    attention_forward(q, k, v, o, lse, prob)
                    run = lambda: backward.attention_backward(do, q, k, v, o, lse, None, dq, dk, dv, prob)  # noqa: E731
                try:
                    tflops = flop / (_time(run) * 1e9)
                except Exception as error:  # out of resources: not a candidate on this GPU
                    print(f"  D={dim} causal={causal} {kind} {cfg}: skipped ({type(error).__name__})")
                    continue
                print(f"  D={dim} causal={causal} {kind} {cfg}: {tflops:7.1f} TFLOP/s", flush=True)
                if kind not in best or tflops > best[kind][1]:
                    best[kind] = (cfg, tflops)
            if kind in best:
                chosen[kind] = best[kind][0]
    finally:
        forward.pick_config = backward.pick_config = original
    return best


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m flashmarkov.attention.tune", description=__doc__.split("\n\n")[0])
    parser.add_argument("--dims", default="64,128,256")
    parser.add_argument("--seq", type=int, default=8192)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--heads", type=int, default=16)
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    parser.add_argument("--causal", default="both", choices=["both", "no", "yes"])
    args = parser.parse_args()
    dtype = getattr(torch, args.dtype)
    print(torch.cuda.get_device_name(), f"B={args.batch} H={args.heads} S={args.seq} {args.dtype}")
    for dim in (int(d) for d in args.dims.split(",")):
        for causal in {"both": (False, True), "no": (False,), "yes": (True,)}[args.causal]:
            best = tune(args.batch, args.heads, args.seq, dim, causal, dtype)
            print(f"best D={dim} causal={causal}: " + ", ".join(f"{k}={c} {t:.0f} TFLOP/s" for k, (c, t) in best.items()))


if __name__ == "__main__":
    main()
