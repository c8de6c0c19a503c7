"""Benchmark of α-diffmax (``flashmarkov.diffmax``): the row normaliser and fused sparse attention.

Layouts (the ``--layouts`` option):

- "rows": ``diffmax_bisect(X, α=0.5, dim=-1)`` on (B, H, S, S) scores 3·N(0, 1) (default
  1×8×4096×4096, fp32 and bf16). Floor (bytes): forward reads X and writes p (2 streams);
  forward + backward also reads p, dp and writes dX (5 streams), at the measured copy bandwidth.
- "attn", "attn-causal", "attn-clustered": ``diffmax_attention(q, k, v, α=0.5)`` on (B, H, S, D)
  with D = 64, bf16/fp16 only (default 1×16×4096 both masks, 1×8×16384 causal, and
  1×16×4096 with clustered keys). Clustered keys: 16 clusters of consecutive positions, q and k =
  centroid (norm 8) + 0.5·N(0, 1), so ~94% of 64×64 tiles (non-causal) have all weights zero.
  Floor (FLOPs, FlashAttention's convention): forward 4·B·H·S²·D, halved for causal, backward
  2.5× forward, at the bf16 matmul rate measured once per run (8192³).

Entmax peers use α_entmax = 2 − α = 1.5, which is the same function (../math.md §3):

- entmax 1.3: ``entmax.entmax_bisect(X, alpha=1.5, dim=-1, n_iter=50)`` (rows).
- adasplash 0.2.2: ``adasplash.triton_entmax(X, alpha=1.5)`` (rows; its defaults n_iter=2 with a
  histogram start) and ``adasplash.adasplash(q, k, v, alpha=1.5, is_causal=…)`` (attention; it
  dispatches causal α=1.5 calls to AdaSplash-2 and the rest to the block-mask v1 kernel).

Dense speed baselines compute a different function, softmax: ``torch.softmax(X, -1)`` (rows)
and SDPA with the cuDNN backend (attention), named ``*.dense``. Their outputs are checked against
their own float64 formula inside ``canonical`` (untimed): within tolerance it hands the runner the
diffmax reference, so the runner times them (and records rel_err 0, which for them means "matched
softmax"); otherwise NaNs, so the runner marks them wrong.
"""

from __future__ import annotations

import argparse
import functools
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from .options import csv
from .registry import Case, Impl, Op, Outputs, Prepared, Skip
from .timing import Environment

Tensor = torch.Tensor

