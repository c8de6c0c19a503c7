"""Carré du champ and the per-point metric of a fitted diffusion operator (math.md §4).

    Γ(f, g)_i = ½ Σ_j P_ij (f_j − f_i)(g_j − g_i) = ½ [P(fg) − f·Pg − g·Pf + f·g]_i
    Γ_β = 4β · Γ → ∇f·∇g  (self-tuning kernels: 4 Γ_i / σ_i², the local β_i = 1/σ_i²)

Each Γ is one tiled application of P to the stacked columns [f, g, f·g]. ``metric`` evaluates
G_i[a, b] = Γ_β(c_a, c_b)_i for coordinates c (N, k) — the co-metric of the embedding, i.e. the
inverse Riemannian metric pushed forward to those coordinates — streaming the k(k+1)/2 products
in batches of columns, so memory is O(N · batch) plus the output, which is O(R · k²) for the R
rows asked for (all by default).
"""

from __future__ import annotations

import torch

from .operator import SymmetricMarkov

Tensor = torch.Tensor

PAIR_BATCH = 16


def _scale(op: SymmetricMarkov, rows: Tensor | None, scaled: bool) -> Tensor | float:
    if not scaled:
        return 1.0
    if op.sigma is None:
        return 4.0 * op.beta
    s = op.sigma if rows is None else op.sigma[rows]
    return 4.0 * op.beta / s.square()


def carre_du_champ(
    op: SymmetricMarkov, f: Tensor, g: Tensor, *, dtype: torch.dtype = torch.float64, rows: Tensor | None = None, scaled: bool = True
) -> Tensor:
    """Γ(f, g) column by column for f, g (N, m) float64 values at the training points; (R, m)
    float64 for the R = len(rows) rows asked for (all N by default). ``scaled`` gives Γ_β."""
    f = f - f.mean(0, keepdim=True)  # Γ ignores constants; centring limits cancellation
    g = g - g.mean(0, keepdim=True)
    m = f.shape[1]
    Pv = op.apply(torch.cat([f, g, f * g], 1), dtype, rows=rows).double()
    Pf, Pg, Pfg = Pv[:, :m], Pv[:, m : 2 * m], Pv[:, 2 * m :]
    fr, gr = (f, g) if rows is None else (f[rows], g[rows])
    gamma = 0.5 * (Pfg - fr * Pg - gr * Pf + fr * gr)
    scale = _scale(op, rows, scaled)
    return gamma * (scale[:, None] if isinstance(scale, Tensor) else scale)


def metric(
    op: SymmetricMarkov, coords: Tensor, *, dtype: torch.dtype = torch.float64, rows: Tensor | None = None, scaled: bool = True
) -> Tensor:
    """G_i[a, b] = Γ_β(c_a, c_b)_i for coordinates ``coords`` (N, k) float64: (R, k, k) float64."""
    C = coords - coords.mean(0, keepdim=True)
    n, k = C.shape
    PC = op.apply(C, dtype, rows=rows).double()
    Cr = C if rows is None else C[rows]
    G = C.new_empty(Cr.shape[0], k, k)
    ia, ib = torch.triu_indices(k, k, device=C.device)
    for start in range(0, ia.shape[0], PAIR_BATCH):
        a, b = ia[start : start + PAIR_BATCH], ib[start : start + PAIR_BATCH]
        Pab = op.apply(C[:, a] * C[:, b], dtype, rows=rows).double()
        block = 0.5 * (Pab - Cr[:, a] * PC[:, b] - Cr[:, b] * PC[:, a] + Cr[:, a] * Cr[:, b])
        G[:, a, b] = block
        G[:, b, a] = block
    scale = _scale(op, rows, scaled)
    return G * (scale[:, None, None] if isinstance(scale, Tensor) else scale)
