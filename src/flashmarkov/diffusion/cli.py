"""``flashmarkov embed``: diffusion coordinates of a data file or a built-in data set, and the
diffusion part of ``flashmarkov demo``.

    flashmarkov embed DATA [--out coords.npy] [--plot embedding.png] [--n-components 2]
                           [--alpha 1] [--bandwidth median|knn|bgh|self-tuning|BETA] [--t 1]
                           [--tol 1e-6] [--eigensolver auto|dense|lobpcg] [--n 2000]
                           [--device auto|cpu|cuda] [--verbose]

DATA is a .npy file (2-D array), a .csv file (numbers only, comma separated, one point per row;
a non-numeric first row is taken as a header), or a built-in data set: swiss-roll, circle,
sphere, torus, digits (scikit-learn's, when installed).
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from . import DiffusionMap

BUILTIN = ("swiss-roll", "circle", "sphere", "torus", "digits")


def swiss_roll(n: int, *, noise: float = 0.05, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """n points on the swiss roll (t cos t, h, t sin t), t ∈ [1.5π, 4.5π], h ∈ [0, 21], with
    Gaussian noise; returns (points (n, 3), t)."""
    rng = np.random.default_rng(seed)
    t = 1.5 * math.pi * (1 + 2 * rng.random(n))
    h = 21 * rng.random(n)
    X = np.stack([t * np.cos(t), h, t * np.sin(t)], 1) + noise * rng.standard_normal((n, 3))
    return X, t


def dataset(name: str, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, str]:
    """A built-in data set: (points, a colour per point, what the colour means)."""
    rng = np.random.default_rng(seed)
    if name == "swiss-roll":
        X, t = swiss_roll(n, seed=seed)
        return X, t, "roll parameter t"
    if name == "circle":
        a = 2 * math.pi * rng.random(n)
        return np.stack([np.cos(a), np.sin(a)], 1), a, "angle"
    if name == "sphere":
        X = rng.standard_normal((n, 3))
        X /= np.linalg.norm(X, axis=1, keepdims=True)
        return X, X[:, 2], "z"
    if name == "torus":
        a, b = 2 * math.pi * rng.random(n), 2 * math.pi * rng.random(n)
        return np.stack([np.cos(a), np.sin(a), np.cos(b), np.sin(b)], 1), a, "first angle"
    if name == "digits":
        try:
            from sklearn.datasets import load_digits
        except ImportError as exc:
            raise SystemExit("the digits data set needs scikit-learn: pip install scikit-learn") from exc
        digits = load_digits()
        return digits.data.astype(np.float64), digits.target.astype(np.float64), "digit"
    raise SystemExit(f"unknown data set {name!r}: give a .npy/.csv file or one of {', '.join(BUILTIN)}")


def load(path: str) -> np.ndarray:
    """A 2-D float array from a .npy or .csv file."""
    p = Path(path)
    if not p.exists():
        raise SystemExit(f"{path}: no such file (or give a built-in data set: {', '.join(BUILTIN)})")
    if p.suffix not in (".npy", ".csv"):
        raise SystemExit(f"{path}: expected a .npy or .csv file")
    try:
        if p.suffix == ".npy":
            X = np.load(p, allow_pickle=False)
        else:
            with p.open() as f:
                first = f.readline()
            try:
                [float(v) for v in first.strip().split(",")]
                skip = 0
            except ValueError:  # a header line
                skip = 1
            X = np.loadtxt(p, delimiter=",", skiprows=skip, ndmin=2)
    except (OSError, ValueError) as exc:  # unreadable, ragged or non-numeric: say so, without a traceback
        raise SystemExit(f"{path}: cannot read it as numbers: {exc}") from exc
    if X.ndim == 1:
        X = X[:, None]
    if X.ndim != 2:
        raise SystemExit(f"{path}: expected a 2-D array (points, features), got shape {X.shape}")
    return np.asarray(X, dtype=np.float64)


def _bandwidth(text: str) -> float | str:
    try:
        return float(text)
    except ValueError:
        return text


def plot(path: str, coords: np.ndarray, colour: np.ndarray | None, label: str, eigenvalues: np.ndarray, title: str) -> None:
    """Scatter of the first two diffusion coordinates (or the first against the point index)
    beside the spectrum."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, bx) = plt.subplots(1, 2, figsize=(10, 4.5), gridspec_kw={"width_ratios": [3, 2]})
    x = coords[:, 0]
    y = coords[:, 1] if coords.shape[1] > 1 else np.arange(coords.shape[0])
    sc = ax.scatter(x, y, c=colour if colour is not None else x, s=4, cmap="viridis")
    fig.colorbar(sc, ax=ax, label=label)
    ax.set_xlabel("λ₁ᵗ ψ₁")
    ax.set_ylabel("λ₂ᵗ ψ₂" if coords.shape[1] > 1 else "point index")
    ax.set_title(title)
    bx.plot(np.arange(len(eigenvalues)), eigenvalues, "o-")
    bx.set_xlabel("k")
    bx.set_ylabel("λ_k")
    bx.set_title("spectrum of P")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def embed_main(argv: Sequence[str] | None = None) -> int:
    """``flashmarkov embed``: fit a diffusion map and write/plot the coordinates; returns 0."""
    ap = argparse.ArgumentParser(prog="flashmarkov embed", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data", help=f".npy or .csv file, or a built-in data set ({', '.join(BUILTIN)})")
    ap.add_argument("--out", help="write the coordinates (N, n_components) to this .npy file")
    ap.add_argument("--plot", help="write a scatter plot of the first two coordinates to this .png file")
    ap.add_argument("--n-components", type=int, default=2)
    ap.add_argument("--alpha", type=float, default=1.0)
    ap.add_argument("--bandwidth", type=_bandwidth, default="median", help="median, knn, bgh, self-tuning or a float beta")
    ap.add_argument("--t", type=float, default=1.0, help="diffusion time")
    ap.add_argument("--tol", type=float, default=1e-6)
    ap.add_argument("--eigensolver", default="auto", choices=("auto", "dense", "lobpcg"))
    ap.add_argument("--n", type=int, default=2000, help="points of a built-in data set")
    ap.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    ap.add_argument("--verbose", action="store_true")
    args = ap.parse_args(argv)
    if args.data in BUILTIN:
        X, colour, label = dataset(args.data, args.n)
    else:
        X, colour, label = load(args.data), None, "first coordinate"
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is present")
    device = None if args.device == "auto" else args.device
    dm = DiffusionMap(
        n_components=args.n_components, alpha=args.alpha, bandwidth=args.bandwidth, t=args.t, tol=args.tol,
        eigensolver=args.eigensolver, device=device, verbose=args.verbose,
    )
    start = time.perf_counter()
    try:
        coords = dm.fit_transform(X)
    except (ValueError, TypeError) as exc:
        raise SystemExit(f"flashmarkov embed: {exc}") from exc
    seconds = time.perf_counter() - start
    lam = np.asarray(dm.eigenvalues_)
    print(f"{args.data}: N={X.shape[0]} d={X.shape[1]} beta={dm.beta_:.4g} ({dm.bandwidth_.method}) "
          f"alpha={args.alpha} fit {seconds:.2f} s, max residual {float(np.max(np.asarray(dm.residuals_))):.1e}")
    if dm.intrinsic_dimension_ is not None:
        print(f"intrinsic dimension (BGH) ≈ {dm.intrinsic_dimension_:.2f}")
    print("eigenvalues:", " ".join(f"{v:.6f}" for v in lam))
    if args.out:
        np.save(args.out, coords)
        print(f"coordinates {coords.shape} -> {args.out}")
    if args.plot:
        plot(args.plot, coords, colour, label, lam, f"diffusion map of {Path(args.data).name}")
        print(f"plot -> {args.plot}")
    return 0


def demo_diffusion(
    device: torch.device | str, plot_path: str | None = "flashmarkov-diffusion-demo.png", n: int | None = None
) -> str:
    """The diffusion part of ``flashmarkov demo``: a swiss roll (``n`` points: by default 1 000
    on CPU, 20 000 on a GPU) embedded with a k-NN bandwidth; writes the plot (unless
    ``plot_path`` is None) and returns a short report."""
    device = torch.device(device)
    n = n or (20_000 if device.type == "cuda" else 1_000)
    X, t = swiss_roll(n)
    dm = DiffusionMap(n_components=2, bandwidth="knn", tol=1e-5, device=device)
    start = time.perf_counter()
    coords = dm.fit_transform(X)
    seconds = time.perf_counter() - start
    lam = np.asarray(dm.eigenvalues_)
    # the first coordinate should order the roll: |Spearman correlation| with t
    rank = lambda v: np.argsort(np.argsort(v))  # noqa: E731
    rho = abs(np.corrcoef(rank(coords[:, 0]), rank(t))[0, 1])
    lines = [
        f"diffusion map: swiss roll N={n} on {device.type}, beta={dm.beta_:.3g} (knn), {seconds:.2f} s",
        f"  eigenvalues {' '.join(f'{v:.5f}' for v in lam)}, max residual {float(np.max(np.asarray(dm.residuals_))):.1e}",
        f"  |rank correlation| of psi_1 with the roll parameter: {rho:.3f}",
    ]
    if plot_path:
        plot(plot_path, coords, t, "roll parameter t", lam, f"swiss roll, N={n}")
        lines.append(f"  plot -> {plot_path}")
    return "\n".join(lines)
