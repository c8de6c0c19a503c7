"""Benchmark of softmax attention (``flashmarkov.attention.flash_attention`` / ``_varlen``).

Case layouts (the case's ``layout`` names the attention pattern; tensors are (B, H, S, D)):
"full" and "causal" (Hkv = H), "gqa-full" / "gqa-causal" (Hkv = H / 4, the issue's Hq 32 / Hkv 8),
and "varlen-causal": the shape's B sequences of mixed lengths (``VARLEN_LENGTHS``, 100…8000,
cycled) packed into one (total, H, D) tensor. The plot's x is the sequence length S (the total
for varlen).

Metric: FlashAttention's FLOP convention (../math.md §2): forward 4·B·H·Sq·Sk·D, halved for
causal; forward + backward 3.5× the forward. ``floor_ms`` is those FLOPs at the matmul rate
measured on the device for the case's dtype (8192³ ``torch.matmul``), so the runner's
"fraction_of_floor" is the fraction of matmul peak; ``tflops(case, ms)`` gives TFLOP/s.

Peers (exact calls; each is skipped with its reason where it is missing or does not apply):

- torch SDPA: ``F.scaled_dot_product_attention(q, k, v, is_causal=causal, enable_gqa=gqa)``
  under ``torch.nn.attention.sdpa_kernel(SDPBackend.X)`` for X in CUDNN_ATTENTION,
  FLASH_ATTENTION (FlashAttention-2), EFFICIENT_ATTENTION; dense cases only.
- FlexAttention: ``torch.compile(flex_attention)(q, k, v, block_mask=..., enable_gqa=gqa)`` with
  a causal ``create_block_mask`` for causal cases; dense cases only.
"""

from __future__ import annotations

import argparse
import functools
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from .options import csv
from .registry import Case, Impl, Op, Outputs, Prepared, Skip
from .timing import Environment

Tensor = torch.Tensor
AttnFn = Callable[[Tensor, Tensor, Tensor], Tensor]

LAYOUTS = ("full", "causal", "gqa-full", "gqa-causal", "varlen-causal")
GQA_GROUP = 4
VARLEN_LENGTHS = (100, 8000, 2048, 350, 6000, 1200, 4096, 3000, 777, 5000, 1500, 8000, 640, 3333, 7000, 256)
# (layout, (B, H, S, D)): acceptance 3 (speed), 4 (small-batch latency), 5 (GQA, varlen)
DEFAULT_CASES = (
    ("full", (2, 16, 8192, 128)),
    ("causal", (2, 16, 8192, 128)),
    ("full", (4, 8, 2048, 64)),
    ("causal", (4, 8, 2048, 64)),
    ("causal", (1, 32, 16384, 128)),
    ("full", (32, 8, 128, 64)),
    ("full", (16, 8, 512, 64)),
    ("gqa-causal", (2, 32, 8192, 128)),
    ("causal", (2, 32, 8192, 128)),
    ("varlen-causal", (16, 16, 0, 128)),
)
QUICK_CASES = (("full", (2, 8, 1024, 64)), ("causal", (2, 8, 1024, 64)))
SWEEP = tuple((layout, (2, 16, 2**k, 128)) for layout in ("full", "causal") for k in range(9, 15))
TOLERANCE = {"float32": 1e-4, "float16": 5e-3, "bfloat16": 3e-2}
REFERENCE_SCORES = 1 << 28  # float64 score elements per reference chunk (2 GiB)


def varlen_lengths(n_seq: int) -> list[int]:
    return [VARLEN_LENGTHS[i % len(VARLEN_LENGTHS)] for i in range(n_seq)]


def _causal(case: Case) -> bool:
    return case.layout.endswith("causal")


def _hkv(case: Case) -> int:
    return case.shape[1] // GQA_GROUP if case.layout.startswith("gqa") else case.shape[1]


def flops(case: Case) -> float:
    """FlashAttention's FLOP count of one call (forward, or forward + backward)."""
    B, H, S, D = case.shape
    pairs = sum(n * n for n in varlen_lengths(B)) if case.layout.startswith("varlen") else B * S * S
    fwd = 4.0 * H * pairs * D / (2 if _causal(case) else 1)
    return fwd * (3.5 if case.mode == "fwdbwd" else 1.0)


