"""End-to-end diffusion maps on the GPU (issue 5, acceptance 4): wall time and peak GPU memory of
``DiffusionMap(n_components=10, tol=1e-5).fit`` at N = 200 000 and 1 000 000.

Each case fits once at N = 20 000 first (Triton compilation, CUDA context), then times one full
fit (bandwidth, normalisation, eigensolver, coordinates) with ``time.perf_counter`` around a
synchronised call, and records the peak of ``torch.cuda.max_memory_allocated`` above the input.
Records follow the harness's keys (design.md) with ``metric`` "wall_s" and these additions:
``status``, ``peak_gpu_bytes``, ``iterations``, ``products``, ``max_residual``,
``eigenvalues``, ``bandwidth``, ``beta``.

    python benchmarks/diffusion_e2e.py                  # both sizes x {median, knn}, swiss roll
    python benchmarks/diffusion_e2e.py --n 200000 --bandwidth knn 20.0 --dataset sphere
    python benchmarks/diffusion_e2e.py --out benchmarks/results/diffusion_e2e.json
    python benchmarks/diffusion_e2e.py --n 200000 --bandwidth median --product sym plain   # M·V kernels

Targets (issue 5): N = 200 000 in ≤ 5 s; N = 1 000 000 in ≤ 60 s with peak memory ≤ 2 GB.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from flashmarkov.bench.timing import _commit, _triton_version
from flashmarkov.diffusion import DiffusionMap, eigensolver, operator, tiles
from flashmarkov.diffusion.cli import swiss_roll


DEFAULT_BLOCK = eigensolver.default_block


def data(name: str, n: int, device: torch.device) -> torch.Tensor:
    if name == "swiss-roll":
        X, _ = swiss_roll(n)
    elif name == "sphere":
        X = np.random.default_rng(0).standard_normal((n, 3))
        X /= np.linalg.norm(X, axis=1, keepdims=True)
    elif name == "blobs16":  # d = 16: ten Gaussian clusters
        rng = np.random.default_rng(0)
        centres = rng.standard_normal((10, 16)) * 4
        X = centres[rng.integers(0, 10, n)] + rng.standard_normal((n, 16))
    else:
        raise SystemExit(f"unknown dataset {name!r}")
    return torch.tensor(X, dtype=torch.float32, device=device)


def bandwidth_arg(text: str) -> float | str:
    try:
        return float(text)
    except ValueError:
        return text


def run(n: int, k: int, tol: float, dataset: str, bandwidth: float | str, verbose: bool, product: str = "plain",
        fold: bool = True, block: int = 0) -> dict:
    operator.SYMMETRIC_PRODUCT = product == "sym"
    tiles.FOLD = fold
    eigensolver.default_block = (lambda k, n, b=block: b) if block else DEFAULT_BLOCK
    device = torch.device("cuda")
    X = data(dataset, n, device)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    dm = DiffusionMap(n_components=k, bandwidth=bandwidth, tol=tol, device=device, eigensolver="lobpcg", verbose=verbose)
    start = time.perf_counter()
    dm.fit(X)
    torch.cuda.synchronize()
    wall = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated() - base
    residual = float(dm.residuals_.max())
    return {
        "op": "diffusion",
        "case": f"e2e {dataset} N={n} k={k} tol={tol:g} bandwidth={bandwidth} product={product} fold={'on' if fold else 'off'} block={block or DEFAULT_BLOCK(k, n)}",
        "shape": [n, int(X.shape[1]), k],
        "dtype": "float32",
        "impl": "flashmarkov",
        "median_ms": wall * 1e3,
        "metric": "wall_s",
        "value": wall,
        "gpu": torch.cuda.get_device_name(device),
        "torch": torch.__version__,
        "triton": _triton_version(),
        "commit": _commit(),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "timer": "time.perf_counter, one synchronised fit after a warm-up fit",
        "status": "ok" if residual <= tol else "not converged",
        "peak_gpu_bytes": int(peak),
        "iterations": int(dm.n_iter_),
        "products": int(dm.n_products_),
        "max_residual": residual,
        "eigenvalues": [float(v) for v in dm.eigenvalues_.cpu()],
        "bandwidth": str(bandwidth),
        "beta": float(dm.beta_),
        "product": product,
        "fold": fold,
        "block": block or DEFAULT_BLOCK(k, n),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, nargs="+", default=[200_000, 1_000_000])
    ap.add_argument("--k", type=int, default=10, help="eigenpairs (n_components)")
    ap.add_argument("--tol", type=float, default=1e-5)
    ap.add_argument("--dataset", default="swiss-roll", choices=("swiss-roll", "sphere", "blobs16"))
    ap.add_argument("--bandwidth", type=bandwidth_arg, nargs="+", default=["median", "knn"],
                    help="one or more of median, knn, bgh, self-tuning or a float beta (knn: a local kernel, "
                         "eigenvalue gaps ~1/N, many more iterations than median)")
    ap.add_argument("--product", nargs="+", default=["sym" if operator.SYMMETRIC_PRODUCT else "plain"], choices=("sym", "plain"),
                    help="the M·V kernel of the eigensolver: symmetric (each tile once, atomics) or plain")
    ap.add_argument("--fold", choices=("on", "off"), default="on", help="tiles.FOLD (squared norms inside the dot)")
    ap.add_argument("--block", type=int, default=0, help="eigensolver block width (0: default_block)")
    ap.add_argument("--out", default="benchmarks/results/diffusion_e2e.json", help="append records to this JSON list")
    ap.add_argument("--verbose", action="store_true")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("diffusion_e2e needs a CUDA GPU")
    run(20_000, args.k, args.tol, args.dataset, args.bandwidth[0], False)  # compile + warm up
    records = []
    for n, bandwidth, product in [(n, b, p) for n in args.n for b in args.bandwidth for p in args.product]:
        rec = run(n, args.k, args.tol, args.dataset, bandwidth, args.verbose, product, args.fold == "on", args.block)
        records.append(rec)
        print(f"N={n:>9,d} {str(bandwidth):>8s} {product:>5s} fold {args.fold:>3s} b {rec['block']:3d} {rec['value']:8.2f} s  peak {rec['peak_gpu_bytes'] / 2**30:6.2f} GiB  "
              f"it {rec['iterations']:4d}  products {rec['products']:4d}  residual {rec['max_residual']:.1e}  "
              f"beta {rec['beta']:.3g}  lambda_1..3 {', '.join(f'{v:.5f}' for v in rec['eigenvalues'][1:4])}", flush=True)
    out = Path(args.out)
    old = json.loads(out.read_text()) if out.exists() else []
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(old + records, indent=1))
    print(f"{len(records)} record(s) -> {out}")
    if any(math.isnan(r["value"]) for r in records):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
