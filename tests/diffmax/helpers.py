"""Independent float64 oracles for the diffmax tests, written without flashmarkov's code."""

from __future__ import annotations

import math

import torch

Tensor = torch.Tensor


def independent_diffmax(z: Tensor, alpha: float | Tensor, dim: int = -1, iters: int = 200) -> Tensor:
    """α-diffmax by plain midpoint bisection of f(τ) = Σ [(1−α) z − τ]_+^(1/(1−α)) − 1 on
    [max − 1, max] (f(max − 1) ≥ 0 ≥ f(max)), ``iters`` times, then p(τ) / Σ p(τ); float64."""
    z = z.double().movedim(dim, -1)
    a = alpha if isinstance(alpha, float) else alpha.double().movedim(dim, -1)
    x = (1 - a) * z
    finite = torch.isfinite(x)
    top = torch.where(finite, x, torch.full_like(x, -1e300)).max(-1, keepdim=True).values
    lo, hi = top - 1, top.clone()
    power = 1 / (1 - a)

    def weights(t: Tensor) -> Tensor:
        gap = torch.where(finite, x - t, torch.zeros_like(x))
        return gap.clamp(min=0) ** power

    for _ in range(iters):
        mid = (lo + hi) / 2
        above = weights(mid).sum(-1, keepdim=True) >= 1
        lo = torch.where(above, mid, lo)
        hi = torch.where(above, hi, mid)
    p = weights(lo)
    total = p.sum(-1, keepdim=True)
    p = torch.where(total > 0, p / torch.where(total > 0, total, torch.ones_like(total)), torch.zeros_like(p))
    return p.movedim(-1, dim)


def sparsemax(z: Tensor, dim: int = -1) -> Tensor:
    """Sparsemax by sorting (Martins & Astudillo 2016), float64."""
    z = z.double().movedim(dim, -1)
    s, _ = torch.sort(z, dim=-1, descending=True)
    cs = s.cumsum(-1)
    r = torch.arange(1, z.shape[-1] + 1, dtype=torch.float64)
    support = 1 + r * s > cs
    k = support.sum(-1, keepdim=True)
    tau = (cs.gather(-1, k - 1) - 1) / k
    return (z - tau).clamp(min=0).movedim(-1, dim)


def scores(
    shape: tuple[int, ...],
    dtype: torch.dtype,
    device: str = "cpu",
    scale: float = 3.0,
    gen: torch.Generator | None = None,
) -> Tensor:
    """Gaussian scores × scale with ties, a −inf entry per row where the row is long enough, and
    one fully masked row when there are several rows (the last axis is the normalised one).

    Drawn on the CPU from ``gen`` when given (then the same values on every device, so a GPU
    failure replays on the CPU), else from the global RNG of ``device``."""
    if gen is not None:
        z = scale * torch.randn(shape, dtype=torch.float64, generator=gen).to(device)
    else:
        z = scale * torch.randn(shape, dtype=torch.float64, device=device)
    n = shape[-1]
    if n >= 4:
        z[..., 1] = z[..., 2]
        z[..., 3] = -math.inf
    if z.numel() // max(n, 1) > 1:
        z.view(-1, n)[1] = -math.inf
    return z.to(dtype)