def tflops(case: Case, median_ms: float) -> float:
    return flops(case) / (median_ms * 1e9)


@dataclass(frozen=True)
class AttnInputs:
    """q (B, H, S, D), k, v (B, Hkv, S, D); varlen: (total, H, D) with int32 ``cu``; ``do`` for
    forward + backward."""

    q: Tensor
    k: Tensor
    v: Tensor
    do: Tensor | None
    cu: Tensor | None
    max_len: int


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--layouts",
        type=csv(LAYOUTS),
        default=",".join(LAYOUTS),
        help="attention patterns to run; --shapes (BxHxSxD) run with each (default: %(default)s)",
    )


def cases(args: argparse.Namespace) -> list[Case]:
    """Modes × dtypes × the acceptance cases (or ``--shapes`` × ``--layouts``), then the S sweep."""
    if args.quick:
        chosen = QUICK_CASES
    elif args.shapes:
        if any(len(shape) != 4 for shape in args.shapes):
            raise SystemExit(f"attention shapes are BxHxSxD; got {args.shapes}")
        chosen = tuple((layout, shape) for shape in args.shapes for layout in args.layouts)
    else:
        chosen = tuple(c for c in DEFAULT_CASES if c[0] in args.layouts)
    sweep = SWEEP if args.sweep and not args.quick else ()
    selected: dict[tuple, Case] = {}
    for mode in args.modes:
        for dtype in args.dtypes:
            for layout, shape in (*chosen, *sweep):
                if layout.startswith("varlen"):
                    shape = (shape[0], shape[1], sum(varlen_lengths(shape[0])), shape[3])
                key = (layout, mode, dtype, shape)
                in_sweep = (layout, shape) in sweep
                if key not in selected or in_sweep:
                    selected[key] = Case("attention", layout, mode, dtype, shape, shape[2], in_sweep)
    return list(selected.values())


def make_inputs(case: Case, device: torch.device, seed: int) -> AttnInputs:
    generator = torch.Generator(device=device).manual_seed(seed)
    B, H, S, D = case.shape
    hkv = _hkv(case)

    def draw(*shape: int) -> Tensor:
        return torch.randn(shape, generator=generator, device=device).to(case.torch_dtype)

    if case.layout.startswith("varlen"):
        lengths = varlen_lengths(B)
        cu = torch.tensor([0, *itertools.accumulate(lengths)], dtype=torch.int32, device=device)
        do = draw(S, H, D) if case.mode == "fwdbwd" else None
        return AttnInputs(draw(S, H, D), draw(S, hkv, D), draw(S, hkv, D), do, cu, max(lengths))
    do = draw(B, H, S, D) if case.mode == "fwdbwd" else None
    return AttnInputs(draw(B, H, S, D), draw(B, hkv, S, D), draw(B, hkv, S, D), do, None, S)


