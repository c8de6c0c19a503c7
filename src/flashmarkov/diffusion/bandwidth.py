"""Kernel bandwidth selection for K = exp(−β‖x − y‖²) (math.md §4, "Bandwidth").

- ``"median"``: β = 1 / median ‖x_i − x_j‖² over pairs of a subsample (≤ 2 000 points).
- ``"knn"``: β = 1 / mean_i ‖x_i − x_(i,k)‖², the squared distance to the k-th neighbour
  (k = 8) averaged over a subsample of ≤ 5 000 query points against all points (tiled top-k).
- ``"bgh"`` (Berry–Giannakis–Harlim): on a log grid of ε, S(ε) = Σ_ij exp(−‖x_i − x_j‖²/ε)
  (one tiled pass over a subsample of ≤ 5 000 points for the whole grid); ε* maximises the
  slope d log S / d log ε, β = 1/ε*, and the intrinsic dimension is ≈ 2 × the maximal slope.
  The subsample is coarser than the data, so ε* is an upper estimate of the full set's.
- ``"self-tuning"`` (Zelnik-Manor & Perona): σ_i = distance from x_i to its k-th neighbour
  (k = 7, tiled top-k over all points), K_ij = exp(−‖x_i − x_j‖² / (σ_i σ_j)), β = 1.
- a float: β itself.

Subsamples are drawn with a fixed seed, so a fit is repeatable.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from . import tiles

Tensor = torch.Tensor

METHODS = ("median", "knn", "bgh", "self-tuning")
MEDIAN_SAMPLE = 2000
KNN_SAMPLE = 5000
KNN_K = 8
SELF_TUNING_K = 7
BGH_SAMPLE = 5000
BGH_GRID = 48


@dataclass
class Bandwidth:
    """The chosen kernel: ``beta``, optional per-point ``sigma`` (N,), and what BGH found."""

    beta: float
    sigma: Tensor | None = None
    method: str = "float"
    intrinsic_dimension: float | None = None
    eps_grid: Tensor | None = None
    log_slopes: Tensor | None = None


def _subsample(X: Tensor, m: int, seed: int = 0) -> Tensor:
    if X.shape[0] <= m:
        return X
    gen = torch.Generator(device="cpu").manual_seed(seed)
    idx = torch.randperm(X.shape[0], generator=gen)[:m].to(X.device)
    return X[idx].contiguous()


def median_beta(X: Tensor) -> float:
    """1 / median of the squared pairwise distances (i < j) of a subsample."""
    S = _subsample(X, MEDIAN_SAMPLE).double()
    d2 = torch.cdist(S, S).square()
    iu = torch.triu_indices(S.shape[0], S.shape[0], 1, device=S.device)
    med = d2[iu[0], iu[1]].median().item()
    if med <= 0:
        raise ValueError("bandwidth='median': the median squared distance is 0 (most points coincide)")
    return 1.0 / med


def knn_distances(Q: Tensor, X: Tensor, k: int, *, exclude_self: bool) -> Tensor:
    """Squared distance from each query to its k-th nearest point of X (tiled top-k)."""
    k = min(k, X.shape[0] - int(exclude_self), tiles.MAX_KNN)
    d2, _ = tiles.knn(Q, X, k, exclude_self=exclude_self)
    return d2[:, -1]


def knn_beta(X: Tensor, k: int = KNN_K) -> float:
    """1 / mean squared distance to the k-th neighbour, over a subsample of queries."""
    if X.shape[0] <= KNN_SAMPLE:
        d2 = knn_distances(X, X, k, exclude_self=True)
    else:
        # queries are training points: ask for one more neighbour and drop the point itself
        d2 = knn_distances(_subsample(X, KNN_SAMPLE), X, k + 1, exclude_self=False)
    mean = d2.double().mean().item()
    if mean <= 0:
        raise ValueError(f"bandwidth='knn': the {k}-th neighbour distances are all 0 (duplicated points)")
    return 1.0 / mean


def self_tuning_sigma(X: Tensor, k: int = SELF_TUNING_K) -> Tensor:
    """σ_i = distance from x_i to its k-th neighbour (self excluded), floored at a tiny positive
    value so duplicated points do not divide by zero."""
    d2 = knn_distances(X, X, k, exclude_self=True).double()
    floor = max(d2.max().item(), 1e-300) * 1e-12
    return d2.clamp_min(floor).sqrt()


def self_tuning_sigma_new(Y: Tensor, X: Tensor, k: int = SELF_TUNING_K) -> Tensor:
    """σ(y) for new points: the k-th neighbour among the training points X, where a training
    point at distance 0 counts as y itself (so σ(x_i) reproduces the training σ_i)."""
    k = min(k, X.shape[0] - 1, tiles.MAX_KNN - 1)
    d2, _ = tiles.knn(Y, X, k + 1, exclude_self=False)
    d2 = d2.double()
    # ‖y‖² + ‖x‖² − 2 y·x leaves a rounding residue of a few ulps of ‖y‖² for y = x
    coincide = d2[:, 0] <= 64 * torch.finfo(Y.dtype).eps * Y.double().square().sum(1)
    kth = torch.where(coincide, d2[:, k], d2[:, k - 1])
    return kth.clamp_min(1e-300).sqrt()


def bgh(X: Tensor, n_grid: int = BGH_GRID) -> Bandwidth:
    """Berry–Giannakis–Harlim: ε* = argmax d log S / d log ε over a log grid spanning the
    subsample's squared distances; β = 1/ε*, intrinsic dimension ≈ 2 · max slope.

    Computed in float64 whatever X's dtype (≤ 5 000 points: cheap): the grid's lower end is the
    closest pair's squared distance, which float32 gets with a large relative error, and ε* is
    an argmax over the grid — so float32 on the GPU and float64 on the CPU chose β 8e-4 apart."""
    S = _subsample(X, BGH_SAMPLE).double()
    d2_nn = knn_distances(S, S, 1, exclude_self=True)
    d2_max = (S - S.mean(0)).square().sum(1).max().item() * 4
    lo = max(d2_nn[d2_nn > 0].min().item() if bool((d2_nn > 0).any()) else 1e-12, d2_max * 1e-12) / 10
    eps = torch.logspace(math.log10(lo), math.log10(d2_max * 10), n_grid, dtype=torch.float64)
    sums = tiles.bgh_sums(S, eps.to(S.device)).cpu()
    log_eps, log_s = eps.log(), sums.log()
    slopes = (log_s[2:] - log_s[:-2]) / (log_eps[2:] - log_eps[:-2])
    i = int(slopes.argmax())
    return Bandwidth(
        beta=float(1.0 / eps[i + 1]),
        method="bgh",
        intrinsic_dimension=float(2 * slopes[i]),
        eps_grid=eps[1:-1],
        log_slopes=slopes,
    )


def select(X: Tensor, bandwidth: object) -> Bandwidth:
    """The ``Bandwidth`` for centred points X (N, d) and a ``bandwidth`` argument: a float β > 0
    or one of ``METHODS``."""
    if isinstance(bandwidth, str):
        if bandwidth == "median":
            return Bandwidth(median_beta(X), method="median")
        if bandwidth == "knn":
            return Bandwidth(knn_beta(X), method="knn")
        if bandwidth == "bgh":
            return bgh(X)
        if bandwidth == "self-tuning":
            return Bandwidth(1.0, sigma=self_tuning_sigma(X), method="self-tuning")
        raise ValueError(f"bandwidth={bandwidth!r}: allowed are a float beta > 0 or one of {METHODS}")
    if isinstance(bandwidth, bool) or not isinstance(bandwidth, (int, float)) and not hasattr(bandwidth, "__float__"):
        raise TypeError(f"bandwidth must be a float beta > 0 or one of {METHODS}, got {type(bandwidth).__name__}")
    beta = float(bandwidth)  # type: ignore[arg-type]
    if not math.isfinite(beta) or beta <= 0:
        raise ValueError(f"bandwidth (beta) = {bandwidth} must be a finite number > 0")
    return Bandwidth(beta)
