"""Dense float64 oracles for the diffusion tests: every formula of math.md §4 written out with
the full N × N matrix (small N only), plus the known point sets and their exact spectra."""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy import special

Tensor = torch.Tensor


def kernel(Q: Tensor, K: Tensor, beta: float, sigma_q: Tensor | None = None, sigma_k: Tensor | None = None) -> Tensor:
    """exp(−β‖q_i − k_j‖² / (σ_i σ_j)) from exact pairwise differences (float64)."""
    Q, K = Q.double(), K.double()
    d2 = ((Q[:, None, :] - K[None, :, :]) ** 2).sum(-1)
    if sigma_q is not None:
        d2 = d2 / (sigma_q.double()[:, None] * sigma_k.double()[None, :])
    return torch.exp(-beta * d2)


def normalise(X: Tensor, beta: float, alpha: float, sigma: Tensor | None = None, h: Tensor | None = None) -> dict[str, Tensor]:
    """q, w, d, the row-stochastic P (P^h with h), the symmetric conjugate M (S^h) and the
    stationary distribution π, all dense float64."""
    K = kernel(X, X, beta, sigma, sigma)
    q = K.sum(1)
    w = q.pow(-alpha)
    Wk = w[:, None] * K * w[None, :]
    d = Wk.sum(1)
    P = Wk / d[:, None]
    M = Wk / (d.sqrt()[:, None] * d.sqrt()[None, :])
    pi = d / d.sum()
    if h is not None:
        h = h.double()
        Ph = P @ h
        P = P * h[None, :] / Ph[:, None]
        s = (h / Ph).sqrt()
        M = s[:, None] * M * s[None, :]
        pi = d * h * Ph / (d * h * Ph).sum()
    return {"K": K, "q": q, "w": w, "d": d, "P": P, "M": M, "pi": pi}


def flash_diffusion(Q: Tensor, K: Tensor, V: Tensor, beta: float, alpha: float, h: Tensor | None = None) -> Tensor:
    """Σ_j W_ij w_j h_j V_j / Σ_j W_ij w_j h_j with w = (K(K,K) 1)^−α, dense float64."""
    w = kernel(K, K, beta).sum(1).pow(-alpha)
    if h is not None:
        w = w * h.double()
    A = kernel(Q, K, beta) * w[None, :]
    return (A @ V.double()) / A.sum(1, keepdim=True)


def spectrum(X: Tensor, beta: float, alpha: float, k: int, sigma: Tensor | None = None, h: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Top k + 1 eigenvalues of M (descending) and the π-normalised right eigenvectors ψ of P."""
    n = normalise(X, beta, alpha, sigma, h)
    evals, evecs = torch.linalg.eigh(n["M"])
    lam, U = evals.flip(0)[: k + 1], evecs.flip(1)[:, : k + 1]
    g = (n["pi"] * 1.0).sqrt()
    psi = U / g[:, None]
    psi = psi / (n["pi"][:, None] * psi**2).sum(0).sqrt()[None, :]
    return lam, psi


def subspace_angle(A: Tensor, B: Tensor) -> float:
    """Largest principal angle (radians) between the column spaces of A and B (same width),
    from its sine ‖(I − Q_A Q_Aᵀ) Q_B‖₂, accurate for tiny angles."""
    Qa, _ = torch.linalg.qr(A.double())
    Qb, _ = torch.linalg.qr(B.double())
    s = torch.linalg.matrix_norm(Qb - Qa @ (Qa.T @ Qb), ord=2).clamp(max=1.0)
    return float(torch.arcsin(s))


def circle(n: int, density_ratio: float = 1.0) -> Tensor:
    """n points on the unit circle; equispaced, or with sampling density varying smoothly by
    ``density_ratio`` (max/min) through the angle map a(u) = 2πu + c sin 2πu."""
    u = torch.arange(n, dtype=torch.float64) / n
    if density_ratio == 1.0:
        a = 2 * math.pi * u
    else:
        c = (density_ratio - 1) / (density_ratio + 1)  # da/du ∈ 2π(1 ± c): density ratio (1+c)/(1−c)
        a = 2 * math.pi * u + c * torch.sin(2 * math.pi * u)
    return torch.stack([torch.cos(a), torch.sin(a)], 1)


def circle_spectrum(n: int, beta: float, kmax: int) -> Tensor:
    """Exact discrete spectrum λ_0..λ_kmax of the equispaced circle (each k ≥ 1 twice)."""
    j = torch.arange(n, dtype=torch.float64)
    e = torch.exp(-4 * beta * torch.sin(math.pi * j / n) ** 2)
    return torch.stack([(e * torch.cos(2 * math.pi * j * k / n)).sum() / e.sum() for k in range(kmax + 1)])


def circle_eigenvalues(n: int, beta: float, count: int) -> Tensor:
    """The top ``count`` eigenvalues with multiplicity (λ_0 once, then pairs)."""
    lam = circle_spectrum(n, beta, count)
    out = [lam[0]] + [lam[k] for k in range(1, count) for _ in range(2)]
    return torch.stack(out[:count])


def fibonacci_sphere(n: int) -> Tensor:
    """The Fibonacci lattice: n nearly uniform points on S²."""
    i = torch.arange(n, dtype=torch.float64) + 0.5
    z = 1 - 2 * i / n
    phi = math.pi * (3 - math.sqrt(5)) * i
    r = (1 - z**2).sqrt()
    return torch.stack([r * torch.cos(phi), r * torch.sin(phi), z], 1)


def sphere_eigenvalues(beta: float, lmax: int) -> list[float]:
    """λ_l = i_l(2β)/i_0(2β) with multiplicity 2l + 1, l = 0..lmax (continuum limit)."""
    x = 2 * beta
    lams = []
    for l in range(lmax + 1):
        lams += [float(special.spherical_in(l, x) / special.spherical_in(0, x))] * (2 * l + 1)
    return lams


def torus(n: int) -> Tensor:
    """The n × n flat torus grid in R⁴: (cos a, sin a, cos b, sin b)."""
    a = 2 * math.pi * torch.arange(n, dtype=torch.float64) / n
    A, B = torch.meshgrid(a, a, indexing="ij")
    return torch.stack([A.cos(), A.sin(), B.cos(), B.sin()], -1).reshape(-1, 4)


def torus_eigenvalues(n: int, beta: float, count: int) -> Tensor:
    """Top ``count`` of λ_k λ_m (k, m over the circle spectrum with multiplicities)."""
    lam = circle_spectrum(n, beta, n // 2)
    ks = list(range(-(n // 2) + 1, n // 2 + 1)) if n % 2 == 0 else list(range(-(n // 2), n // 2 + 1))
    vals = torch.stack([lam[abs(k)] * lam[abs(m)] for k in ks for m in ks])
    return vals.sort(descending=True).values[:count]


def bessel_ratio(k: int, x: float) -> float:
    """I_k(x) / I_0(x) (scaled Bessel functions: no overflow)."""
    return float(special.ive(k, x) / special.ive(0, x))


def as_numpy(t: Tensor) -> np.ndarray:
    return t.detach().cpu().numpy()