ALPHA = 0.5
ENTMAX_ALPHA = 2.0 - ALPHA
ROW_SHAPES = ((1, 8, 4096, 4096),)
ROW_SWEEP = tuple((1, 8, (1 << 25) // n, n) for n in (1024, 4096, 16384, 65536, 1 << 20))
ATTN_SHAPES = {
    "attn": ((1, 16, 4096, 64),),
    "attn-causal": ((1, 16, 4096, 64), (1, 8, 16384, 64)),
    "attn-clustered": ((1, 16, 4096, 64),),
}
LAYOUTS = ("rows", *ATTN_SHAPES)
QUICK = {"rows": ((1, 2, 64, 512),), "attn": ((1, 2, 256, 64),), "attn-causal": ((1, 2, 256, 64),), "attn-clustered": ((1, 2, 256, 64),)}
TOLERANCE = {"float32": 1e-4, "float16": 4e-3, "bfloat16": 2e-2}
CLUSTERS, CLUSTER_RADIUS, CLUSTER_NOISE = 16, 8.0, 0.5
REFERENCE_ROWS = 1 << 11


@dataclass(frozen=True)
class DiffmaxInputs:
    """Rows: ``x`` and (fwdbwd) ``dy``. Attention: ``q``, ``k``, ``v`` and (fwdbwd) ``dy`` = dO."""

    x: Tensor | None = None
    q: Tensor | None = None
    k: Tensor | None = None
    v: Tensor | None = None
    dy: Tensor | None = None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--layouts", type=csv(LAYOUTS), default=",".join(LAYOUTS),
        help="rows = the row normaliser on (B, H, S, S) scores; attn[-causal|-clustered] = fused attention "
        "on (B, H, S, D) (default: %(default)s)",
    )


def _is_attn(case: Case) -> bool:
    return case.layout.startswith("attn")


def cases(args: argparse.Namespace) -> list[Case]:
    """Layouts × modes × dtypes × shapes; attention only in bf16/fp16. ``--shapes`` replaces the
    shapes of every selected layout (BxHxSxS for rows, BxHxSxD for attention)."""
    selected = []
    for layout in args.layouts:
        default = ROW_SHAPES if layout == "rows" else ATTN_SHAPES[layout]
        shapes = QUICK[layout] if args.quick else (args.shapes or default)
        sweep = ROW_SWEEP if layout == "rows" and args.sweep and not args.quick else ()
        if any(len(shape) != 4 for shape in shapes):
            raise SystemExit(f"diffmax shapes are 4-D (BxHxSxS or BxHxSxD); got {shapes}")
        for mode in args.modes:
            for dtype in args.dtypes:
                if layout != "rows" and dtype == "float32":
                    continue
                for shape in (*shapes, *sweep):
                    x = shape[3] if layout == "rows" else shape[2]
                    selected.append(Case("diffmax", layout, mode, dtype, tuple(shape), x, shape in sweep))
    return selected


def _clustered(shape: tuple[int, ...], generator: torch.Generator, device: torch.device) -> tuple[Tensor, Tensor]:
    B, H, S, D = shape
    centroids = torch.randn(B, H, CLUSTERS, D, generator=generator, device=device)
    centroids = CLUSTER_RADIUS * centroids / centroids.norm(dim=-1, keepdim=True)
    which = torch.arange(S, device=device) * CLUSTERS // S
    q = centroids[:, :, which] + CLUSTER_NOISE * torch.randn(shape, generator=generator, device=device)
    k = centroids[:, :, which] + CLUSTER_NOISE * torch.randn(shape, generator=generator, device=device)
    return q, k


def make_inputs(case: Case, device: torch.device, seed: int) -> DiffmaxInputs:
    generator = torch.Generator(device=device).manual_seed(seed)
    dtype = case.torch_dtype

    def randn(shape: tuple[int, ...], scale: float = 1.0) -> Tensor:
        return (scale * torch.randn(shape, generator=generator, device=device)).to(dtype)

    if not _is_attn(case):
        return DiffmaxInputs(x=randn(case.shape, 3.0), dy=randn(case.shape) if case.mode == "fwdbwd" else None)
    if case.layout == "attn-clustered":
        q, k = (t.to(dtype) for t in _clustered(case.shape, generator, device))
    else:
        q, k = randn(case.shape), randn(case.shape)
    return DiffmaxInputs(q=q, k=k, v=randn(case.shape), dy=randn(case.shape) if case.mode == "fwdbwd" else None)


def _row_reference(x: Tensor, dy: Tensor | None, fn: Callable[[Tensor], Tensor], bwd: Callable | None) -> Outputs:
    """Float64 outputs (and dX) of a row function, ``REFERENCE_ROWS`` rows at a time."""
    rows = x.reshape(-1, x.shape[-1])
    grads = None if dy is None else dy.reshape(-1, x.shape[-1])
    outs, dxs = [], []
    for start in range(0, rows.shape[0], REFERENCE_ROWS):
        chunk = rows[start : start + REFERENCE_ROWS].double()
        p = fn(chunk)
        outs.append(p)
        if grads is not None:
            dxs.append(bwd(p, grads[start : start + REFERENCE_ROWS].double()))
    result = (torch.cat(outs).view(x.shape),)
    return result if dy is None else (*result, torch.cat(dxs).view(x.shape))


def _diffmax_rows(x: Tensor, dy: Tensor | None) -> Outputs:
    from flashmarkov.diffmax import diffmax_bisect_bwd_ref, diffmax_bisect_ref

    return _row_reference(
        x, dy, lambda c: diffmax_bisect_ref(c, ALPHA, n_iter=60),
        lambda p, g: diffmax_bisect_bwd_ref(p, g, ALPHA, need_alpha_grad=False)[0],
    )


def _softmax_rows(x: Tensor, dy: Tensor | None) -> Outputs:
    return _row_reference(x, dy, lambda c: torch.softmax(c, -1), lambda p, g: p * (g - (p * g).sum(-1, keepdim=True)))


def _attention_reference(inputs: DiffmaxInputs, causal: bool, dense_softmax: bool = False) -> Outputs:
    """Float64 O (and dq, dk, dv): diffmax attention's reference, or dense softmax attention."""
    q, k, v = (t.double() for t in (inputs.q, inputs.k, inputs.v))
    if dense_softmax:
        leaves = tuple(t.requires_grad_(inputs.dy is not None) for t in (q, k, v))
        with torch.enable_grad():
            o = torch.nn.functional.scaled_dot_product_attention(*leaves, is_causal=causal)
        if inputs.dy is None:
            return (o.detach(),)
        return (o.detach(), *torch.autograd.grad(o, leaves, inputs.dy.double()))
    from flashmarkov.diffmax import diffmax_attention_bwd_ref, diffmax_attention_ref

    o = diffmax_attention_ref(q, k, v, ALPHA, causal=causal)[0]
    if inputs.dy is None:
        return (o,)
    return (o, *diffmax_attention_bwd_ref(q, k, v, inputs.dy.double(), ALPHA, causal=causal))


def _causal(case: Case) -> bool:
    return case.layout == "attn-causal"


_LAST_REFERENCE: dict[int, Outputs] = {}


def reference(case: Case, inputs: DiffmaxInputs) -> Outputs:
    """p (and dX) for rows; O (and dq, dk, dv) for attention; float64 on the device. The last
    one is kept (the dense baselines' check asks for it again)."""
    if id(inputs) in _LAST_REFERENCE:
        return _LAST_REFERENCE[id(inputs)]
    _LAST_REFERENCE.clear()
    if _is_attn(case):
        result = _attention_reference(inputs, _causal(case))
    else:
        result = _diffmax_rows(inputs.x, inputs.dy)
    _LAST_REFERENCE[id(inputs)] = result
    return result


def bytes_moved(case: Case) -> int:
    numel = math.prod(case.shape)
    if _is_attn(case):
        return (4 if case.mode == "fwd" else 8) * numel * case.torch_dtype.itemsize
    return (2 if case.mode == "fwd" else 5) * numel * case.torch_dtype.itemsize


def attention_flops(case: Case) -> float:
    B, H, S, D = case.shape
    fwd = 4.0 * B * H * S * S * D / (2 if _causal(case) else 1)
    return fwd if case.mode == "fwd" else 3.5 * fwd


@functools.cache
def _matmul_tflops(device: torch.device) -> float:
    """bf16 8192³ matmul rate on ``device`` (TFLOP/s), measured once."""
    if device.type != "cuda":
        return 1.0
    import triton.testing

    a = torch.randn(8192, 8192, device=device, dtype=torch.bfloat16)
    ms = triton.testing.do_bench(lambda: a @ a)
    return 2 * 8192**3 / (ms * 1e9)


def floor_ms(case: Case, env: Environment) -> float:
    if _is_attn(case):
        return attention_flops(case) / (_matmul_tflops(env.device) * 1e9)
    return bytes_moved(case) / (env.copy_gbps * 1e6)


def tolerance(case: Case) -> float:
    return TOLERANCE[case.dtype]


def _timed(case: Case, fn: Callable[..., Tensor], leaves: tuple[Tensor, ...], dy: Tensor | None) -> Callable[[], Outputs]:
    """Forward under no_grad, or forward + ``autograd.grad`` of ``leaves`` with ``dy``."""
    if case.mode == "fwd":

        def forward() -> Outputs:
            with torch.no_grad():
                return (fn(*leaves),)

        return forward
    leaves = tuple(t.detach().requires_grad_() for t in leaves)

    def forward_backward() -> Outputs:
        out = fn(*leaves)
        return (out, *torch.autograd.grad(out, leaves, dy))

    return forward_backward


def _row_impl(name: str, dist: str, load: Callable[[], Callable[[Tensor], Tensor]], baseline: bool = False) -> Impl:
    def prepare(case: Case, inputs: DiffmaxInputs) -> Prepared:
        if _is_attn(case):
            raise Skip("a row normaliser: runs on layout rows")
        fn = load()
        timed = _timed(case, fn, (inputs.x,), inputs.dy)
        if not baseline:
            return Prepared(timed)
        return Prepared(timed, _baseline_check(case, inputs, lambda: _softmax_rows(inputs.x, inputs.dy)))

    return Impl(name, dist, prepare)


def _attn_impl(name: str, dist: str, load: Callable[[Case], Callable[..., Tensor]], baseline: bool = False) -> Impl:
    def prepare(case: Case, inputs: DiffmaxInputs) -> Prepared:
        if not _is_attn(case):
            raise Skip("attention: runs on layouts attn*")
        fn = load(case)
        timed = _timed(case, fn, (inputs.q, inputs.k, inputs.v), inputs.dy)
        if not baseline:
            return Prepared(timed)
        return Prepared(timed, _baseline_check(case, inputs, lambda: _attention_reference(inputs, _causal(case), True)))

    return Impl(name, dist, prepare)


def _baseline_check(case: Case, inputs: DiffmaxInputs, own_reference: Callable[[], Outputs]) -> Callable[[Outputs], Outputs]:
    """``canonical`` of a dense baseline: its outputs must match its own float64 formula within
    the case's tolerance (else the float64 comparison fails loudly); it then returns the diffmax
    reference so that the runner times it."""

    def check(outputs: Outputs) -> Outputs:
        for out, ref in zip(outputs, own_reference(), strict=True):
            err = ((out.double() - ref).norm() / ref.norm()).item()
            if not err <= tolerance(case):
                return tuple(torch.full_like(r, math.nan) for r in reference(case, inputs))
        return reference(case, inputs)

    return check


def _flashmarkov_rows() -> Callable[[Tensor], Tensor]:
    from flashmarkov.diffmax import diffmax_bisect

    return lambda x: diffmax_bisect(x, ALPHA, dim=-1)


def _torch_softmax() -> Callable[[Tensor], Tensor]:
    return lambda x: torch.softmax(x, -1)


def _entmax_bisect() -> Callable[[Tensor], Tensor]:
    from entmax import entmax_bisect

    return lambda x: entmax_bisect(x, alpha=ENTMAX_ALPHA, dim=-1, n_iter=50)


def _adasplash_rows() -> Callable[[Tensor], Tensor]:
    from adasplash import triton_entmax

    return lambda x: triton_entmax(x, alpha=ENTMAX_ALPHA)


def _flashmarkov_attn(case: Case) -> Callable[..., Tensor]:
    from flashmarkov.diffmax import diffmax_attention

    causal = _causal(case)
    return lambda q, k, v: diffmax_attention(q, k, v, ALPHA, causal=causal)


def _adasplash_attn(case: Case) -> Callable[..., Tensor]:
    if case.shape[3] not in (16, 32, 64, 128, 256):
        raise Skip(f"head dim {case.shape[3]} not in 16..256 powers of two")
    from adasplash import adasplash

    causal = _causal(case)
    return lambda q, k, v: adasplash(q, k, v, alpha=ENTMAX_ALPHA, is_causal=causal)


def _sdpa_cudnn(case: Case) -> Callable[..., Tensor]:
    from torch.nn.attention import SDPBackend, sdpa_kernel

    causal = _causal(case)

    def run(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
            return torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=causal)

    return run


def impls(args: argparse.Namespace) -> tuple[Impl, ...]:
    return (
        _row_impl("flashmarkov", "flashmarkov", _flashmarkov_rows),
        _attn_impl("flashmarkov.attention", "flashmarkov", _flashmarkov_attn),
        _row_impl("torch.softmax.dense", "torch", _torch_softmax, baseline=True),
        _row_impl("entmax.entmax_bisect", "entmax", _entmax_bisect),
        _row_impl("adasplash.triton_entmax", "adasplash", _adasplash_rows),
        _attn_impl("adasplash", "adasplash", _adasplash_attn),
        _attn_impl("sdpa.cudnn.dense", "torch", _sdpa_cudnn, baseline=True),
    )


OP = Op(
    name="diffmax",
    x_label="S (row length / sequence length)",
    add_arguments=add_arguments,
    cases=cases,
    impls=impls,
    make_inputs=make_inputs,
    reference=reference,
    bytes_moved=bytes_moved,
    floor_ms=floor_ms,
    floor="floor: rows at the copy bandwidth, attention at the measured matmul rate",
    tolerance=tolerance,
)


PROFILE_SHAPES = (((1, 16, 4096, 64), False), ((1, 16, 4096, 64), True), ((1, 8, 16384, 64), True))


def profile_attention(
    configs: tuple[tuple, ...] = ((128, 64, 4, 3, 0, 4, 64), (128, 64, 4, 3, 0, 8, 128), (128, 64, 8, 3, 128, 4, 64)),
    shapes: tuple = PROFILE_SHAPES,
) -> None:
    """Where the fused attention's time goes, bf16 α = 0.5 (not a benchmark record): per shape
    and tile config (``AttnConfig`` fields: block_m, block_n, num_warps, num_stages, fwd_maxnreg,
    bwd_warps, bwd_block_m, dkdv_maxnreg, dkdv_stages; the first is the default, the second its backward
    on 8 warps over whole query tiles, the third the forward on 8 warps at 128 registers); configs that differ only in forward or only
    in backward fields recompile only those kernels): the forward; the forward at ``n_iter`` = 0,
    1, 2 (max pass + 1, 2, 3 Newton passes + output pass; rows still stop early once converged)
    and the differences (one Newton pass each); the backward, and its dq and dkdv kernels alone
    (each with the tile lists); the fraction of zero tiles; and from a clock64-instrumented
    forward (``profile=``) each phase's cycles per band tile per program (2 programs share an
    SM: per SM about half): max pass, τ start, first Newton pass with its compaction, the
    loop's passes (mean), output pass, epilogue. Needs CUDA; ``python -c "from
    flashmarkov.bench.diffmax import profile_attention; profile_attention()"`` (2–4 min, mostly
    compiling)."""
    import triton.testing

    from flashmarkov.diffmax.attention import PROFILE_SLOTS, AttnConfig, attention_bwd_launch, attention_fwd_launch

    def bench(fn: Callable[[], object]) -> float:
        return float(triton.testing.do_bench(fn, warmup=25, rep=200, return_mode="median"))

    generator = torch.Generator(device="cuda").manual_seed(0)
    for shape, causal in shapes:
        q, k, v, do = (torch.randn(shape, generator=generator, device="cuda").to(torch.bfloat16) for _ in range(4))
        scale = shape[-1] ** -0.5
        for blocks in configs:
            cfg = AttnConfig(*blocks)

            def fwd(n_iter: int = 50, cfg: AttnConfig = cfg, profile: Tensor | None = None) -> tuple[Tensor, ...]:
                return attention_fwd_launch(q, k, v, ALPHA, causal, scale, (-1, -1), n_iter, cfg, profile)

            def bwd(kernels: str = "dq,dkdv", cfg: AttnConfig = cfg) -> tuple[Tensor, ...]:
                return attention_bwd_launch(q, k, v, do, tau, rn, states, ALPHA, causal, scale, (-1, -1), cfg, kernels)

            o, tau, rn, states = fwd()
            t_fwd = bench(fwd)
            t_it = [bench(lambda n=n: fwd(n)) for n in (0, 1, 2)]
            t_bwd, t_dq, t_dkdv = bench(bwd), bench(lambda: bwd("dq")), bench(lambda: bwd("dkdv"))
            zero = float((states == 2).sum() / (states != 0).sum())
            name = f"{'x'.join(map(str, shape))} causal={causal!s:5} cfg={tuple(blocks)}"
            print(
                f"{name}: fwd {t_fwd:.3f} ms (n_iter 0/1/2: {t_it[0]:.3f}/{t_it[1]:.3f}/{t_it[2]:.3f}, passes "
                f"{t_it[1] - t_it[0]:.3f}, {t_it[2] - t_it[1]:.3f}), bwd {t_bwd:.3f} (dq {t_dq:.3f}, dkdv {t_dkdv:.3f}), "
                f"fwd+bwd {t_fwd + t_bwd:.3f} ms, zero tiles {zero:.1%}",
                flush=True,
            )
            prof = torch.zeros(states.shape[0] * states.shape[1] * states.shape[2], PROFILE_SLOTS, dtype=torch.int64, device="cuda")
            fwd(profile=prof)
            torch.cuda.synchronize()
            c = prof.double()
            tiles = c[:, 15].sum().item()
            loop = c[:, 12]
            last = torch.where(loop > 0, c.gather(1, (3 + loop.clamp(max=8)).long()[:, None])[:, 0], c[:, 3])
            phases = {
                "max": (c[:, 1] - c[:, 0]).sum().item(),
                "start": (c[:, 2] - c[:, 1]).sum().item(),
                "newton1": (c[:, 3] - c[:, 2]).sum().item(),
                "loop/pass": (last - c[:, 3]).sum().item() / max(loop.mean().item(), 1e-9),
                "output": (c[:, 13] - last).sum().item(),
                "epilogue": (c[:, 14] - c[:, 13]).sum().item(),
            }
            print(
                f"{name}: clk per band tile per program: "
                + ", ".join(f"{key} {val / tiles:.0f}" for key, val in phases.items())
                + f"; loop passes per program {loop.mean().item():.2f}; program total {(c[:, 14] - c[:, 0]).sum().item() / tiles:.0f}",
                flush=True,
            )
