"""``DiffusionMap``: a scikit-learn-style estimator for diffusion maps that never forms N × N.

fit: centre X, choose the bandwidth, build the α-normalised operator (two tiled row sums), then
the top ``n_components`` nontrivial eigenpairs of M = diag(r) K diag(r) with u_0 ∝ d^½ deflated
exactly (``SymmetricMarkov.eigsh``). Eigenvectors are returned as right eigenvectors ψ of P,
π-normalised (ψ_0 ≡ 1); the embedding is λ_k^t ψ_k, k ≥ 1. ``transform`` is the Nyström
extension, two tiled passes per call, exact at the training points.

Precision: on the CPU, float64 data is computed with float32 products first and float64 products
at the end (float32 data: float32 products); on a GPU the products are float32 (distances from
centred data). Either way a tol below ``FLOAT32_REACH`` (1e-5) builds the operator (row sums)
in float64 and adds float64 products at the end.
The Rayleigh–Ritz algebra is always float64.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
import torch

from . import bandwidth as _bandwidth
from . import geometry, tiles
from .eigensolver import EigResult
from .operator import SymmetricMarkov, check_alpha, check_positive, compute_dtype, to_tensor

Tensor = torch.Tensor

EIGENSOLVERS = ("auto", "dense", "lobpcg")
DENSE_MAX = 1000  # "auto" uses the dense float64 eigensolver up to this many points
# Residual the float32 products reach reliably (their relative error is ~5e-7): a smaller tol
# adds a float64 stage after the float32 one (a few products), on the GPU too
FLOAT32_REACH = 1e-5

try:  # subclass scikit-learn's BaseEstimator when it is installed (clone, pipelines, repr)
    from sklearn.base import BaseEstimator as _Base
except ImportError:  # pragma: no cover - exercised where scikit-learn is absent

    class _Base:  # type: ignore[no-redef]
        """get_params / set_params of scikit-learn's BaseEstimator, for the __init__ arguments."""

        _PARAMS: tuple[str, ...] = ()

        def get_params(self, deep: bool = True) -> dict[str, Any]:
            return {name: getattr(self, name) for name in self._PARAMS}

        def set_params(self, **params: Any) -> _Base:
            for name, value in params.items():
                if name not in self._PARAMS:
                    raise ValueError(f"invalid parameter {name!r} for {type(self).__name__}; valid: {self._PARAMS}")
                setattr(self, name, value)
            return self

        def __repr__(self) -> str:
            args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
            return f"{type(self).__name__}({args})"


def _resolve_device(device: object, X: object) -> torch.device:
    if device is None:
        if isinstance(X, torch.Tensor) and X.device.type != "cpu":
            return X.device
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)  # type: ignore[arg-type]
    except (TypeError, RuntimeError) as exc:
        raise ValueError(f"device={device!r} is not a torch device") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={device!r}: no CUDA device is present")
    return dev


