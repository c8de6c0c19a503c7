"""Tiled Gaussian-kernel reductions in plain PyTorch: the test oracle and the CPU path.

Every function visits the Nq x Nk kernel in blocks of at most ``_BLOCK_ELEMS`` entries
(64 MiB in float64), so memory stays O((Nq + Nk) * (d + m)) plus one block, never Nq x Nk.
Computation stays in the input dtype (float32 or float64); only ``bgh_sums`` returns float64.

    d2_ij = max(‖q_i‖² + ‖k_j‖² − 2 q_i·k_j, 0)              (q, k centred at the keys' mean)
    K_ij  = exp(−beta · d2_ij / (sigma_q_i · sigma_k_j))       (sigma default 1)

../../../shared/math.md section 4 has the formulas these serve. No input validation here:
``flashmarkov.diffusion.tiles`` validates before calling.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch

Tensor = torch.Tensor

_BLOCK_ELEMS = 1 << 23  # entries of one kernel block: 64 MiB in float64


def _blocks(n_rows: int, n_cols: int, width: int = 0) -> Iterator[tuple[slice, slice]]:
    """Row and column slices covering n_rows x n_cols, each block ≤ _BLOCK_ELEMS entries
    (counting ``width`` extra columns per row, e.g. a kNN merge buffer). Column blocks run in
    increasing order inside each row block."""
    cols = max(1, min(n_cols, _BLOCK_ELEMS // 64))
    rows = max(1, min(n_rows, _BLOCK_ELEMS // (cols + width)))
    for r0 in range(0, n_rows, rows):
        for c0 in range(0, n_cols, cols):
            yield slice(r0, min(r0 + rows, n_rows)), slice(c0, min(c0 + cols, n_cols))


def centre(K: Tensor) -> Tensor:
    """(d,) in K's dtype: the keys' mean (accumulated in float64) rounded to a multiple of 2^e,
    2^e <= the cloud's radius about the mean. Subtracted from queries and keys alike (distances
    do not change), it makes the expansion in ``sq_dist`` cancel relative to the cloud's radius,
    not its distance from the origin; the rounding keeps x − centre exact for points on a
    coarse grid (integer points keep exact distances and ties). Shared by the Triton path."""
    mean = K.mean(0, dtype=torch.float64)
    radius = (K.double() - mean).abs().amax()
    step = torch.exp2(torch.floor(torch.log2(radius))).clamp_min(1e-300)  # no host sync
    return torch.where(radius > 0, torch.round(mean / step) * step, mean).to(K.dtype)


def centred(Q: Tensor, K: Tensor) -> tuple[Tensor, Tensor]:
    """Q and K minus ``centre(K)``."""
    ctr = centre(K)
    return (Q - ctr, K - ctr) if Q is not K else (Q - ctr,) * 2


def sq_dist(q: Tensor, k: Tensor) -> Tensor:
    """Squared distances (Nq, Nk) as ‖q‖² + ‖k‖² − 2 q·k clamped at 0, in the input dtype."""
    d2 = (q * q).sum(1)[:, None] + (k * k).sum(1)[None, :] - 2.0 * (q @ k.T)
    return d2.clamp_min_(0)


def _zero_diagonal(d2: Tensor, rows: slice, cols: slice) -> Tensor:
    """Exact 0 where the global row index equals the column index (a point and itself)."""
    i = torch.arange(rows.start, rows.stop, device=d2.device)[:, None]
    j = torch.arange(cols.start, cols.stop, device=d2.device)[None, :]
    return d2.masked_fill_(i == j, 0.0)


def _exponent(
    Q: Tensor, K: Tensor, rows: slice, cols: slice, beta: float, sigma_q: Tensor | None, sigma_k: Tensor | None,
    same: bool = False,
) -> Tensor:
    """−beta · d2 / (sigma_q sigma_k) on one block; ``same`` (Q is K): exact 0 on the diagonal."""
    e = sq_dist(Q[rows], K[cols])
    if same:
        _zero_diagonal(e, rows, cols)
    e.mul_(-beta)
    if sigma_q is not None and sigma_k is not None:
        e.div_(sigma_q[rows, None] * sigma_k[None, cols])
    return e


def gaussian_matmat_ref(
    Q: Tensor,
    K: Tensor,
    V: Tensor,
    beta: float,
    *,
    row_scale: Tensor | None = None,
    col_scale: Tensor | None = None,
    sigma_q: Tensor | None = None,
    sigma_k: Tensor | None = None,
    same: bool = False,
) -> Tensor:
    """out_i = row_scale_i · Σ_j K_ij · col_scale_j · V_j; (Nq, m) in the input dtype.
    ``same`` (Q is K): the diagonal distances are exactly 0."""
    Q, K = centred(Q, K)
    out = Q.new_zeros(Q.shape[0], V.shape[1])
    W = V if col_scale is None else V * col_scale[:, None]
    for rows, cols in _blocks(Q.shape[0], K.shape[0]):
        out[rows] += _exponent(Q, K, rows, cols, beta, sigma_q, sigma_k, same).exp_() @ W[cols]
    return out if row_scale is None else out * row_scale[:, None]


def gaussian_rowsum_ref(
    Q: Tensor,
    K: Tensor,
    beta: float,
    *,
    col_scale: Tensor | None = None,
    sigma_q: Tensor | None = None,
    sigma_k: Tensor | None = None,
    same: bool = False,
) -> Tensor:
    """Σ_j K_ij · col_scale_j; (Nq,) in the input dtype. ``same`` (Q is K): the diagonal
    distances are exactly 0."""
    Q, K = centred(Q, K)
    w = K.new_ones(K.shape[0]) if col_scale is None else col_scale
    out = Q.new_zeros(Q.shape[0])
    for rows, cols in _blocks(Q.shape[0], K.shape[0]):
        out[rows] += _exponent(Q, K, rows, cols, beta, sigma_q, sigma_k, same).exp_() @ w[cols]
    return out


def gaussian_matmat_sym_ref(
    X: Tensor, V: Tensor, beta: float, *, scale: Tensor | None = None, sigma: Tensor | None = None
) -> Tensor:
    """diag(scale) · K(X, X) · diag(scale) · V; (N, m), diagonal distances exactly 0. The
    reference computes every block (the symmetric saving is the kernel's business); ``scale``
    None means ones."""
    return gaussian_matmat_ref(X, X, V, beta, row_scale=scale, col_scale=scale, sigma_q=sigma, sigma_k=sigma, same=True)


def gaussian_softmax_apply_ref(
    Q: Tensor, K: Tensor, V: Tensor, beta: float, *, log_bias: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """out_i = Σ_j softmax_j(s_ij) V_j and lse_i = log Σ_j exp(s_ij), s_ij = −beta d2_ij + log_bias_j.

    Online max over column blocks, so far-away queries (every s_ij very negative) are exact.
    Keys with log_bias −inf have weight 0; a row whose weights are all 0 gets out 0, lse −inf.
    """
    Q, K = centred(Q, K)
    n_q = Q.shape[0]
    out = Q.new_zeros(n_q, V.shape[1])
    run_max = Q.new_full((n_q,), -math.inf)
    run_sum = Q.new_zeros(n_q)
    for rows, cols in _blocks(n_q, K.shape[0]):
        s = _exponent(Q, K, rows, cols, beta, None, None)
        if log_bias is not None:
            s += log_bias[None, cols]
        new_max = torch.maximum(run_max[rows], s.amax(1))
        safe = torch.where(torch.isfinite(new_max), new_max, torch.zeros_like(new_max))
        decay = torch.exp(run_max[rows] - safe)
        p = torch.exp(s - safe[:, None])
        run_sum[rows] = run_sum[rows] * decay + p.sum(1)
        out[rows] = out[rows] * decay[:, None] + p @ V[cols]
        run_max[rows] = new_max
    positive = run_sum > 0
    out = torch.where(positive[:, None], out / torch.where(positive, run_sum, 1.0)[:, None], 0.0)
    lse = torch.where(positive, run_max + torch.log(run_sum), -math.inf)
    return out, lse


def knn_ref(Q: Tensor, K: Tensor, k: int, *, exclude_self: bool = False) -> tuple[Tensor, Tensor]:
    """The k nearest keys of every query: squared distances (Nq, k) ascending and their int64
    indices; ties go to the smaller index. ``exclude_self`` (Q is K) drops j == i."""
    Q, K = centred(Q, K)
    n_q = Q.shape[0]
    best_d = Q.new_full((n_q, k), math.inf)
    best_i = torch.full((n_q, k), -1, dtype=torch.int64, device=Q.device)
    for rows, cols in _blocks(n_q, K.shape[0], width=k):
        d2 = sq_dist(Q[rows], K[cols])
        idx = torch.arange(cols.start, cols.stop, device=Q.device)
        if exclude_self:
            d2.masked_fill_(torch.arange(rows.start, rows.stop, device=Q.device)[:, None] == idx[None, :], math.inf)
        # best holds smaller indices than this block, both in index order among ties: a stable
        # sort by distance keeps ties ordered by index
        cand_d = torch.cat([best_d[rows], d2], dim=1)
        cand_i = torch.cat([best_i[rows], idx.expand(d2.shape[0], -1)], dim=1)
        order = torch.sort(cand_d, dim=1, stable=True).indices[:, :k]
        best_d[rows] = cand_d.gather(1, order)
        best_i[rows] = cand_i.gather(1, order)
    return best_d, best_i


def bgh_sums_ref(X: Tensor, eps: Tensor) -> Tensor:
    """S(ε) = Σ_ij exp(−d2_ij / ε) for every ε in ``eps`` (n,), accumulated in float64; (n,).
    The diagonal distances are exactly 0, so S(ε) → n as ε → 0."""
    X, _ = centred(X, X)
    total = torch.zeros(eps.shape[0], dtype=torch.float64, device=X.device)
    for rows, cols in _blocks(X.shape[0], X.shape[0]):
        d2 = _zero_diagonal(sq_dist(X[rows], X[cols]), rows, cols)
        for e in range(eps.shape[0]):
            total[e] += torch.exp(d2 / -eps[e].to(X.dtype)).sum(dtype=torch.float64)
    return total