def reference(case: Case, inputs: AttnInputs) -> Outputs:
    """o, then dq, dk, dv: the float64 reference on the device (explicit backward formulas, no
    autograd graph), one sequence and at most ``REFERENCE_SCORES`` score elements at a time."""
    from flashmarkov.attention.reference import flash_attention_bwd_ref, flash_attention_ref

    causal = _causal(case)
    group = case.shape[1] // _hkv(case)

    def one_sequence(q: Tensor, k: Tensor, v: Tensor, do: Tensor | None) -> list[Tensor]:
        """(1, H, S, D) tensors of one sequence, a few key/value heads (and their query heads) at a time."""
        hkv, sq, sk = k.shape[1], q.shape[2], k.shape[2]
        step = max(1, REFERENCE_SCORES // max(1, sq * sk * group))
        chunks = []
        for h0 in range(0, hkv, step):
            kv = slice(h0, min(h0 + step, hkv))
            qh = slice(kv.start * group, kv.stop * group)
            qc, kc, vc = q[:, qh].double(), k[:, kv].double(), v[:, kv].double()
            outs = [flash_attention_ref(qc, kc, vc, causal=causal)]
            if do is not None:
                outs += flash_attention_bwd_ref(do[:, qh].double(), qc, kc, vc, causal=causal)
            chunks.append(outs)
        return [torch.cat(parts, dim=1) for parts in zip(*chunks, strict=True)]

    if inputs.cu is None:
        per_seq = [
            one_sequence(*(x[b : b + 1] for x in (inputs.q, inputs.k, inputs.v)),
                         None if inputs.do is None else inputs.do[b : b + 1])
            for b in range(case.shape[0])
        ]
        return tuple(torch.cat(parts, dim=0) for parts in zip(*per_seq, strict=True))
    cu = inputs.cu.tolist()
    per_seq = []
    for a, b in zip(cu[:-1], cu[1:], strict=True):
        q, k, v = (x[a:b].transpose(0, 1)[None] for x in (inputs.q, inputs.k, inputs.v))
        do = None if inputs.do is None else inputs.do[a:b].transpose(0, 1)[None]
        per_seq.append([t[0].transpose(0, 1) for t in one_sequence(q, k, v, do)])
    return tuple(torch.cat(parts, dim=0) for parts in zip(*per_seq, strict=True))


def bytes_moved(case: Case) -> int:
    B, H, S, D = case.shape
    per_q = (B * S if not case.layout.startswith("varlen") else S) * H * D
    per_kv = per_q // H * _hkv(case)
    streams = 2 * per_q + 2 * per_kv  # q, o; k, v
    if case.mode == "fwdbwd":
        streams += 3 * per_q + 4 * per_kv  # read q, o, do, k, v again; write dq, dk, dv
    return streams * case.torch_dtype.itemsize


@functools.cache
def matmul_tflops(device: torch.device, dtype: torch.dtype) -> float:
    """Measured dense matmul rate (TFLOP/s) of an 8192³ ``torch.matmul`` in ``dtype``."""
    n = 8192 if device.type == "cuda" else 512
    a, b = (torch.randn(n, n, device=device).to(dtype) for _ in range(2))
    if device.type == "cuda":
        import triton

        ms = triton.testing.do_bench(lambda: a @ b, warmup=25, rep=200)
    else:
        a @ b
        start = time.perf_counter()
        a @ b
        ms = (time.perf_counter() - start) * 1e3
    return 2 * n**3 / (ms * 1e9)


def floor_ms(case: Case, env: Environment) -> float:
    return flops(case) / (matmul_tflops(env.device, case.torch_dtype) * 1e9)


def tolerance(case: Case) -> float:
    return TOLERANCE[case.dtype]


def _prepared(case: Case, inputs: AttnInputs, attn: AttnFn) -> Prepared:
    """Forward under no_grad, or forward + ``autograd.grad`` of q, k, v with the set's do."""
    if case.mode == "fwd":

        def forward() -> Outputs:
            with torch.no_grad():
                return (attn(inputs.q, inputs.k, inputs.v),)

        return Prepared(forward)
    leaves = tuple(x.detach().requires_grad_() for x in (inputs.q, inputs.k, inputs.v))

    def forward_backward() -> Outputs:
        o = attn(*leaves)
        return (o, *torch.autograd.grad(o, leaves, inputs.do))

    return Prepared(forward_backward)


def _impl(name: str, dist: str, load: Callable[[Case, AttnInputs], AttnFn], varlen: bool = False) -> Impl:
    def prepare(case: Case, inputs: AttnInputs) -> Prepared:
        if case.layout.startswith("varlen") and not varlen:
            raise Skip("no packed-sequence (varlen) entry point measured")
        try:
            attn = load(case, inputs)
        except Skip:
            raise
        except Exception as error:
            raise Skip(f"not available: {type(error).__name__}: {error}") from error
        return _prepared(case, inputs, attn)

    return Impl(name, dist, prepare)


def _flashmarkov(case: Case, inputs: AttnInputs) -> AttnFn:
    from flashmarkov.attention import flash_attention, flash_attention_varlen

    causal = _causal(case)
    if inputs.cu is not None:
        cu, n = inputs.cu, inputs.max_len
        return lambda q, k, v: flash_attention_varlen(q, k, v, cu, cu, n, n, causal=causal)
    return lambda q, k, v: flash_attention(q, k, v, causal=causal)


def _sdpa(backend_name: str) -> Callable[[Case, AttnInputs], AttnFn]:
    def load(case: Case, inputs: AttnInputs) -> AttnFn:
        import torch.nn.functional as F
        from torch.nn.attention import SDPBackend, sdpa_kernel

        backend = getattr(SDPBackend, backend_name)
        causal, gqa = _causal(case), case.layout.startswith("gqa")

        def attn(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
            with sdpa_kernel(backend):
                return F.scaled_dot_product_attention(q, k, v, is_causal=causal, enable_gqa=gqa)

        return attn

    return load


class _Flex:
    """``torch.compile(flex_attention)`` and its block mask, compiled once per process."""

    def __init__(self) -> None:
        self.compiled: Callable | None = None

    def load(self, case: Case, inputs: AttnInputs) -> AttnFn:
        if inputs.q.device.type != "cuda":
            raise Skip("FlexAttention is compiled for CUDA only")
        from torch.nn.attention.flex_attention import create_block_mask, flex_attention

        if self.compiled is None:
            self.compiled = torch.compile(flex_attention, dynamic=False)
        B, H, S, D = case.shape
        mask = None
        if _causal(case):
            mask = create_block_mask(lambda b, h, i, j: j <= i, None, None, S, S, device=inputs.q.device)
        gqa, flex = case.layout.startswith("gqa"), self.compiled
        return lambda q, k, v: flex(q, k, v, block_mask=mask, enable_gqa=gqa)


def impls(args: argparse.Namespace) -> tuple[Impl, ...]:
    flex = _Flex()
    return (
        _impl("flashmarkov", "flashmarkov", _flashmarkov, varlen=True),
        _impl("sdpa.cudnn", "torch", _sdpa("CUDNN_ATTENTION")),
        _impl("sdpa.flash2", "torch", _sdpa("FLASH_ATTENTION")),
        _impl("sdpa.efficient", "torch", _sdpa("EFFICIENT_ATTENTION")),
        _impl("flex_attention", "torch", flex.load),
    )


OP = Op(
    name="attention",
    x_label="S (sequence length; total tokens for varlen)",
    add_arguments=add_arguments,
    cases=cases,
    impls=impls,
    make_inputs=make_inputs,
    reference=reference,
    bytes_moved=bytes_moved,
    floor_ms=floor_ms,
    floor="dense-matmul floor: FLOPs at the measured matmul rate",
    tolerance=tolerance,
)


def host_split(shapes: list[tuple[int, int, int, int]], dtype: torch.dtype = torch.bfloat16) -> list[str]:
    """Rows separating host time from kernel time of the forward, causal and not (CUDA only):
    ``call`` = ``flash_attention`` (validation, allocation, launch), ``kernel`` = the forward
    launch alone on preallocated outputs, ``host_us`` = wall time of ``call`` without
    synchronisation (the Python side and the launch), ``sdpa`` = cuDNN SDPA, all via do_bench."""
    import triton
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from flashmarkov.attention import flash_attention, forward

    rows = [f"{'shape':>16} {'causal':>6} {'call_ms':>8} {'kernel_ms':>9} {'host_us':>7} {'sdpa_ms':>7}"]
    for shape in shapes:
        q, k, v = (torch.randn(shape, device="cuda", dtype=dtype) for _ in range(3))
        for causal in (False, True):
            o, lse = torch.empty_like(q), q.new_empty(shape[:3], dtype=torch.float32)
            prob = forward.make_problem(q, k, None, None, shape[2], shape[2], shape[3] ** -0.5, causal, -1, -1, 0.0)
            with torch.no_grad():
                call = triton.testing.do_bench(lambda: flash_attention(q, k, v, causal=causal))
                kernel = triton.testing.do_bench(lambda: forward.attention_forward(q, k, v, o, lse, prob))
                with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
                    sdpa = triton.testing.do_bench(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=causal))
                torch.cuda.synchronize()
                start = time.perf_counter()
                for _ in range(200):
                    flash_attention(q, k, v, causal=causal)
                host = (time.perf_counter() - start) / 200 * 1e6
                torch.cuda.synchronize()
            rows.append(f"{'x'.join(map(str, shape)):>16} {causal!s:>6} {call:8.4f} {kernel:9.4f} {host:7.1f} {sdpa:7.4f}")
    return rows


if __name__ == "__main__":
    import sys

    from .options import shapes as parse_shapes

    print("\n".join(host_split(list(parse_shapes(sys.argv[1] if len(sys.argv) > 1 else "32x8x128x64,16x8x512x64,4x8x2048x64")))))
