"""Benchmark of the tiled Gaussian-kernel product M·V of diffusion maps (``flashmarkov.diffusion.tiles``).

One eigensolver step multiplies a block V of k columns by M = diag(r) K diag(r), K_ij =
exp(−beta ‖x_i − x_j‖²) over N points in d dimensions (../math.md §4). A case is N x d x k,
float32, forward only (other dtypes and modes are not cases of this op). Inputs: centred
standard-normal points, beta = 1 / (2d) (about 1 / median squared distance), r in [0.5, 1.5),
V standard normal.

Floor: N² exponentials at the exponential unit's rate, 16 per clock per SM at 1.9 GHz (about
4e12 /s on the 132 SMs of an H100/H200, math.md §4), so ``fraction_of_floor`` is the
throughput in pairs/s over the exp unit's limit, and G pairs/s = N² / (median_ms · 1e6).
The symmetric kernel computes each off-diagonal tile once (N²/2 exponentials): it can exceed 1.

Implementations (exact calls; each is skipped with its reason where it is missing):

- flashmarkov: ``gaussian_matmat(X, X, V, beta, row_scale=r, col_scale=r)``.
- flashmarkov.sym: ``gaussian_matmat_sym(X, V, beta, scale=r)``.
- torch.chunked: plain PyTorch, ``exp(−beta · cdist(X[rows], X)²) @ (r V)`` over row chunks of
  at most 2^26 kernel entries, times r[rows].
- pykeops: ``(−beta · ((x_i − x_j)²).sum(−1)).exp() @ (r V)`` with ``pykeops.torch.LazyTensor``;
  run first in a child process (it exited silently while compiling on the CUDA 13 machine of
  ../baselines).

The check compares the first ``REF_ROWS`` rows of the output with a float64 reference.
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable
from dataclasses import dataclass

import torch

from .registry import Case, Impl, Op, Outputs, Prepared, Skip
from .timing import Environment

Tensor = torch.Tensor
ProductFn = Callable[[Tensor, Tensor, Tensor, float], Tensor]

DEFAULT_SHAPES = tuple((n, d, 16) for d in (3, 16) for n in (16384, 65536, 262144))
QUICK_SHAPES = ((4096, 3, 16),)
SWEEP_SHAPES = tuple((2**p, 3, 16) for p in range(12, 19))
EXP_PER_SM_PER_S = 16 * 1.9e9
DEFAULT_SMS = 132
REF_ROWS = 4096
TORCH_CHUNK = 1 << 26
TOLERANCE = 2e-5  # the tests' float32 tolerance; the error was ~N·2^-25 before per-tile MMA accumulators


@dataclass(frozen=True)
class ProductInputs:
    """Points X (N, d), values V (N, k), scales r (N,) and the kernel's beta."""

    X: Tensor
    V: Tensor
    r: Tensor
    beta: float


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """No options of its own: ``--shapes`` takes NxDxK (points x features x columns)."""


def cases(args: argparse.Namespace) -> list[Case]:
    """float32 forward cases: N x d x k shapes, then the N sweep at d = 3, k = 16 with ``--sweep``."""
    if "float32" not in args.dtypes or "fwd" not in args.modes:
        return []
    shapes = QUICK_SHAPES if args.quick else (args.shapes or DEFAULT_SHAPES)
    if any(len(shape) != 3 for shape in shapes):
        raise SystemExit(f"diffusion shapes are NxDxK; got {shapes}")
    sweep = SWEEP_SHAPES if args.sweep and not args.quick else ()
    selected: dict[tuple[int, ...], Case] = {}
    for shape in (*shapes, *sweep):
        if shape not in selected or shape in sweep:
            selected[shape] = Case("diffusion", "MV", "fwd", "float32", shape, shape[0], shape in sweep)
    return list(selected.values())


def make_inputs(case: Case, device: torch.device, seed: int) -> ProductInputs:
    n, d, k = case.shape
    generator = torch.Generator(device=device).manual_seed(seed)
    X = torch.randn(n, d, generator=generator, device=device)
    X -= X.mean(0)
    V = torch.randn(n, k, generator=generator, device=device)
    r = 0.5 + torch.rand(n, generator=generator, device=device)
    return ProductInputs(X, V, r, 1.0 / (2 * d))


def reference(case: Case, inputs: ProductInputs) -> Outputs:
    """The first ``REF_ROWS`` rows of M·V in float64."""
    from flashmarkov.diffusion.reference import gaussian_matmat_ref

    X, V, r = (t.double() for t in (inputs.X, inputs.V, inputs.r))
    rows = min(REF_ROWS, X.shape[0])
    return (gaussian_matmat_ref(X[:rows], X, V, inputs.beta, row_scale=r[:rows], col_scale=r),)


def bytes_moved(case: Case) -> int:
    n, d, k = case.shape
    return 4 * n * (d + 2 * k + 1)


def floor_ms(case: Case, env: Environment) -> float:
    n = case.shape[0]
    sms = torch.cuda.get_device_properties(env.device).multi_processor_count if env.device.type == "cuda" else DEFAULT_SMS
    return n * n / (sms * EXP_PER_SM_PER_S) * 1e3


def tolerance(case: Case) -> float:
    return TOLERANCE


def _flashmarkov(X: Tensor, V: Tensor, r: Tensor, beta: float) -> Tensor:
    from flashmarkov.diffusion.tiles import gaussian_matmat

    return gaussian_matmat(X, X, V, beta, row_scale=r, col_scale=r)


def _flashmarkov_sym(X: Tensor, V: Tensor, r: Tensor, beta: float) -> Tensor:
    from flashmarkov.diffusion.tiles import gaussian_matmat_sym

    return gaussian_matmat_sym(X, V, beta, scale=r)


