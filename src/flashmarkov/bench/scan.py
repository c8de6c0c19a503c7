"""Benchmark of the linear recurrence y[t] = g[t] * y[t-1] + x[t] (``flashmarkov.scan.linear_scan``).

Layouts: "bdt" is (B, D, T) scanned along the last, contiguous axis; "btd" is (B, T, D) scanned
along axis 1. Inputs: gates uniform in [0.9, 1) (positive, so the log-space peers apply), tokens
standard normal. Floor (../math.md §1): forward moves 3 streams (read g, x; write y), forward +
backward 8 (backward reads g, y, dy and writes dg, dx), each numel × itemsize bytes, at the
measured copy bandwidth.

Peers (exact calls; each is skipped with its reason where it is missing or does not apply):

- accelerated-scan 0.3.1: ``accelerated_scan.scalar.scan(gates, tokens)`` (its Triton kernel;
  that version has no ``accelerated_scan.triton`` module) and ``accelerated_scan.warp.scan(gates,
  tokens)`` (CUDA, compiled with ``load_inline`` at import); (B, D, T) contiguous, the warp kernel
  only for T a power of two in 32..65536. The warp kernel crashed in bf16 at 8×1536×4096, so it
  runs first in a child process (``Impl.isolate``).
- fpscan 0.1.2: ``fpscan.scan_forward(gates, tokens, reverse=False, out=None)`` for the forward,
  ``fpscan.pscan(gates, tokens)`` for forward + backward; (B, D, T) contiguous, T a power of two
  in 32..65536.
- fla-core 0.6.0: ``fla.ops.hgrn.chunk_hgrn(x, g, initial_state=None, output_final_state=False)``
  and ``fused_recurrent_hgrn(x, g, initial_state=None, output_final_state=False,
  cu_seqlens=None)``, both returning ``(o, final_state)`` on (B, T, D) with log-space gates
  g = log(gates). The log is taken outside the timed call (those kernels' native input), and the
  gradient with respect to log-gates is mapped back to gates (d/dg = d/dlog g / g) for the check.
- torch: ``torch._higher_order_ops.associative_scan`` with the linear-recurrence combine, compiled
  (pointwise combine: CUDA only) once per case within a compile-time budget; and Heinsen's
  log-space scan, below. Both compute in float32 for half inputs.
- Peers that take only (B, D, T) also run on "btd" as ``<peer>+transpose``: transpose to
  contiguous (B, D, T), scan, transpose back to contiguous (B, T, D), all timed.
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from .options import csv
from .registry import Case, Impl, Op, Outputs, Prepared, Skip
from .timing import Environment

Tensor = torch.Tensor
ScanFn = Callable[[Tensor, Tensor], Tensor]

TIME_DIM = {"bdt": -1, "btd": 1}
DEFAULT_SHAPES = ((2, 256, 65536), (8, 1536, 4096), (16, 2048, 2048), (1, 64, 2**20))
QUICK_SHAPES = ((2, 256, 4096),)
SWEEP_SHAPES = tuple((2, 256, 2**k) for k in range(10, 21))
STREAMS = {"fwd": 3, "fwdbwd": 8}
TOLERANCE = {"float32": 1e-4, "float16": 2e-3, "bfloat16": 1.6e-2}
POW2_T = (32, 65536)
REFERENCE_CHUNK = 1 << 26


@dataclass(frozen=True)
class ScanInputs:
    """One input set in the case's layout and dtype; ``dy`` only for forward + backward."""

    gates: Tensor
    tokens: Tensor
    dy: Tensor | None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--layouts",
        type=csv(tuple(TIME_DIM)),
        default=",".join(TIME_DIM),
        help="bdt = (B, D, T), btd = (B, T, D); shapes are always given as BxDxT (default: %(default)s)",
    )
    parser.add_argument(
        "--compile-budget",
        type=float,
        default=120.0,
        help="seconds of torch.compile for associative_scan per run; later cases skip it (default: %(default)s)",
    )


def _laid_out(shape: tuple[int, ...], layout: str) -> tuple[int, int, int]:
    batch, channels, length = shape
    return (batch, channels, length) if layout == "bdt" else (batch, length, channels)


