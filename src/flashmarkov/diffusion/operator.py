"""Markov operators of a Gaussian kernel, applied tile by tile (../../../shared/math.md §4).

Everything here is a few calls of the tiled products in ``tiles`` around O(N) vectors:

- ``SymmetricMarkov``: the Coifman–Lafon α-normalised operator on one point set,
  q = K 1, w = q^−α, d = w ⊙ (K w), P = diag(d)⁻¹ diag(w) K diag(w), its symmetric conjugate
  M = diag(r) K diag(r) with r = w ⊙ d^−½ (a block product ``matmat``), P·V, and the Doob
  h-transform P^h = diag(Ph)⁻¹ P diag(h) with conjugate diag(s) M diag(s), s = (h / Ph)^½.
- ``flash_diffusion``: the general primitive softmax_j(−β‖q_i − k_j‖² + log w_j + log h_j) · V
  (P·V for Q = K, P^h·V with h, Nyström for new Q).
- ``AsymmetricMarkov``: the same row-stochastic operator between two point sets (Q ≠ K, e.g.
  time-lagged frames): matvec, transposed matvec, top singular triplets (block eigensolver on
  P Pᵀ) and, for square ones, top eigenvalues (implicitly restarted Arnoldi, ARPACK).

Points are centred (by the key set's mean) before any distance is taken. Scales are kept in
float64; products run in the dtype of the points they are given.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from . import tiles
from .eigensolver import EigResult, Stage, block_eigsh

Tensor = torch.Tensor


def to_tensor(name: str, x: object, *, ndim: tuple[int, ...] = (2,), device: torch.device | None = None) -> tuple[Tensor, bool]:
    """``x`` (a torch tensor or anything NumPy turns into a float array) as a tensor, and whether
    it came from NumPy. Checks rank, floating dtype and finiteness; errors name ``name``."""
    from_numpy = not isinstance(x, torch.Tensor)
    if from_numpy:
        try:
            arr = np.asarray(x)
        except Exception as exc:  # noqa: BLE001 - any conversion failure is the caller's input
            raise TypeError(f"{name} must be a torch.Tensor or an array-like of numbers, got {type(x).__name__}") from exc
        if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
            raise TypeError(f"{name} must hold numbers, got an array of dtype {arr.dtype}")
        if not np.issubdtype(arr.dtype, np.floating):
            arr = arr.astype(np.float64)
        t = torch.from_numpy(np.ascontiguousarray(arr))
    else:
        t = x
        if not t.is_floating_point():
            raise TypeError(f"{name} has dtype {t.dtype}; a floating dtype is required")
    if t.dim() not in ndim:
        want = " or ".join(f"{n}-D" for n in ndim)
        raise ValueError(f"{name} must be {want}, got shape {tuple(t.shape)}")
    if t.numel() == 0:
        raise ValueError(f"{name} is empty (shape {tuple(t.shape)})")
    if not bool(torch.isfinite(t).all()):
        bad = int((~torch.isfinite(t)).sum())
        raise ValueError(f"{name} contains {bad} NaN or infinite value(s)")
    if device is not None:
        t = t.to(device)
    return t, from_numpy


def compute_dtype(t: Tensor) -> torch.dtype:
    """float64 stays float64; every other float dtype computes in float32."""
    return torch.float64 if t.dtype == torch.float64 else torch.float32


def check_positive(name: str, value: object) -> float:
    """A finite float > 0."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise TypeError(f"{name} must be a positive float, got {type(value).__name__}")
    v = float(value)
    if not math.isfinite(v) or v <= 0:
        raise ValueError(f"{name}={value} must be a finite number > 0")
    return v


def check_alpha(alpha: object) -> float:
    """α in [0, 1]."""
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float, np.floating, np.integer)):
        raise TypeError(f"alpha must be a float in [0, 1], got {type(alpha).__name__}")
    a = float(alpha)
    if not 0.0 <= a <= 1.0:
        raise ValueError(f"alpha={alpha} is outside [0, 1]")
    return a


def check_h(h: object, n: int, device: torch.device) -> Tensor | None:
    """The Doob function: None, or (n,) finite and > 0 everywhere; returned as float64."""
    if h is None:
        return None
    t, _ = to_tensor("h", h, ndim=(1,), device=device)
    if t.shape[0] != n:
        raise ValueError(f"h has {t.shape[0]} entries but there are {n} key points; they must match")
    if bool((t <= 0).any()):
        raise ValueError(f"h must be > 0 everywhere (Doob transform); its minimum is {t.min().item():.3g}")
    return t.double()