class DiffusionMap(_Base):
    """Diffusion maps (Coifman & Lafon 2006) with tiled kernels.

    Args:
        n_components: number of nontrivial diffusion coordinates k ≥ 1.
        alpha: Coifman–Lafon normalisation in [0, 1] (1: Laplace–Beltrami, density independent;
            ½: Fokker–Planck; 0: normalised graph Laplacian).
        bandwidth: a float β > 0 for exp(−β‖x − y‖²), or "median", "knn", "bgh", "self-tuning"
            (``flashmarkov.diffusion.bandwidth``).
        t: diffusion time ≥ 0 of the embedding λ_k^t ψ_k.
        tol: eigensolver residual ‖M u − λ u‖ (M has norm 1). Products run in float32 (on the
            GPU, and for float32 data); the last stage is float64 when tol < 1e-5 or the data
            are float64 on the CPU.
        eigensolver: "auto" (dense up to 1 000 points, else "lobpcg"), "dense" (float64 eigh of
            the N × N matrix: small N only) or "lobpcg" (the tiled block eigensolver).
        device: where to compute ("cpu", "cuda", a torch.device); None: the input's CUDA device,
            else CUDA when present, else CPU.
        verbose: show the eigensolver's progress bar.

    Fitted attributes: ``eigenvalues_`` (k+1,) descending with λ_0 = 1; ``eigenvectors_``
    (N, k+1) right eigenvectors ψ of P, π-normalised, ψ_0 ≡ 1; ``embedding_`` (N, k);
    ``beta_``, ``sigma_`` (self-tuning), ``intrinsic_dimension_`` (bgh), ``stationary_`` π;
    the eigensolver's ``residuals_``, ``n_iter_`` and ``n_products_`` (block products).
    Arrays are NumPy when X was NumPy, else torch tensors on ``device``.
    """

    _PARAMS = ("n_components", "alpha", "bandwidth", "t", "tol", "eigensolver", "device", "verbose")

    def __init__(
        self,
        n_components: int = 8,
        alpha: float = 1.0,
        bandwidth: float | str = "median",
        t: float = 1.0,
        tol: float = 1e-6,
        eigensolver: str = "auto",
        device: str | torch.device | None = None,
        verbose: bool = False,
    ) -> None:
        self.n_components = n_components
        self.alpha = alpha
        self.bandwidth = bandwidth
        self.t = t
        self.tol = tol
        self.eigensolver = eigensolver
        self.device = device
        self.verbose = verbose

    def _check_params(self) -> None:
        k = self.n_components
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
            raise TypeError(f"n_components must be an int >= 1, got {type(k).__name__}")
        if k < 1:
            raise ValueError(f"n_components={k} must be >= 1")
        check_alpha(self.alpha)
        if isinstance(self.t, bool) or not isinstance(self.t, (int, float, np.floating, np.integer)):
            raise TypeError(f"t must be a float >= 0, got {type(self.t).__name__}")
        if not (math.isfinite(float(self.t)) and self.t >= 0):
            raise ValueError(f"t={self.t} must be a finite number >= 0")
        check_positive("tol", self.tol)
        if self.eigensolver not in EIGENSOLVERS:
            raise ValueError(f"eigensolver={self.eigensolver!r}: allowed are {EIGENSOLVERS}")
        if not isinstance(self.verbose, bool):
            raise TypeError(f"verbose must be a bool, got {type(self.verbose).__name__}")
        if not isinstance(self.bandwidth, str):
            _bandwidth.select(torch.zeros(1, 1), self.bandwidth)  # validates a float β before any work

    def _output(self, t: Tensor) -> np.ndarray | Tensor:
        return t.cpu().numpy() if self._numpy else t

    def fit(self, X: object, y: object = None) -> DiffusionMap:
        """Fit on X (N, d): NumPy array or torch tensor, finite, N ≥ n_components + 2."""
        self._check_params()
        device = _resolve_device(self.device, X)
        Xt, self._numpy = to_tensor("X", X, device=device)
        n, k = Xt.shape[0], int(self.n_components)
        if n < k + 2:
            raise ValueError(f"X has N={n} points; n_components={k} needs N >= n_components + 2 = {k + 2}")
        dtype = torch.float32 if device.type == "cuda" else compute_dtype(Xt)
        self._dtype = dtype
        self.n_features_in_ = Xt.shape[1]
        mean = Xt.double().mean(0)
        Xc64 = (Xt.double() - mean).contiguous()
        Xc = Xc64.to(dtype)
        bw = _bandwidth.select(Xc, self.bandwidth)
        self.bandwidth_ = bw
        self.beta_ = bw.beta
        # tol below float32's reach: the operator itself (points, q, d) in float64, not only the
        # last products — float32 tiled row sums (~1e-6 relative on the GPU) shift the eigenvalues
        # by as much (S², N = 20 000: 1.3e-6; float64 sums: 1e-10). Costs 2–3 float64 row sums.
        final = torch.float64 if float(self.tol) < FLOAT32_REACH else dtype
        sigma = None if bw.sigma is None else bw.sigma.to(final)
        op = SymmetricMarkov(Xc64 if final == torch.float64 else Xc, bw.beta, float(self.alpha), sigma=sigma, hi_dtype=final)
        self.operator_ = op
        self._center = mean + op.center  # the operator re-centres the (rounded) centred points
        dense = self.eigensolver == "dense" or (self.eigensolver == "auto" and n <= DENSE_MAX)
        res: EigResult = op.eigsh(k, tol=float(self.tol), final_dtype=final, dense=dense, verbose=self.verbose)
        if not res.converged:
            warnings.warn(
                f"DiffusionMap: the eigensolver stopped after {res.iterations} iterations with residual "
                f"{res.residuals.max().item():.2e} > tol={self.tol} (the product precision's floor?)",
                RuntimeWarning,
                stacklevel=2,
            )
        lam = torch.cat([torch.ones(1, dtype=torch.float64, device=device), res.eigenvalues.to(device)])
        U = torch.cat([(op.g / op.g.norm())[:, None], res.eigenvectors.to(device)], 1)
        psi = op.right_eigenvectors(U)
        psi[:, 0] = 1.0  # exact: ψ_0 = g / g up to rounding
        peak = psi[:, 1:].abs().argmax(0)
        psi[:, 1:] *= torch.sign(psi[:, 1:].gather(0, peak[None, :]))  # largest entry positive
        self._lam, self._psi = lam, psi
        self._embedding = self._coords(psi[:, 1:], lam[1:])
        self.n_iter_ = res.iterations
        self.n_products_ = res.products
        self._residuals = res.residuals
        return self

    def _coords(self, psi: Tensor, lam: Tensor) -> Tensor:
        t = float(self.t)
        return psi * (torch.sign(lam) * lam.abs().pow(t))[None, :]

    def _check_fitted(self, what: str) -> None:
        if not hasattr(self, "_psi"):
            raise ValueError(f"this DiffusionMap is not fitted yet: call fit before {what}")

    @property
    def eigenvalues_(self) -> np.ndarray | Tensor:
        self._check_fitted("eigenvalues_")
        return self._output(self._lam)

    @property
    def eigenvectors_(self) -> np.ndarray | Tensor:
        self._check_fitted("eigenvectors_")
        return self._output(self._psi)

    @property
    def embedding_(self) -> np.ndarray | Tensor:
        self._check_fitted("embedding_")
        return self._output(self._embedding)

    @property
    def residuals_(self) -> np.ndarray | Tensor:
        self._check_fitted("residuals_")
        return self._output(self._residuals)

    @property
    def stationary_(self) -> np.ndarray | Tensor:
        self._check_fitted("stationary_")
        return self._output(self.operator_.pi)

    @property
    def sigma_(self) -> np.ndarray | Tensor | None:
        self._check_fitted("sigma_")
        s = self.operator_.sigma
        return None if s is None else self._output(s)

    @property
    def intrinsic_dimension_(self) -> float | None:
        self._check_fitted("intrinsic_dimension_")
        return self.bandwidth_.intrinsic_dimension

    def fit_transform(self, X: object, y: object = None) -> np.ndarray | Tensor:
        """Fit, then the diffusion coordinates λ_k^t ψ_k(x_i), k = 1..n_components: (N, k)."""
        return self.fit(X).embedding_

    def transform(self, Y: object) -> np.ndarray | Tensor:
        """Nyström extension to new points Y (M, d): λ_k^t ψ_k(y) with
        ψ_k(y) = Σ_j K(y, x_j) w_j ψ_k(x_j) / (λ_k Σ_j K(y, x_j) w_j). Equals ``fit_transform``
        at the training points."""
        self._check_fitted("transform")
        op = self.operator_
        Yt, _ = to_tensor("Y", Y, device=op.X64.device)
        if Yt.shape[1] != self.n_features_in_:
            raise ValueError(f"Y has {Yt.shape[1]} features but the map was fitted on {self.n_features_in_}; they must match")
        dtype = self._dtype
        X, sigma = op.points(dtype)
        Yc = (Yt.double() - self._center).to(dtype).contiguous()
        psi = self._psi[:, 1:].to(dtype).contiguous()
        if sigma is None:
            Ppsi, _ = tiles.gaussian_softmax_apply(Yc, X, psi, op.beta, log_bias=torch.log(op.w).to(dtype))
        else:
            sy = _bandwidth.self_tuning_sigma_new(Yc, X).to(dtype)
            num = tiles.gaussian_matmat(Yc, X, psi, op.beta, col_scale=op.w.to(dtype), sigma_q=sy, sigma_k=sigma)
            den = tiles.gaussian_rowsum(Yc, X, op.beta, col_scale=op.w.to(dtype), sigma_q=sy, sigma_k=sigma)
            Ppsi = num / den.clamp_min(torch.finfo(dtype).tiny)[:, None]
        lam = self._lam[1:]
        return self._output(self._coords(Ppsi.double() / lam[None, :], lam))

    def _values(self, name: str, f: object) -> tuple[Tensor, bool]:
        t, _ = to_tensor(name, f, ndim=(1, 2), device=self.operator_.X64.device)
        if t.shape[0] != self.operator_.n:
            raise ValueError(f"{name} has {t.shape[0]} rows but the map was fitted on N={self.operator_.n} points")
        return (t.double()[:, None], True) if t.dim() == 1 else (t.double(), False)

    def carre_du_champ(self, f: object, g: object, *, scaled: bool = True) -> np.ndarray | Tensor:
        """Γ(f, g)_i = ½ Σ_j P_ij (f_j − f_i)(g_j − g_i) for functions on the training points, f and
        g (N,) or (N, m) (paired column by column). ``scaled``: Γ_β = 4β Γ ≈ ∇f·∇g."""
        self._check_fitted("carre_du_champ")
        ft, vec = self._values("f", f)
        gt, _ = self._values("g", g)
        if ft.shape != gt.shape:
            raise ValueError(f"f has shape {tuple(ft.shape)} but g has {tuple(gt.shape)}; they must match")
        out = geometry.carre_du_champ(self.operator_, ft, gt, dtype=self._dtype, scaled=scaled)
        return self._output(out[:, 0] if vec else out)

    def metric(self, coords: object = None, *, rows: object = None, scaled: bool = True) -> np.ndarray | Tensor:
        """The per-point k × k metric G_i[a, b] = Γ_β(c_a, c_b)_i of coordinates ``coords`` (N, k)
        (default: the diffusion coordinates), for the training points ``rows`` (indices; default
        all): (R, k, k). Products are streamed; memory O(N · 16) plus the output."""
        self._check_fitted("metric")
        C, _ = self._values("coords", self._embedding if coords is None else coords)
        idx = None
        if rows is not None:
            idx = torch.as_tensor(np.asarray(rows) if not isinstance(rows, torch.Tensor) else rows, device=C.device).long().reshape(-1)
            if idx.numel() and (int(idx.min()) < -self.operator_.n or int(idx.max()) >= self.operator_.n):
                raise ValueError(f"rows must index the N={self.operator_.n} training points")
            idx = idx % self.operator_.n
        return self._output(geometry.metric(self.operator_, C, dtype=self._dtype, rows=idx, scaled=scaled))