def cases(args: argparse.Namespace) -> list[Case]:
    """Layouts × modes × dtypes × shapes (BxDxT), then the T sweep at B=2, D=256 with ``--sweep``."""
    shapes = QUICK_SHAPES if args.quick else (args.shapes or DEFAULT_SHAPES)
    if any(len(shape) != 3 for shape in shapes):
        raise SystemExit(f"scan shapes are BxDxT; got {shapes}")
    sweep = SWEEP_SHAPES if args.sweep and not args.quick else ()
    selected: dict[tuple[str, str, str, tuple[int, ...]], Case] = {}
    for layout in args.layouts:
        for mode in args.modes:
            for dtype in args.dtypes:
                for shape in (*shapes, *sweep):
                    key = (layout, mode, dtype, shape)
                    in_sweep = shape in sweep
                    if key not in selected or in_sweep:
                        selected[key] = Case("scan", layout, mode, dtype, _laid_out(shape, layout), shape[2], in_sweep)
    return list(selected.values())


def make_inputs(case: Case, device: torch.device, seed: int) -> ScanInputs:
    generator = torch.Generator(device=device).manual_seed(seed)

    def draw(sample: Callable[..., Tensor], scale: float = 1.0, shift: float = 0.0) -> Tensor:
        drawn = sample(case.shape, generator=generator, device=device)
        return (shift + scale * drawn).to(case.torch_dtype)

    return ScanInputs(
        gates=draw(torch.rand, 0.1, 0.9),
        tokens=draw(torch.randn),
        dy=draw(torch.randn) if case.mode == "fwdbwd" else None,
    )


def _reference_rows(case: Case, gates: Tensor, tokens: Tensor, dy: Tensor | None) -> Outputs:
    from flashmarkov.scan.reference import linear_scan_ref

    gates, tokens = (t.detach().double().requires_grad_(dy is not None) for t in (gates, tokens))
    with torch.enable_grad():
        y = linear_scan_ref(gates, tokens, dim=TIME_DIM[case.layout])
    if dy is None:
        return (y.detach(),)
    dg, dx = torch.autograd.grad(y, (gates, tokens), dy.double())
    return y.detach(), dg, dx