# Which tiled kernel computes M·V: the symmetric one (each off-diagonal tile once, transposed
# side by float atomics) or the plain one (every tile, no atomics, bitwise reproducible). The
# plain one is the default. With relaxed atomics, the folded operands and 64 x 64 tiles (four
# programs per SM) the symmetric one runs at the plain one's speed, not twice it (H100, N = 262 144,
# k = 16: d = 16 32.6–33.0 ms against 33.6, d = 3 27.3 against 27.2): it issues ~12 instructions
# per exponential against ~6 (the transposed tile's trip through shared memory, a second
# product, the atomics), and both loops are latency-bound at the same rate per instruction
# (notes/diffusion-tiles.md, session 15). It also disagrees with the row sums q and d, which
# the plain kernel computes: its diagonal is exactly exp(0), theirs carries the norm expansion's
# rounding, and with a local kernel (knn bandwidth, swiss roll N = 200 000) M's spectrum then
# rises above 1 (λ_1 = 1.00013 against 0.99999). benchmarks/diffusion_e2e.py --product sym plain
# measures both end to end. Read at every product.
SYMMETRIC_PRODUCT = False


class SymmetricMarkov:
    """The α-normalised Markov operator of K_ij = exp(−β‖x_i − x_j‖² / (σ_i σ_j)) on one point set.

    Args:
        X: (N, d) points, float32 or float64 (the product dtype); centred here.
        beta: β > 0.
        alpha: α in [0, 1].
        sigma: optional (N,) per-point bandwidths (self-tuning kernel).
        h: optional (N,) Doob function, > 0.
        hi_dtype: dtype of the normalising sums q, d and Ph (default: X's dtype).

    Attributes (float64, (N,)): ``q`` (K 1), ``w`` (q^−α), ``d`` (w ⊙ K w), ``r`` (the symmetric
    scale, r ⊙ s with a Doob transform), ``g`` (M's top eigenvector u_0 up to normalisation:
    d^½, or (d h Ph)^½ with h), ``pi`` (the stationary distribution g² / Σ g²).
    """

    def __init__(
        self,
        X: Tensor,
        beta: float,
        alpha: float,
        *,
        sigma: Tensor | None = None,
        h: Tensor | None = None,
        hi_dtype: torch.dtype | None = None,
    ) -> None:
        hi = hi_dtype or X.dtype
        self.beta, self.alpha = float(beta), float(alpha)
        self.center = X.double().mean(0)
        self.X64 = (X.double() - self.center).contiguous()
        self._points: dict[torch.dtype, tuple[Tensor, Tensor | None]] = {}
        self._products: dict[torch.dtype, tiles.PackedProduct] = {}  # M·V per dtype, points packed once
        self.sigma = None if sigma is None else sigma.double()
        Xh, sh = self.points(hi)
        self.q = tiles.gaussian_rowsum(Xh, Xh, self.beta, sigma_q=sh, sigma_k=sh).double()
        self.w = self.q.pow(-self.alpha)
        self.d = self.w * tiles.gaussian_rowsum(Xh, Xh, self.beta, col_scale=self.w.to(hi), sigma_q=sh, sigma_k=sh).double()
        self.r = self.w * self.d.rsqrt()
        self.h = h
        if h is None:
            self.Ph = None
            self.g = self.d.sqrt()
        else:
            kwh = tiles.gaussian_rowsum(Xh, Xh, self.beta, col_scale=(self.w * h).to(hi), sigma_q=sh, sigma_k=sh).double()
            self.Ph = self.w * kwh / self.d
            self.r = self.r * (h / self.Ph).sqrt()
            self.g = (self.d * h * self.Ph).sqrt()
        self.pi = self.g.square() / self.g.square().sum()

    @property
    def n(self) -> int:
        return self.X64.shape[0]

    def points(self, dtype: torch.dtype) -> tuple[Tensor, Tensor | None]:
        """The centred points and σ in ``dtype`` (cached)."""
        if dtype not in self._points:
            self._points[dtype] = (
                self.X64.to(dtype).contiguous(),
                None if self.sigma is None else self.sigma.to(dtype).contiguous(),
            )
        return self._points[dtype]

    def matmat(self, V: Tensor, dtype: torch.dtype | None = None) -> Tensor:
        """M V = diag(r) K diag(r) V for V (N, m), computed in ``dtype`` (default: the points'),
        returned in that dtype, by the kernel ``SYMMETRIC_PRODUCT`` names."""
        dtype = dtype or V.dtype
        X, s = self.points(dtype)
        V, r = V.to(dtype).contiguous(), self.r.to(dtype)
        if SYMMETRIC_PRODUCT:
            return tiles.gaussian_matmat_sym(X, V, self.beta, scale=r, sigma=s)
        if dtype not in self._products:
            self._products[dtype] = tiles.PackedProduct(X, X, self.beta, sigma_q=s, sigma_k=s)
        return self._products[dtype](V, row_scale=r, col_scale=r)

    def apply(self, V: Tensor, dtype: torch.dtype | None = None, rows: Tensor | None = None) -> Tensor:
        """P V (with a Doob function: P^h V) for V (N, m), or only its ``rows`` (index tensor)."""
        dtype = dtype or V.dtype
        X, s = self.points(dtype)
        row, col = self.w / self.d, self.w
        if self.h is not None:
            row, col = row / self.Ph, col * self.h
        Xq, sq = X, s
        if rows is not None:
            Xq, row = X[rows].contiguous(), row[rows]
            sq = None if s is None else s[rows].contiguous()
        return tiles.gaussian_matmat(
            Xq, X, V.to(dtype).contiguous(), self.beta, row_scale=row.to(dtype), col_scale=col.to(dtype), sigma_q=sq, sigma_k=s
        )

    def dense(self) -> Tensor:
        """M as a dense float64 (N, N) matrix (small N only: the dense eigensolver and tests)."""
        eye = torch.eye(self.n, dtype=torch.float64, device=self.X64.device)
        return self.matmat(eye, torch.float64)

    def stages(self, final_dtype: torch.dtype) -> list[Stage]:
        """The eigensolver's precision stages: float32 products first when the final products
        are float64 (left at residual 1e-5), then ``final_dtype`` products."""
        final = Stage(lambda V: self.matmat(V, final_dtype), 0.0, str(final_dtype).removeprefix("torch."))
        if final_dtype == torch.float32:
            return [final]
        return [Stage(lambda V: self.matmat(V, torch.float32), 1e-5, "float32"), final]

    def eigsh(
        self, k: int, *, tol: float = 1e-6, final_dtype: torch.dtype = torch.float64, dense: bool = False, **kw: Any
    ) -> EigResult:
        """The k largest eigenpairs of M below the trivial λ_0 = 1 (u_0 ∝ g deflated exactly)."""
        if dense:
            from .eigensolver import dense_eigsh

            return dense_eigsh(self.dense(), k, deflate=self.g)
        return block_eigsh(self.stages(final_dtype), self.n, k, tol=tol, deflate=self.g, device=self.X64.device, **kw)

    def right_eigenvectors(self, U: Tensor) -> Tensor:
        """ψ = U / g, π-normalised (Σ_i π_i ψ_i² = 1 for unit columns U); ψ_0 = g / g ≡ 1."""
        return U / self.g[:, None] * self.g.square().sum().sqrt()