def _torch_chunked(X: Tensor, V: Tensor, r: Tensor, beta: float) -> Tensor:
    n = X.shape[0]
    W = r[:, None] * V
    step = max(1, TORCH_CHUNK // n)
    out = torch.empty_like(V)
    for start in range(0, n, step):
        rows = slice(start, min(start + step, n))
        out[rows] = torch.exp(torch.cdist(X[rows], X).square_().mul_(-beta)) @ W
    return out * r[:, None]


def _pykeops(X: Tensor, V: Tensor, r: Tensor, beta: float) -> Tensor:
    from pykeops.torch import LazyTensor

    x_i, x_j = LazyTensor(X[:, None, :]), LazyTensor(X[None, :, :])
    K = (-beta * ((x_i - x_j) ** 2).sum(-1)).exp()
    return r[:, None] * (K @ (r[:, None] * V).contiguous())


def _impl(
    name: str, dist: str, product: ProductFn, *, requires: str | None = None, cuda_only: bool = False, isolate: bool = False
) -> Impl:
    """An implementation from ``product(X, V, r, beta) -> M·V``; ``requires`` is imported first
    (an ImportError skips it)."""

    def prepare(case: Case, inputs: ProductInputs) -> Prepared:
        if cuda_only and inputs.X.device.type != "cuda":
            raise Skip("runs on CUDA only")
        if requires is not None:
            importlib.import_module(requires)
        rows = min(REF_ROWS, inputs.X.shape[0])

        def run() -> Outputs:
            with torch.no_grad():
                return (product(inputs.X, inputs.V, inputs.r, inputs.beta),)

        return Prepared(run, lambda out: (out[0][:rows],))

    return Impl(name, dist, prepare, isolate)


def impls(args: argparse.Namespace) -> tuple[Impl, ...]:
    return (
        _impl("flashmarkov", "flashmarkov", _flashmarkov),
        _impl("flashmarkov.sym", "flashmarkov", _flashmarkov_sym),
        _impl("torch.chunked", "torch", _torch_chunked),
        _impl("pykeops", "pykeops", _pykeops, requires="pykeops.torch", cuda_only=True, isolate=True),
    )


OP = Op(
    name="diffusion",
    x_label="N (points)",
    add_arguments=add_arguments,
    cases=cases,
    impls=impls,
    make_inputs=make_inputs,
    reference=reference,
    bytes_moved=bytes_moved,
    floor_ms=floor_ms,
    tolerance=tolerance,
    floor="exp-unit floor: N² exponentials at 16 per clock per SM",
)


TUNE_CONFIGS: dict[str, tuple[tuple[int, int, int, int], ...]] = {
    # (block_m, block_n, num_warps, num_stages); "sym" needs block_m a multiple of block_n
    "matmat": ((128, 64, 8, 2), (64, 64, 4, 2), (64, 64, 4, 3), (128, 64, 4, 2), (128, 64, 4, 3), (128, 64, 8, 3),
               (64, 128, 4, 2), (64, 128, 4, 3), (128, 128, 8, 2)),
    "sym": ((64, 64, 4, 2), (64, 64, 4, 3), (128, 64, 4, 3), (128, 128, 8, 3)),
}


def tune(sizes: tuple[int, ...] = (16384, 65536), d: int = 3, k: int = 16, device: str = "cuda", sym: bool = True) -> None:
    """Time every ``TUNE_CONFIGS`` entry of the float32 plain (with and without ``tiles.FOLD``)
    and (``sym``) symmetric products (CUDA only; ~1 minute): ``python -m flashmarkov.bench.diffusion
    [--d D] [--no-sym] [N ...]``. Prints ms and G pairs/s (N² / time) per config;
    ``tiles.pick_config`` is swapped for the job under test and restored."""
    import triton.testing

    from flashmarkov.diffusion import tiles

    original, fold = tiles.pick_config, tiles.FOLD
    runs = [("matmat", True), ("matmat", False)] + [("sym", False)] * sym
    try:
        for n in sizes:
            case = Case("diffusion", "MV", "fwd", "float32", (n, d, k), n, False)
            x = make_inputs(case, torch.device(device), 0)
            for job, use_fold in runs:
                tiles.FOLD = use_fold
                for bm, bn, warps, stages in TUNE_CONFIGS[job]:
                    cfg = tiles.TileConfig(bm, bn, warps, stages)
                    tiles.pick_config = lambda j, *a, c=cfg, job=job: c if j == job else original(j, *a)  # noqa: E731
                    fn = _flashmarkov if job == "matmat" else _flashmarkov_sym
                    name = f"{job}{' fold' if use_fold else ''}"
                    try:
                        ms = triton.testing.do_bench(lambda: fn(x.X, x.V, x.r, x.beta), warmup=10, rep=50)
                    except Exception as exc:  # a config that does not fit (shared memory, registers)
                        print(f"N={n:>7d} {name:>11s} {bm}x{bn} w{warps} s{stages}: failed ({type(exc).__name__})")
                        continue
                    print(f"N={n:>7d} {name:>11s} {bm}x{bn} w{warps} s{stages}: {ms:8.3f} ms {n * n / ms / 1e6:7.0f} G pairs/s",
                          flush=True)
    finally:
        tiles.pick_config, tiles.FOLD = original, fold


if __name__ == "__main__":
    _parser = argparse.ArgumentParser(prog="python -m flashmarkov.bench.diffusion", description="tile sweep (tune)")
    _parser.add_argument("sizes", nargs="*", type=int, default=[16384, 65536])
    _parser.add_argument("--d", type=int, default=3, help="features")
    _parser.add_argument("--no-sym", action="store_true", help="skip the symmetric product")
    _args = _parser.parse_args()
    tune(tuple(_args.sizes), d=_args.d, sym=not _args.no_sym)