def reference(case: Case, inputs: ScanInputs) -> Outputs:
    """y, then dg and dx for forward + backward: autograd through ``linear_scan_ref`` in float64
    on the device, a slice of channels at a time (at most ``REFERENCE_CHUNK`` elements) to bound
    the memory of its intermediates on the longest cases."""
    channel_dim = 1 if case.layout == "bdt" else 2
    channels = case.shape[channel_dim]
    step = max(1, REFERENCE_CHUNK * channels // math.prod(case.shape))
    chunks = []
    for start in range(0, channels, step):
        width = min(step, channels - start)
        gates, tokens = (t.narrow(channel_dim, start, width) for t in (inputs.gates, inputs.tokens))
        dy = None if inputs.dy is None else inputs.dy.narrow(channel_dim, start, width)
        chunks.append(_reference_rows(case, gates, tokens, dy))
    return tuple(torch.cat(parts, dim=channel_dim) for parts in zip(*chunks, strict=True))


def bytes_moved(case: Case) -> int:
    return STREAMS[case.mode] * math.prod(case.shape) * case.torch_dtype.itemsize


def floor_ms(case: Case, env: Environment) -> float:
    return bytes_moved(case) / (env.copy_gbps * 1e6)


def tolerance(case: Case) -> float:
    return TOLERANCE[case.dtype]


def _prepared(case: Case, inputs: ScanInputs, scan: ScanFn, log_gates: bool = False) -> Prepared:
    """Time ``scan`` on one input set: forward under no_grad, or forward + ``autograd.grad`` of
    gates and tokens with the set's dy. ``log_gates`` hands the scan log(gates) (computed here,
    untimed) and maps its gate gradient back to gates for the check."""
    gates = inputs.gates.log() if log_gates else inputs.gates
    if case.mode == "fwd":

        def forward() -> Outputs:
            with torch.no_grad():
                return (scan(gates, inputs.tokens),)

        return Prepared(forward)
    leaves = (gates.detach().requires_grad_(), inputs.tokens.detach().requires_grad_())

    def forward_backward() -> Outputs:
        y = scan(*leaves)
        return (y, *torch.autograd.grad(y, leaves, inputs.dy))

    if not log_gates:
        return Prepared(forward_backward)
    return Prepared(forward_backward, lambda out: (out[0], out[1].double() / inputs.gates.double(), out[2]))


def _transposed(scan: ScanFn) -> ScanFn:
    """A (B, D, T) scan applied to (B, T, D) tensors, the usual way: contiguous transposes around it."""

    def run(gates: Tensor, tokens: Tensor) -> Tensor:
        y = scan(gates.transpose(1, 2).contiguous(), tokens.transpose(1, 2).contiguous())
        return y.transpose(1, 2).contiguous()

    return run


def _require_pow2_length(case: Case) -> None:
    low, high = POW2_T
    if not (low <= case.x <= high and case.x & (case.x - 1) == 0):
        raise Skip(f"needs T a power of two in {low}..{high}, got T={case.x}")


def _scan_impl(
    name: str,
    dist: str,
    load: Callable[[Case], ScanFn],
    layouts: tuple[str, ...],
    *,
    transpose: bool = False,
    log_gates: bool = False,
    isolate: bool = False,
) -> Impl:
    """An implementation from ``load(case) -> scan(gates, tokens)`` in its native layout."""

    def prepare(case: Case, inputs: ScanInputs) -> Prepared:
        if case.layout not in layouts:
            raise Skip(f"runs on layout {'/'.join(layouts)} only")
        try:
            scan = load(case)
        except Skip:
            raise
        except Exception as error:  # a peer that fails to import or to build is not available
            raise Skip(f"not available: {type(error).__name__}: {error}") from error
        return _prepared(case, inputs, _transposed(scan) if transpose else scan, log_gates)

    return Impl(name, dist, prepare, isolate)


def _bdt_peer(name: str, dist: str, load: Callable[[Case], ScanFn], isolate: bool = False) -> tuple[Impl, Impl]:
    """A (B, D, T)-only peer: native on "bdt", and as ``<name>+transpose`` on "btd"."""
    return (
        _scan_impl(name, dist, load, ("bdt",), isolate=isolate),
        _scan_impl(f"{name}+transpose", dist, load, ("btd",), transpose=True, isolate=isolate),
    )


def _flashmarkov(case: Case) -> ScanFn:
    from flashmarkov.scan import linear_scan

    dim = TIME_DIM[case.layout]
    return lambda gates, tokens: linear_scan(gates, tokens, dim=dim)


def _accelerated_triton(case: Case) -> ScanFn:
    from accelerated_scan.scalar import scan

    return scan


def _accelerated_warp(case: Case) -> ScanFn:
    _require_pow2_length(case)
    from accelerated_scan.warp import scan

    return scan


def _fpscan(case: Case) -> ScanFn:
    _require_pow2_length(case)
    from fpscan import pscan, scan_forward

    return scan_forward if case.mode == "fwd" else pscan


def _chunk_hgrn(case: Case) -> ScanFn:
    from fla.ops.hgrn import chunk_hgrn

    return lambda log_gates, tokens: chunk_hgrn(tokens, log_gates)[0]


def _fused_recurrent_hgrn(case: Case) -> ScanFn:
    from fla.ops.hgrn import fused_recurrent_hgrn

    return lambda log_gates, tokens: fused_recurrent_hgrn(tokens, log_gates)[0]


def _logspace_scan(gates: Tensor, tokens: Tensor, dim: int) -> Tensor:
    """Heinsen's log-space scan, in float32 (float64 for float64 inputs).

    y[t] = e^{A[t]} Σ_{s≤t} x[s] e^{-A[s]} with A = cumsum(log g). Written literally, e^{-A}
    overflows once -A > 88 (T ≳ 1700 steps for gates in [0.9, 1)); here each sign of x is summed
    in log space, y = e^{A + lcse(log x⁺ - A)} - e^{A + lcse(log x⁻ - A)}, lcse = logcumsumexp,
    which never overflows. Its rounding still grows with |A| ~ 0.05 T: against float64 the output
    error is ~1e-4 at T = 65536 in float32 (the gate gradient's ~1e-2), so the correctness guard
    marks it wrong on long sequences instead of timing a wrong answer.
    """
    compute = torch.float64 if tokens.dtype == torch.float64 else torch.float32
    g, x = gates.to(compute), tokens.to(compute)
    a = torch.cumsum(torch.log(g), dim)
    log_x = torch.log(x.abs()) - a
    positive = torch.logcumsumexp(torch.where(x > 0, log_x, -math.inf), dim)
    negative = torch.logcumsumexp(torch.where(x < 0, log_x, -math.inf), dim)
    return (torch.exp(a + positive) - torch.exp(a + negative)).to(tokens.dtype)


def _logspace(case: Case) -> ScanFn:
    dim = TIME_DIM[case.layout]
    return lambda gates, tokens: _logspace_scan(gates, tokens, dim)


def _combine(left: tuple[Tensor, Tensor], right: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
    """(g, y) pairs: applying left then right is y -> g_r (g_l y + y_l) + y_r."""
    (g_left, y_left), (g_right, y_right) = left, right
    return g_left * g_right, g_right * y_left + y_right


class _CompiledAssociativeScan:
    """``torch.compile`` of ``associative_scan``, compiled once per case (dynamo's caches are reset
    between cases, so its recompile limit never falls back to eager), within ``budget_s`` seconds of
    compile time per run: the first call, timed here, compiles."""

    def __init__(self, budget_s: float) -> None:
        self.budget_s = budget_s
        self.spent_s = 0.0
        self.case: Case | None = None
        self.scan: ScanFn | None = None

    def prepare(self, case: Case, inputs: ScanInputs) -> Prepared:
        if inputs.tokens.device.type != "cuda":
            raise Skip("the pointwise associative_scan combine compiles for CUDA only")
        if case == self.case and self.scan is not None:
            return _prepared(case, inputs, self.scan)
        if self.spent_s >= self.budget_s:
            raise Skip(f"compile budget of {self.budget_s:.0f} s spent ({self.spent_s:.0f} s)")
        from torch._higher_order_ops.associative_scan import associative_scan

        dim = TIME_DIM[case.layout]

        def scan(gates: Tensor, tokens: Tensor) -> Tensor:
            pair = (gates.float(), tokens.float())
            return associative_scan(_combine, pair, dim, combine_mode="pointwise")[1].to(tokens.dtype)

        torch._dynamo.reset()
        self.case, self.scan = None, torch.compile(scan, fullgraph=True, dynamic=False)
        prepared = _prepared(case, inputs, self.scan)
        start = time.perf_counter()
        try:
            prepared.fn()
            torch.cuda.synchronize(inputs.tokens.device)
        except Exception as error:
            raise Skip(f"compile failed: {type(error).__name__}: {error}") from error
        finally:
            self.spent_s += time.perf_counter() - start
        self.case = case
        return prepared


def impls(args: argparse.Namespace) -> tuple[Impl, ...]:
    compiled = _CompiledAssociativeScan(args.compile_budget)
    return (
        _scan_impl("flashmarkov", "flashmarkov", _flashmarkov, ("bdt", "btd")),
        *_bdt_peer("accelerated-scan.triton", "accelerated-scan", _accelerated_triton),
        *_bdt_peer("fpscan", "fpscan", _fpscan),
        _scan_impl("fla.chunk_hgrn", "fla-core", _chunk_hgrn, ("btd",), log_gates=True),
        _scan_impl("fla.fused_recurrent_hgrn", "fla-core", _fused_recurrent_hgrn, ("btd",), log_gates=True),
        Impl("torch.associative_scan", "torch", compiled.prepare),
        _scan_impl("torch.logspace", "torch", _logspace, ("bdt", "btd")),
        *_bdt_peer("accelerated-scan.warp", "accelerated-scan", _accelerated_warp, isolate=True),
    )


OP = Op(
    name="scan",
    x_label="T (sequence length)",
    add_arguments=add_arguments,
    cases=cases,
    impls=impls,
    make_inputs=make_inputs,
    reference=reference,
    bytes_moved=bytes_moved,
    floor_ms=floor_ms,
    tolerance=tolerance,
)