def flash_diffusion(Q: Tensor, K: Tensor, V: Tensor, beta: float, alpha: float, h: Tensor | None) -> Tensor:
    """softmax_j(−β‖q_i − k_j‖² + log w_j + log h_j) · V with w = (K(K, K) 1)^−α, in Q's dtype
    (inputs already validated and of one dtype and device)."""
    center = K.double().mean(0)
    Kc = (K.double() - center).to(K.dtype).contiguous()
    Qc = Kc if Q is K else (Q.double() - center).to(Q.dtype).contiguous()
    log_bias = -alpha * torch.log(tiles.gaussian_rowsum(Kc, Kc, beta).double())
    if h is not None:
        log_bias = log_bias + torch.log(h.double())
    out, _ = tiles.gaussian_softmax_apply(Qc, Kc, V.contiguous(), beta, log_bias=log_bias.to(K.dtype))
    return out


class AsymmetricMarkov:
    """The row-stochastic P_ij = W_ij w_j / Σ_j' W_ij' w_j' between query points Q (Nq, d) and key
    points K (Nk, d), W_ij = exp(−β‖q_i − k_j‖²), w = (K(K, K) 1)^−α (FlashDiffusion's operator).

    ``matvec`` is P V, ``rmatvec`` is Pᵀ U, both tiled and overflow-free (log-sum-exp scales).
    """

    def __init__(self, Q: Tensor, K: Tensor, beta: float, alpha: float = 0.5) -> None:
        self.beta, self.alpha = float(beta), float(alpha)
        center = K.double().mean(0)
        self.K = (K.double() - center).to(K.dtype).contiguous()
        self.Q = (Q.double() - center).to(Q.dtype).contiguous()
        self.log_w = -self.alpha * torch.log(tiles.gaussian_rowsum(self.K, self.K, self.beta).double())
        probe = self.K.new_zeros(self.K.shape[0], 1)
        # lse_i = log Σ_j W_ij w_j: the row normaliser, in log space
        self.lse = tiles.gaussian_softmax_apply(self.Q, self.K, probe, self.beta, log_bias=self.log_w.to(K.dtype))[1].double()
        self._forward: tiles.PackedProduct | None = None
        self._transposed: tiles.PackedProduct | None = None

    @property
    def shape(self) -> tuple[int, int]:
        return self.Q.shape[0], self.K.shape[0]

    def matvec(self, V: Tensor) -> Tensor:
        """P V for V (Nk, m) → (Nq, m), in the points' dtype."""
        if self._forward is None:  # the points packed once for every product (tiles.PackedProduct)
            bias = self.log_w.to(self.K.dtype)
            self._forward = tiles.PackedProduct(self.Q, self.K, self.beta, softmax=True, log_bias=bias)
        out, _ = self._forward(V.to(self.K.dtype).contiguous())
        return out

    def rmatvec(self, U: Tensor) -> Tensor:
        """Pᵀ U for U (Nq, m) → (Nk, m): w_j Σ_i W_ij e^−lse_i U_i = e^{log w_j + lse'_j} softmax-apply."""
        if self._transposed is None:
            bias = (-self.lse).to(self.Q.dtype)
            self._transposed = tiles.PackedProduct(self.K, self.Q, self.beta, softmax=True, log_bias=bias)
        out, lse2 = self._transposed(U.to(self.Q.dtype).contiguous())
        return out * torch.exp(self.log_w + lse2.double()).to(out.dtype)[:, None]

    def svds(self, k: int, *, tol: float = 1e-8, **kw: Any) -> tuple[Tensor, Tensor, Tensor]:
        """Top ``k`` singular triplets: (U (Nq, k), σ (k,) descending, V (Nk, k)), float64, from
        the block eigensolver on P Pᵀ (its residual ``tol`` is on P Pᵀ u − σ² u)."""
        res = block_eigsh(lambda X: self.matvec(self.rmatvec(X)), self.shape[0], k, tol=tol, device=self.Q.device, **kw)
        sigma = res.eigenvalues.clamp_min(0).sqrt()
        V = self.rmatvec(res.eigenvectors).double() / sigma[None, :]
        return res.eigenvectors, sigma, V

    def eigs(self, k: int, *, tol: float = 1e-10, maxiter: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top ``k`` eigenvalues (largest modulus, complex) and right eigenvectors of a square P
        (Nq = Nk) by implicitly restarted Arnoldi (scipy's ARPACK), products on P's device."""
        n_q, n_k = self.shape
        if n_q != n_k:
            raise ValueError(f"eigs needs a square operator; this one is {n_q} x {n_k} (use svds)")
        if not 1 <= k <= n_q - 2:
            raise ValueError(f"k={k}: Arnoldi needs 1 <= k <= N - 2 = {n_q - 2}")
        try:
            from scipy.sparse.linalg import LinearOperator, eigs
        except ImportError as exc:
            raise ImportError("AsymmetricMarkov.eigs uses scipy's ARPACK: pip install scipy") from exc

        def mv(x: np.ndarray) -> np.ndarray:
            v = torch.from_numpy(np.ascontiguousarray(x.reshape(-1, 1).real)).to(self.K.device)
            return self.matvec(v).double().cpu().numpy().ravel()

        op = LinearOperator((n_q, n_q), matvec=mv, dtype=np.float64)
        vals, vecs = eigs(op, k=k, which="LM", tol=tol, maxiter=maxiter, v0=np.ones(n_q))
        order = np.argsort(-np.abs(vals), kind="stable")
        return vals[order], vecs[:, order]
