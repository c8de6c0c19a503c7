"""Tiled Gaussian-kernel reductions: the public functions, their PyTorch operators and dispatch.

    gaussian_matmat         out = diag(row_scale) K(Q, K) diag(col_scale) V
    gaussian_rowsum         K(Q, K) col_scale
    gaussian_matmat_sym     diag(scale) K(X, X) diag(scale) V, each off-diagonal tile once
    gaussian_softmax_apply  softmax_j(−beta‖q_i − k_j‖² + log_bias_j) V and its log-sum-exp
    knn                     the k nearest keys of every query (k ≤ 64)
    bgh_sums                S(ε) = Σ_ij exp(−‖x_i − x_j‖²/ε) for a grid of ε, in float64

K_ij = exp(−beta ‖q_i − k_j‖² / (sigma_q_i sigma_k_j)), distances as ‖q‖² + ‖k‖² − 2 q·k clamped
at 0 after subtracting the keys' mean from both (float32 distances carry ~1e-7·(‖q‖² + ‖k‖²)
absolute error, so the norms are taken about the cloud's centre, not the origin).
Inputs are float32 or float64 2-D tensors; computation stays in the input dtype on every
backend (float32 kernels run on float16 tensor cores through exact hi + lo splits, at float32
accuracy; see the kernel section). Each function validates, then calls one ``torch.library``
custom op (in eager mode, with nothing for autograd to record, its implementation directly)
whose implementation asks ``_runtime.backend_for`` and runs the reference (``reference.py``,
chunked, never Nq x Nk) or the Triton launchers. Memory O(N·(d + m)). ``PackedProduct`` packs
the points of one product once for many value blocks (iterative solvers).

The ops have fake implementations (torch.compile traces them without graph breaks).
``gaussian_matmat``, ``gaussian_rowsum`` and ``gaussian_softmax_apply`` are differentiable in the
points, values, scales and log-bias (each gradient is a few more products: the autograd section);
gradients in the per-point bandwidths, and of ``gaussian_matmat_sym``, raise at the backward. The
symmetric kernel adds with float atomics, so its float32 results vary in the last bits from run to run.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import NamedTuple

import torch

from .. import _checks, _host, _runtime
from . import reference

Tensor = torch.Tensor

DTYPES: tuple[torch.dtype, ...] = (torch.float32, torch.float64)
MAX_KNN = 64
MAX_EPS = 64

__all__ = ["gaussian_matmat", "gaussian_rowsum", "gaussian_matmat_sym", "gaussian_softmax_apply", "knn", "bgh_sums"]


def _points(name: str, x: object, like: Tensor | None = None, like_name: str = "") -> Tensor:
    """A 2-D float32/float64 tensor with at least one row and one column (contiguous copy if not)."""
    x = _checks.check_tensor(name, x, dtypes=DTYPES, min_ndim=2)
    if x.dim() != 2 or x.shape[0] < 1 or x.shape[1] < 1:
        raise ValueError(f"{name} must be 2-D (points, features) with both sizes >= 1, got shape {tuple(x.shape)}")
    if like is not None:
        _checks.check_like(name, x, like_name, like, shape=False)
    return x.contiguous()


def _point_sets(Q: object, K: object) -> tuple[Tensor, Tensor]:
    """Queries and keys as ``_points``; one set given twice stays one (``K is Q``: the products take the
    queries-are-keys kernels) even where it needs a contiguous copy."""
    same = K is Q
    Q = _points("Q", Q)
    return Q, Q if same else _points("K", K, Q, "Q")


def _features(name: str, x: Tensor, ref_name: str, ref: Tensor) -> None:
    if x.shape[1] != ref.shape[1]:
        raise ValueError(
            f"{name} has {x.shape[1]} features (shape {tuple(x.shape)}) but {ref_name} has {ref.shape[1]}; they must match"
        )


def _vector(name: str, x: object, n: int, like: Tensor, like_name: str, why: str) -> Tensor | None:
    """None, or a 1-D tensor of length ``n`` with the dtype and device of ``like``."""
    if x is None:
        return None
    x = _checks.check_tensor(name, x, dtypes=DTYPES)
    _checks.check_like(name, x, like_name, like, shape=False)
    _checks.check_shape(name, x, (n,), why)
    return x.contiguous()


def _values(name: str, x: Tensor, n: int, like: Tensor, like_name: str) -> Tensor:
    """A 2-D (n, m) block of columns, m >= 1, with the dtype and device of ``like``."""
    x = _checks.check_tensor(name, x, dtypes=DTYPES, min_ndim=2)
    _checks.check_like(name, x, like_name, like, shape=False)
    if x.dim() != 2 or x.shape[0] != n or x.shape[1] < 1:
        raise ValueError(f"{name} must have shape ({n}, m) with m >= 1 (one row per key), got {tuple(x.shape)}")
    return x.contiguous()


def _beta(beta: object) -> float:
    if isinstance(beta, bool) or not isinstance(beta, numbers.Real):
        raise TypeError(f"beta must be a real number, got {type(beta).__name__}")
    beta = float(beta)
    if not (math.isfinite(beta) and beta > 0):
        raise ValueError(f"beta={beta} must be finite and > 0")
    return beta


def _sigmas(sigma_q: object, sigma_k: object, Q: Tensor, K: Tensor) -> tuple[Tensor | None, Tensor | None]:
    if (sigma_q is None) != (sigma_k is None):
        raise ValueError("sigma_q and sigma_k must be given together (per-point bandwidths of queries and keys) or not at all")
    return (
        _vector("sigma_q", sigma_q, Q.shape[0], Q, "Q", "one bandwidth per query"),
        _vector("sigma_k", sigma_k, K.shape[0], K, "K", "one bandwidth per key"),
    )


# custom ops: implementation (backend choice) and fake (output metadata)


def _call(op, impl, *args):
    """``op(*args)`` under torch.compile, and where autograd would record the call (the op's autograd
    formula, or the error of an op without one); otherwise ``impl(*args)`` directly, without the custom
    op's dispatch layers (~10 µs of host time per call on this project's CPU)."""
    return op(*args) if _through_op(args) else impl(*args)


def _through_op(args: tuple) -> bool:
    """Whether a call with ``args`` must go through the custom op: under torch.compile, or where autograd
    would record it."""
    return torch.compiler.is_compiling() or (
        torch.is_grad_enabled() and any(isinstance(a, Tensor) and a.requires_grad for a in args)
    )


def _matmat_impl(
    Q: Tensor,
    K: Tensor,
    V: Tensor,
    beta: float,
    row_scale: Tensor | None,
    col_scale: Tensor | None,
    sigma_q: Tensor | None,
    sigma_k: Tensor | None,
) -> Tensor:
    if _runtime.backend_for(Q.device) == "reference":
        return reference.gaussian_matmat_ref(
            Q, K, V, beta, row_scale=row_scale, col_scale=col_scale, sigma_q=sigma_q, sigma_k=sigma_k, same=K is Q
        )
    return _launch_matmat(Q, K, V, beta, row_scale=row_scale, col_scale=col_scale, sigma_q=sigma_q, sigma_k=sigma_k)


gaussian_matmat_op = torch.library.custom_op("flashmarkov::gaussian_matmat", _matmat_impl, mutates_args=())


@gaussian_matmat_op.register_fake
def _(Q, K, V, beta, row_scale, col_scale, sigma_q, sigma_k):
    return Q.new_empty(Q.shape[0], V.shape[1])


def _rowsum_impl(
    Q: Tensor, K: Tensor, beta: float, col_scale: Tensor | None, sigma_q: Tensor | None, sigma_k: Tensor | None
) -> Tensor:
    if _runtime.backend_for(Q.device) == "reference":
        return reference.gaussian_rowsum_ref(Q, K, beta, col_scale=col_scale, sigma_q=sigma_q, sigma_k=sigma_k, same=K is Q)
    return _launch_rowsum(Q, K, beta, col_scale=col_scale, sigma_q=sigma_q, sigma_k=sigma_k)


gaussian_rowsum_op = torch.library.custom_op("flashmarkov::gaussian_rowsum", _rowsum_impl, mutates_args=())


@gaussian_rowsum_op.register_fake
def _(Q, K, beta, col_scale, sigma_q, sigma_k):
    return Q.new_empty(Q.shape[0])


def _matmat_sym_impl(X: Tensor, V: Tensor, beta: float, scale: Tensor | None, sigma: Tensor | None) -> Tensor:
    if _runtime.backend_for(X.device) == "reference":
        return reference.gaussian_matmat_sym_ref(X, V, beta, scale=scale, sigma=sigma)
    return _launch_matmat_sym(X, V, beta, scale=scale, sigma=sigma)


gaussian_matmat_sym_op = torch.library.custom_op("flashmarkov::gaussian_matmat_sym", _matmat_sym_impl, mutates_args=())


@gaussian_matmat_sym_op.register_fake
def _(X, V, beta, scale, sigma):
    return X.new_empty(X.shape[0], V.shape[1])


def _softmax_apply_impl(
    Q: Tensor, K: Tensor, V: Tensor, beta: float, log_bias: Tensor | None
) -> tuple[Tensor, Tensor]:
    if _runtime.backend_for(Q.device) == "reference":
        out, lse = reference.gaussian_softmax_apply_ref(Q, K, V, beta, log_bias=log_bias)
        return out, lse
    return _launch_softmax_apply(Q, K, V, beta, log_bias=log_bias)


gaussian_softmax_apply_op = torch.library.custom_op(
    "flashmarkov::gaussian_softmax_apply", _softmax_apply_impl, mutates_args=()
)


@gaussian_softmax_apply_op.register_fake
def _(Q, K, V, beta, log_bias):
    return Q.new_empty(Q.shape[0], V.shape[1]), Q.new_empty(Q.shape[0])


# autograd. With A_ij = exp(−β‖q_i − k_j‖² / (σ_i σ_j)) (σ ≡ 1 without per-point bandwidths) every gradient is
# a few more products of the same kernels (math.md §4's primitive and its transpose), with values widened by
# row-wise outer products: for weights w_ij on the pairs, Σ_j w_ij (q_i − k_j) = (Σ_j w_ij) q_i − Σ_j w_ij k_j,
# and Σ_j A_ij c_j (g_i · v_j) k_j = Σ_c g_ic [A diag(c) (V ⊗ K)]_(i, c, :). Points enter those sums centred
# (the kernel's own centring: distances do not change, the cancellation in (Σ w) q − Σ w k does). Gradients in
# the bandwidths σ and in β (a float) are not implemented and raise at the backward, naming what asked.


def _not_differentiable(ctx, names: tuple[str | None, ...], fn: str) -> None:
    wanted = [name for name, need in zip(names, ctx.needs_input_grad, strict=True) if need and name is not None]
    if wanted:
        raise NotImplementedError(
            f"{fn}: gradients with respect to {', '.join(wanted)} are not implemented (detach them); the points, "
            "values, scales and log-bias are differentiable"
        )


def _outer(a: Tensor, b: Tensor) -> Tensor:
    """(N, m), (N, d) → (N, m·d): the row-wise outer products a_i ⊗ b_i."""
    return (a[:, :, None] * b[:, None, :]).reshape(a.shape[0], -1)


def _contract(a: Tensor, y: Tensor) -> Tensor:
    """(N, m), (N, m·d) → (N, d): Σ_c a_ic y_i(c, ·)."""
    return (a[:, :, None] * y.reshape(a.shape[0], a.shape[1], -1)).sum(1)


def _centred(Q: Tensor, K: Tensor) -> tuple[Tensor, Tensor]:
    """Q and K less the keys' centre (``reference.centre``, as the kernels subtract)."""
    ctr = reference.centre(K)
    return Q - ctr, K - ctr


def _div(x: Tensor, sigma: Tensor | None) -> Tensor:
    return x if sigma is None else x / sigma[:, None]


def _matmat_grads(beta, Q, K, V, G, row_scale, col_scale, sigma_q, sigma_k, need) -> tuple:
    """(dQ, dK, dV, d row_scale, d col_scale) of out = diag(r) A diag(c) V against out's gradient G, each
    None unless ``need`` (five flags) asks for it. Two products at most: A diag(c) [V | V/σ_k | (V/σ_k) ⊗ K]
    for the query side and Aᵀ diag(r) [G | G/σ_q | (G/σ_q) ⊗ Q] for the key side (parts only as needed)."""
    need_q, need_k, need_v, need_r, need_c = need
    Qc, Kc = _centred(Q, K) if need_q or need_k else (Q, K)
    m = V.shape[1]
    dQ = dK = dV = dr = dc = None
    if need_q or need_r:
        Vs = _div(V, sigma_k)
        parts = ([V] if need_r else []) + ([Vs, _outer(Vs, Kc)] if need_q else [])
        u = gaussian_matmat_op(Q, K, torch.cat(parts, 1), beta, None, col_scale, sigma_q, sigma_k)
        if need_r:
            dr, u = (G * u[:, :m]).sum(1), u[:, m:]
        if need_q:
            r = _div(G, sigma_q) if row_scale is None else _div(G * row_scale[:, None], sigma_q)
            dQ = -2.0 * beta * ((r * u[:, :m]).sum(1, keepdim=True) * Qc - _contract(r, u[:, m:]))
    if need_k or need_v or need_c:
        Gs = _div(G, sigma_q)
        parts = ([G] if need_v or need_c else []) + ([Gs, _outer(Gs, Qc)] if need_k else [])
        t = gaussian_matmat_op(K, Q, torch.cat(parts, 1), beta, None, row_scale, sigma_k, sigma_q)
        if need_v or need_c:
            if need_c:
                dc = (V * t[:, :m]).sum(1)
            if need_v:
                dV = t[:, :m] if col_scale is None else t[:, :m] * col_scale[:, None]
            t = t[:, m:]
        if need_k:
            c = _div(V, sigma_k) if col_scale is None else _div(V * col_scale[:, None], sigma_k)
            dK = -2.0 * beta * ((c * t[:, :m]).sum(1, keepdim=True) * Kc - _contract(c, t[:, m:]))
    return dQ, dK, dV, dr, dc


def _matmat_setup(ctx, inputs, output) -> None:
    Q, K, V, beta, row_scale, col_scale, sigma_q, sigma_k = inputs
    ctx.save_for_backward(Q, K, V, row_scale, col_scale, sigma_q, sigma_k)
    ctx.beta, ctx.same = beta, Q is K


def _matmat_backward(ctx, d_out):
    """Gradients of ``gaussian_matmat`` in Q, K, V, row_scale and col_scale (``_matmat_grads``)."""
    _not_differentiable(ctx, (None,) * 6 + ("sigma_q", "sigma_k"), "gaussian_matmat")
    Q, K, V, row_scale, col_scale, sigma_q, sigma_k = ctx.saved_tensors
    Q = K if ctx.same else Q
    n = ctx.needs_input_grad
    dQ, dK, dV, dr, dc = _matmat_grads(ctx.beta, Q, K, V, d_out.contiguous(), row_scale, col_scale, sigma_q, sigma_k,
                                       (n[0], n[1], n[2], n[4], n[5]))
    return dQ, dK, dV, None, dr, dc, None, None


gaussian_matmat_op.register_autograd(_matmat_backward, setup_context=_matmat_setup)


def _rowsum_setup(ctx, inputs, output) -> None:
    Q, K, beta, col_scale, sigma_q, sigma_k = inputs
    ctx.save_for_backward(Q, K, col_scale, sigma_q, sigma_k)
    ctx.beta, ctx.same = beta, Q is K


def _rowsum_backward(ctx, d_out):
    """``gaussian_rowsum`` is ``gaussian_matmat`` with V a column of ones."""
    _not_differentiable(ctx, (None,) * 4 + ("sigma_q", "sigma_k"), "gaussian_rowsum")
    Q, K, col_scale, sigma_q, sigma_k = ctx.saved_tensors
    Q = K if ctx.same else Q
    n = ctx.needs_input_grad
    ones = K.new_ones(K.shape[0], 1)
    dQ, dK, _, _, dc = _matmat_grads(ctx.beta, Q, K, ones, d_out[:, None].contiguous(), None, col_scale, sigma_q, sigma_k,
                                     (n[0], n[1], False, False, n[3]))
    return dQ, dK, None, dc, None, None


gaussian_rowsum_op.register_autograd(_rowsum_backward, setup_context=_rowsum_setup)


def _softmax_apply_setup(ctx, inputs, output) -> None:
    Q, K, V, beta, log_bias = inputs
    ctx.save_for_backward(Q, K, V, log_bias, *output)
    ctx.beta, ctx.same = beta, Q is K


def _softmax_apply_backward(ctx, d_out, d_lse):
    """With P_ij = exp(s_ij − lse_i), s_ij = −β‖q_i − k_j‖² + b_j: ds_ij = P_ij (g_i · v_j + h_i), h_i =
    d_lse_i − g_i · out_i. Query side: one softmax-apply of [V ⊗ K | K] (Σ_j ds_ij k_j), Σ_j ds_ij = d_lse_i on
    rows with weight. Key side: Σ_i P_ij x_i = exp(b_j + lse'_j) · softmax-apply(K, Q, x, bias −lse_i)_j (lse'
    its log-sum-exp; rows without weight, lse −inf, take no part) of x = [G | h | G ⊗ Q | h Q], which gives dV,
    d log_bias_j = Σ_i ds_ij and Σ_i ds_ij q_i. lse does not depend on V."""
    Q, K, V, log_bias, out, lse = ctx.saved_tensors
    Q = K if ctx.same else Q
    need_q, need_k, need_v, _, need_b = ctx.needs_input_grad
    G = torch.zeros_like(out) if d_out is None else d_out.contiguous()
    gl = torch.zeros_like(lse) if d_lse is None else d_lse
    live = torch.isfinite(lse)
    h = torch.where(live, gl - (G * out).sum(1), 0.0)[:, None]
    Qc, Kc = _centred(Q, K) if need_q or need_k else (Q, K)
    m, d, dQ, dK, dV, db = V.shape[1], K.shape[1], None, None, None, None
    if need_q:
        y, _ = gaussian_softmax_apply_op(Q, K, torch.cat([_outer(V, Kc), Kc], 1), ctx.beta, log_bias)
        s = _contract(G, y[:, :-d]) + h * y[:, -d:]
        dQ = -2.0 * ctx.beta * (torch.where(live, gl, 0.0)[:, None] * Qc - s)
    if need_k or need_v or need_b:
        parts = [G] + ([h] if need_k or need_b else []) + ([_outer(G, Qc), h * Qc] if need_k else [])
        back = torch.where(live, -lse, -torch.inf)
        u, lse_t = gaussian_softmax_apply_op(K, Q, torch.cat(parts, 1), ctx.beta, back)
        factor = lse_t.double() if log_bias is None else lse_t.double() + log_bias.double()
        u = u * torch.exp(factor).to(u.dtype)[:, None]  # u_j = Σ_i P_ij x_i
        dV = u[:, :m] if need_v else None
        if need_k or need_b:
            ds = (V * u[:, :m]).sum(1) + u[:, m]  # Σ_i ds_ij
            db = ds if need_b else None
            if need_k:
                sq = _contract(V, u[:, m + 1:-d]) + u[:, -d:]  # Σ_i ds_ij q_i
                dK = -2.0 * ctx.beta * (ds[:, None] * Kc - sq)
    return dQ, dK, dV, None, db


gaussian_softmax_apply_op.register_autograd(_softmax_apply_backward, setup_context=_softmax_apply_setup)


@torch.library.custom_op("flashmarkov::knn", mutates_args=())
def knn_op(Q: Tensor, K: Tensor, k: int, exclude_self: bool) -> tuple[Tensor, Tensor]:
    if _runtime.backend_for(Q.device) == "reference":
        return reference.knn_ref(Q, K, k, exclude_self=exclude_self)
    return _launch_knn(Q, K, k, exclude_self=exclude_self)


@knn_op.register_fake
def _(Q, K, k, exclude_self):
    return Q.new_empty(Q.shape[0], k), Q.new_empty(Q.shape[0], k, dtype=torch.int64)


@torch.library.custom_op("flashmarkov::bgh_sums", mutates_args=())
def bgh_sums_op(X: Tensor, eps: Tensor) -> Tensor:
    if _runtime.backend_for(X.device) == "reference":
        return reference.bgh_sums_ref(X, eps)
    return _launch_bgh_sums(X, eps)


@bgh_sums_op.register_fake
def _(X, eps):
    return X.new_empty(eps.shape[0], dtype=torch.float64)


# public functions


def gaussian_matmat(
    Q: Tensor,
    K: Tensor,
    V: Tensor,
    beta: float,
    *,
    row_scale: Tensor | None = None,
    col_scale: Tensor | None = None,
    sigma_q: Tensor | None = None,
    sigma_k: Tensor | None = None,
) -> Tensor:
    """out_i = row_scale_i · Σ_j K_ij · col_scale_j · V_j.

    Args:
        Q: (Nq, d) queries; K: (Nk, d) keys; V: (Nk, m) values. float32 or float64, one dtype
            and device for every tensor argument.
        beta: > 0, the kernel's inverse squared length.
        row_scale: (Nq,) or None (ones); col_scale: (Nk,) or None (ones).
        sigma_q, sigma_k: per-point bandwidths (Nq,) and (Nk,) (positive), both or neither.

    Returns:
        (Nq, m) in the input dtype. The transposed product is ``gaussian_matmat(K, Q, ...)``.
        Differentiable in Q, K, V, row_scale and col_scale (not in sigma_q, sigma_k or beta).
    """
    Q, K = _point_sets(Q, K)
    _features("K", K, "Q", Q)
    V = _values("V", V, K.shape[0], Q, "Q")
    row_scale = _vector("row_scale", row_scale, Q.shape[0], Q, "Q", "one scale per query")
    col_scale = _vector("col_scale", col_scale, K.shape[0], Q, "Q", "one scale per key")
    sigma_q, sigma_k = _sigmas(sigma_q, sigma_k, Q, K)
    return _call(gaussian_matmat_op, _matmat_impl, Q, K, V, _beta(beta), row_scale, col_scale, sigma_q, sigma_k)


class PackedProduct:
    """``gaussian_matmat(Q, K, V, beta, …)`` (``softmax=False``) or ``gaussian_softmax_apply(Q, K, V, beta,
    log_bias=…)`` (``softmax=True``) for many value blocks V, with the points centred, scaled, split and
    padded once: on the Triton path each public call packs them again (~25 small launches of host
    time, which iterative solvers would pay every step). Q, K, the bandwidths and the log-bias are
    fixed here; V and the scales come per call. On the reference backend, under torch.compile and
    where autograd would record the call, a call is the public function itself. The packed operands
    hold ~128 bytes per point and side (float32: the float16 operands) until the object is dropped;
    an in-place change of a fixed tensor (its version counter) packs them again (a non-contiguous
    one is held as a contiguous copy, which such a change does not reach)."""

    def __init__(
        self, Q: Tensor, K: Tensor, beta: float, *, softmax: bool = False, sigma_q: Tensor | None = None,
        sigma_k: Tensor | None = None, log_bias: Tensor | None = None,
    ) -> None:
        Q, K = _point_sets(Q, K)
        _features("K", K, "Q", Q)
        if softmax and (sigma_q is not None or sigma_k is not None):
            raise ValueError("per-point bandwidths are not supported with softmax=True")
        if not softmax and log_bias is not None:
            raise ValueError("log_bias needs softmax=True")
        self.Q, self.K, self.beta, self.softmax = Q, K, _beta(beta), bool(softmax)
        self.sigma_q, self.sigma_k = _sigmas(sigma_q, sigma_k, Q, K)
        self.log_bias = _vector("log_bias", log_bias, K.shape[0], Q, "Q", "one bias per key")
        self._fixed = tuple(t for t in (Q, K, self.sigma_q, self.sigma_k, self.log_bias) if t is not None)
        self._ops: Operands | None = None
        self._versions: tuple[int, ...] = ()  # the fixed tensors' version counters when packed

    def __call__(
        self, V: Tensor, *, row_scale: Tensor | None = None, col_scale: Tensor | None = None
    ) -> Tensor | tuple[Tensor, Tensor]:
        """M·V (diag(row_scale) K diag(col_scale) V) without ``softmax``; with it (out, lse) and no scales."""
        Q, K = self.Q, self.K
        V = _values("V", V, K.shape[0], Q, "Q")
        if self.softmax:
            if row_scale is not None or col_scale is not None:
                raise ValueError("row_scale and col_scale are not supported with softmax=True")
            op, impl, args = gaussian_softmax_apply_op, _softmax_apply_impl, (Q, K, V, self.beta, self.log_bias)
        else:
            row_scale = _vector("row_scale", row_scale, Q.shape[0], Q, "Q", "one scale per query")
            col_scale = _vector("col_scale", col_scale, K.shape[0], Q, "Q", "one scale per key")
            op, impl = gaussian_matmat_op, _matmat_impl
            args = (Q, K, V, self.beta, row_scale, col_scale, self.sigma_q, self.sigma_k)
        if _through_op(args):
            return op(*args)
        if _runtime.backend_for(Q.device) == "reference":
            return impl(*args)
        versions = tuple(t._version for t in self._fixed)
        if self._ops is None or self._versions != versions:
            self._ops = _pack_operands(
                Q, K, self.beta, job="softmax" if self.softmax else "matmat", sigma_q=self.sigma_q, sigma_k=self.sigma_k,
                log_bias=self.log_bias,
            )
            self._versions = versions
        if self.softmax:
            return _apply(self._ops, V)
        return _apply(self._ops, _scaled(V, col_scale), row_scale)[0]


def gaussian_rowsum(
    Q: Tensor,
    K: Tensor,
    beta: float,
    *,
    col_scale: Tensor | None = None,
    sigma_q: Tensor | None = None,
    sigma_k: Tensor | None = None,
) -> Tensor:
    """Σ_j K_ij · col_scale_j: (Nq,) in the input dtype. Arguments as ``gaussian_matmat``."""
    Q, K = _point_sets(Q, K)
    _features("K", K, "Q", Q)
    col_scale = _vector("col_scale", col_scale, K.shape[0], Q, "Q", "one scale per key")
    sigma_q, sigma_k = _sigmas(sigma_q, sigma_k, Q, K)
    return _call(gaussian_rowsum_op, _rowsum_impl, Q, K, _beta(beta), col_scale, sigma_q, sigma_k)


def gaussian_matmat_sym(
    X: Tensor, V: Tensor, beta: float, *, scale: Tensor | None = None, sigma: Tensor | None = None
) -> Tensor:
    """diag(scale) · K(X, X) · diag(scale) · V: (N, m) in the input dtype.

    The Triton kernel visits only tiles on and above the diagonal and applies each to both
    sides (half the exponentials of ``gaussian_matmat``); the transposed side accumulates with
    atomics, so float32 results vary in the last bits from run to run. The diagonal distance
    is exactly 0. ``scale`` (N,) or None (ones); ``sigma`` (N,) per-point bandwidths or None.
    """
    X = _points("X", X)
    V = _values("V", V, X.shape[0], X, "X")
    scale = _vector("scale", scale, X.shape[0], X, "X", "one scale per point")
    sigma = _vector("sigma", sigma, X.shape[0], X, "X", "one bandwidth per point")
    return _call(gaussian_matmat_sym_op, _matmat_sym_impl, X, V, _beta(beta), scale, sigma)


def gaussian_softmax_apply(
    Q: Tensor, K: Tensor, V: Tensor, beta: float, *, log_bias: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """Gaussian-score attention with a per-key log-bias.

    s_ij = −beta ‖q_i − k_j‖² + log_bias_j;  out_i = Σ_j softmax_j(s_ij) V_j;  lse_i = log Σ_j exp(s_ij).
    An online maximum keeps far-away queries exact (no 0/0). Keys with log_bias −inf weigh 0; a
    row with every weight 0 gets out 0 and lse −inf.

    Returns:
        (out (Nq, m), lse (Nq,)) in the input dtype; both differentiable in Q, K, V (out only) and log_bias.
    """
    Q, K = _point_sets(Q, K)
    _features("K", K, "Q", Q)
    V = _values("V", V, K.shape[0], Q, "Q")
    log_bias = _vector("log_bias", log_bias, K.shape[0], Q, "Q", "one bias per key")
    return _call(gaussian_softmax_apply_op, _softmax_apply_impl, Q, K, V, _beta(beta), log_bias)


def knn(Q: Tensor, K: Tensor, k: int, *, exclude_self: bool = False) -> tuple[Tensor, Tensor]:
    """The ``k`` nearest keys of every query (1 <= k <= 64).

    Returns:
        (dist2 (Nq, k) squared distances ascending in the input dtype, index (Nq, k) int64);
        ties go to the smaller index. ``exclude_self`` (Q is K, so Nq == Nk) drops j == i.
    """
    Q, K = _point_sets(Q, K)
    _features("K", K, "Q", Q)
    _checks.check_flag("exclude_self", exclude_self)
    if isinstance(k, bool) or not isinstance(k, numbers.Integral):
        raise TypeError(f"k must be an int, got {type(k).__name__}")
    if exclude_self and Q.shape[0] != K.shape[0]:
        raise ValueError(f"exclude_self=True needs Q is K, but Q has {Q.shape[0]} points and K {K.shape[0]}")
    available = K.shape[0] - int(exclude_self)
    if not 1 <= k <= min(MAX_KNN, available):
        raise ValueError(f"k={k} must be in [1, {min(MAX_KNN, available)}] ({available} candidate keys, at most {MAX_KNN})")
    return knn_op(Q, K, int(k), exclude_self)


def bgh_sums(X: Tensor, eps: Tensor) -> Tensor:
    """S(ε) = Σ_ij exp(−‖x_i − x_j‖² / ε) for every ε of ``eps`` (n,), 1 <= n <= 64, ε > 0;
    all pairs including i == j (distance exactly 0), one pass over the tiles. Returns (n,) float64."""
    X = _points("X", X)
    eps = _checks.check_tensor("eps", eps, dtypes=DTYPES)
    if eps.dim() != 1 or not 1 <= eps.shape[0] <= MAX_EPS:
        raise ValueError(f"eps must be 1-D with 1 to {MAX_EPS} entries, got shape {tuple(eps.shape)}")
    if eps.device != X.device:
        raise ValueError(f"eps is on {eps.device} but X is on {X.device}; they must match")
    if not torch.compiler.is_compiling():
        bad = ~(torch.isfinite(eps) & (eps > 0))
        if bool(bad.any()):
            raise ValueError(f"eps must be finite and > 0, got {eps[bad][0].item()} at index {int(bad.nonzero()[0, 0])}")
    return bgh_sums_op(X, eps.contiguous())


# Triton kernels
#
# A program owns BLOCK_M query rows and streams key tiles of BLOCK_N rows. Exponents are
#
#     s_ij = g · q̃_i·k̃_j + kt_j + qt_i
#       Gaussian: g q̃·k̃ = 2c q·k, kt = −c‖k‖² (+ log-bias), qt = −c‖q‖²: s = −c‖q − k‖²
#       kNN, BGH: g q̃·k̃ = −2 q·k, kt = ‖k‖², qt = ‖q‖²: s = ‖q − k‖² (clamped at 0)
#
# with c = beta·log2(e) and exp2 for float32, c = beta and exp for float64. One FMA per pair
# gives g·dot + kt; the row term qt enters only the row's running maximum (or, for the
# symmetric and per-point-bandwidth variants, one add per pair). The Gaussian kernels do not
# clamp s at 0: it is positive only by rounding, by as much as the reference's clamp removes.
# Pack kernels lay the operands out once per call (O(N·(d + m)) work and memory): rows padded
# to the tile multiple and features to the dot width, so tiles load without masks, and kt is
# −inf (Gaussian) or +inf (kNN, BGH) on padded keys, which then weigh nothing without a select.
#
# float32 runs on tensor cores at float32 accuracy:
# * q·k: points are scaled by powers of two (max |q̃| in [2^7, 2^8); g absorbs the factors)
#   and split into float16 hi + lo parts (22 significant bits); three float16 dots
#   hi·hi + hi·lo + lo·hi with float32 accumulation give each product to ~2^−21;
# * P·V: P is split in registers into float16 hi + lo; the values (column scale folded in) are
#   scaled per column by a power of two to a maximum in [2^13, 2^14) and split; three float16
#   dots. P stays in [0, 1] because each row's running maximum is subtracted (online, as in
#   flash attention) and restored at the end; the symmetric kernel needs none, since s_ii = 0
#   is every row's maximum and the diagonal tile comes first.
# The power-of-two factors are read off the maxima's exponent bits in-kernel (exact). float64
# runs one fp64 dot each (input_precision "ieee"). The interpreter runs the same code.

_LOG2E = 1.4426950408889634
# SAME products fold both squared-norm terms into the operands (FOLD, see the kernel); a switch for
# measuring the two forms against each other
FOLD = True

try:
    import triton
    import triton.language as tl

    _jit = triton.jit
except ImportError:  # platforms without triton run the reference only
    triton = None
    _jit = lambda fn: fn  # noqa: E731


@_jit
def _load_tile(p, o_r, o_c, ld):
    """[len(o_r), len(o_c)] tile of a padded row-major matrix with leading dimension ``ld``."""
    return tl.load(p + o_r[:, None] * ld + o_c[None, :])


@_jit
def _pow2_factor(top, TOP: tl.constexpr):
    """2^e (float32) with top · 2^−e in [2^TOP, 2^(TOP+1)), read off top's exponent bits (exact,
    the same on every device); 1 where top is 0."""
    e = ((top.to(tl.int32, bitcast=True) >> 23) & 0xFF) - TOP
    return tl.where(top > 0, (tl.maximum(e, 1) << 23).to(tl.float32, bitcast=True), 1.0)


@_jit
def _fold_scale(top, c, D: tl.constexpr):
    """G = 2^e with c·D·top² / G in [2^13, 2^14), or 1 where that G would be < 1: the folded
    operands hold s / G (FOLD). G > 1 keeps large exponents inside float16's range; below
    that the operands hold s itself and the loop needs no multiply per pair. (Scaling small
    operands up to G < 1 bought nothing: an exponent's error matters in absolute terms, and
    float16's subnormal spacing 2^−24 bounds what the smaller operands lose.)"""
    return tl.maximum(_pow2_factor(c * D * top * top, 13), 1.0)


@_jit
def _centred_chunk(x_ptr, ctr_ptr, o_r, m_r, o_c, d):
    """[BLOCK, BLOCK_D] chunk of x − centre; zero on padded rows and columns."""
    m_c = o_c < d
    b_x = tl.load(x_ptr + o_r[:, None] * d + o_c[None, :], mask=m_r[:, None] & m_c[None, :], other=0.0)
    return tl.where(m_r[:, None], b_x - tl.load(ctr_ptr + o_c, mask=m_c, other=0.0)[None, :], 0.0)


@_jit
def _stats_kernel(
    x_ptr,            # [n, d] points
    part_ptr,         # [n_part, 3, BLOCK_D * D_CHUNKS] float64 out: column sums, minima, maxima of this program's rows
    n, d,
    rows_per_prog,    # rows per program (a multiple of BLOCK)
    BLOCK: tl.constexpr, BLOCK_D: tl.constexpr, D_CHUNKS: tl.constexpr, INTERPRET: tl.constexpr,
):
    """First half of ``_centre``: per program, the float64 column sums and the extremes of its rows."""
    i_p = tl.program_id(0)
    D: tl.constexpr = BLOCK_D * D_CHUNKS
    r_lo = i_p.to(tl.int64) * rows_per_prog
    r_hi = tl.minimum(r_lo + rows_per_prog, n)
    p_part = part_ptr + i_p.to(tl.int64) * 3 * D
    for i_d in tl.static_range(D_CHUNKS):
        o_c = i_d * BLOCK_D + tl.arange(0, BLOCK_D)
        m_c = o_c < d
        b_sum = tl.zeros([BLOCK_D], dtype=tl.float64)
        b_lo = tl.full([BLOCK_D], float("inf"), dtype=x_ptr.dtype.element_ty)
        b_hi = tl.full([BLOCK_D], float("-inf"), dtype=x_ptr.dtype.element_ty)
        if INTERPRET:  # the interpreter cannot take a runtime range bound
            r0 = r_lo
            while r0 < r_hi:
                b_sum, b_lo, b_hi = _stats_rows(x_ptr, r0, r_hi, o_c, m_c, d, b_sum, b_lo, b_hi, BLOCK)
                r0 += BLOCK
        else:
            for r0 in range(r_lo, r_hi, BLOCK):
                b_sum, b_lo, b_hi = _stats_rows(x_ptr, r0, r_hi, o_c, m_c, d, b_sum, b_lo, b_hi, BLOCK)
        tl.store(p_part + o_c, b_sum)
        tl.store(p_part + D + o_c, b_lo.to(tl.float64))
        tl.store(p_part + 2 * D + o_c, b_hi.to(tl.float64))


@_jit
def _stats_rows(x_ptr, r0, r_hi, o_c, m_c, d, b_sum, b_lo, b_hi, BLOCK: tl.constexpr):
    """(sums, minima, maxima) updated with rows [r0, min(r0 + BLOCK, r_hi)) of the columns o_c."""
    o_r = r0 + tl.arange(0, BLOCK)
    m = (o_r < r_hi)[:, None] & m_c[None, :]
    b_x = tl.load(x_ptr + o_r[:, None] * d + o_c[None, :], mask=m, other=0.0)
    b_sum += tl.sum(b_x.to(tl.float64), 0)
    b_lo = tl.minimum(b_lo, tl.min(tl.where(m, b_x, float("inf")), 0))
    b_hi = tl.maximum(b_hi, tl.max(tl.where(m, b_x, float("-inf")), 0))
    return b_sum, b_lo, b_hi


@_jit
def _centre_kernel(
    part_ptr,         # [n_part, 3, D] float64 (``_stats_kernel``); row 0 is reused as scratch
    ctr_ptr,          # [d] out: the centre, in the points' dtype (``reference.centre``)
    top_ptr,          # [1] out: max |x − centre| in float32 arithmetic (SPLIT), as ``_pack_points`` computes it
    n_part, n, d,
    BLOCK_P: tl.constexpr, BLOCK_D: tl.constexpr, D_CHUNKS: tl.constexpr, SPLIT: tl.constexpr,
    INTERPRET: tl.constexpr,
):
    """Second half of ``_centre`` (one program): the mean (float64), the cloud's radius about it, the
    mean rounded half to even to a multiple of 2^floor(log2(radius)), and the points' top."""
    D: tl.constexpr = BLOCK_D * D_CHUNKS
    radius = 0.0
    for i_d in tl.static_range(D_CHUNKS):
        o_c = i_d * BLOCK_D + tl.arange(0, BLOCK_D)
        m_c = o_c < d
        b_sum = tl.zeros([BLOCK_D], dtype=tl.float64)
        b_lo = tl.full([BLOCK_D], float("inf"), dtype=tl.float64)
        b_hi = tl.full([BLOCK_D], float("-inf"), dtype=tl.float64)
        p0 = 0
        while p0 < n_part:  # partials in a fixed order: deterministic
            o_p = p0 + tl.arange(0, BLOCK_P)
            m = (o_p < n_part)[:, None] & m_c[None, :]
            p = part_ptr + o_p[:, None].to(tl.int64) * 3 * D + o_c[None, :]
            b_sum += tl.sum(tl.load(p, mask=m, other=0.0), 0)
            b_lo = tl.minimum(b_lo, tl.min(tl.load(p + D, mask=m, other=float("inf")), 0))
            b_hi = tl.maximum(b_hi, tl.max(tl.load(p + 2 * D, mask=m, other=float("-inf")), 0))
            p0 += BLOCK_P
        b_mean = b_sum / n
        radius = tl.maximum(radius, tl.max(tl.where(m_c, tl.maximum(b_hi - b_mean, b_mean - b_lo), 0.0), 0))
        if not INTERPRET:
            tl.debug_barrier()  # every thread has read the partials before row 0 is overwritten
        tl.store(part_ptr + o_c, b_mean)
        tl.store(part_ptr + D + o_c, b_lo)
        tl.store(part_ptr + 2 * D + o_c, b_hi)
    if not INTERPRET:
        tl.debug_barrier()  # the scratch row is written before it is read back
    step = tl.maximum(tl.exp2(tl.floor(tl.log2(tl.maximum(radius, 1e-300)))), 1e-300)  # as reference.centre, no log2(0)
    top = 0.0
    for i_d in tl.static_range(D_CHUNKS):
        o_c = i_d * BLOCK_D + tl.arange(0, BLOCK_D)
        m_c = o_c < d
        b_mean = tl.load(part_ptr + o_c, mask=m_c, other=0.0)
        b_v = b_mean / step
        b_r = tl.floor(b_v + 0.5)
        b_r = tl.where((b_r - b_v == 0.5) & (b_r - 2.0 * tl.floor(b_r * 0.5) != 0.0), b_r - 1.0, b_r)  # half to even
        b_ctr = tl.where(radius > 0, b_r * step, b_mean).to(ctr_ptr.dtype.element_ty)
        tl.store(ctr_ptr + o_c, b_ctr, mask=m_c)
        if SPLIT:  # the same float32 subtractions as ``_pack_points``'s, at the columns' extremes
            b_lo = tl.load(part_ptr + D + o_c, mask=m_c, other=0.0).to(tl.float32)
            b_hi = tl.load(part_ptr + 2 * D + o_c, mask=m_c, other=0.0).to(tl.float32)
            b_top = tl.where(m_c, tl.maximum(b_hi - b_ctr.to(tl.float32), b_ctr.to(tl.float32) - b_lo), 0.0)
            top = tl.maximum(top, tl.max(b_top, 0))
    if SPLIT:
        tl.store(top_ptr, top)


@_jit
def _pack_points_kernel(
    x_ptr,           # [n, d]
    ctr_ptr,         # [d]  the centre subtracted from every point (the keys' mean)
    top_ptr,         # [1]  max |x − centre| (float32; SPLIT)
    c_ptr,           # [1]  c (GAUSSIAN)
    bias_ptr,        # [n]  log-bias (BIAS)
    hi_ptr, lo_ptr,  # [n_pad, BLOCK_D * D_CHUNKS] x · 2^−e as float16 hi + lo (SPLIT), or x; zero padding;
                     #   FOLD: the folded query or key operand (section comment)
    t_ptr,           # [n_pad] −c‖x‖² + log-bias (times log2(e) with EXP2) if GAUSSIAN, else ‖x‖²; FILL padding
    n, d,
    FILL: tl.constexpr, BLOCK: tl.constexpr, BLOCK_D: tl.constexpr, D_CHUNKS: tl.constexpr,
    GAUSSIAN: tl.constexpr, BIAS: tl.constexpr, SPLIT: tl.constexpr, EXP2: tl.constexpr,
    FOLD: tl.constexpr, QUERY: tl.constexpr,
):
    """Operands of the tile kernels for one set of points: centred, padded, scaled, split, with
    the squared-norm term (see the section comment). FOLD (Gaussian, SPLIT, no bias): the
    squared norms join one concatenated float16 operand (hi and lo parts side by side, layout
    in the body) of x·a and t / G with a = (2c / G)^½, so that one dot gives s / G with the
    products hi·hi + hi·lo + lo·hi of the features and both norms. Both sides carry the same
    rounded features x·a, so s_ij and s_ji are sums of the same products: the operator stays
    symmetric to rounding (scaling only one side, e.g. keys by 2c / G, made |s_ij − s_ji| ~
    2^−22 · 2c‖x‖², which stalled the symmetric eigensolver at ~1e-3 with local kernels)."""
    i_r = tl.program_id(0).to(tl.int64)
    D: tl.constexpr = BLOCK_D * D_CHUNKS
    o_r = i_r * BLOCK + tl.arange(0, BLOCK)
    m_r = o_r < n
    b_norm = tl.zeros([BLOCK], dtype=x_ptr.dtype.element_ty)
    f = 1.0
    if SPLIT:
        f = _pow2_factor(tl.load(top_ptr), 7)
    for i_d in range(D_CHUNKS):
        o_c = i_d * BLOCK_D + tl.arange(0, BLOCK_D)
        b_x = _centred_chunk(x_ptr, ctr_ptr, o_r, m_r, o_c, d)
        b_norm += tl.sum(b_x * b_x, 1)
        if not FOLD:
            p = o_r[:, None] * D + o_c[None, :]
            if SPLIT:
                b_x = b_x / f
                b_hi = b_x.to(tl.float16)
                tl.store(hi_ptr + p, b_hi)
                tl.store(lo_ptr + p, (b_x - b_hi.to(tl.float32)).to(tl.float16))
            else:
                tl.store(hi_ptr + p, b_x)
    if GAUSSIAN:
        c = tl.load(c_ptr)
        b_norm = -c * b_norm
        if BIAS:
            b_bias = tl.load(bias_ptr + o_r, mask=m_r, other=0.0)
            if EXP2:
                b_bias = b_bias * 1.4426950408889634
            b_norm += b_bias
        if FOLD:
            # second pass (the chunks are re-read): the norm columns need every chunk's sum first.
            # One zero-filled float16 row of D >= 3d + 4 columns (section comment, FOLD):
            #   query [lo(xa) | hi(xa) | 1, lo(t/G) | hi(xa) | 1, hi(t/G)]
            #   key   [hi(xa) | lo(xa) | lo(t/G), 1 | hi(xa) | hi(t/G), 1]
            # small products first (the MMAs accumulate k-steps in order, truncating)
            G = _fold_scale(tl.load(top_ptr), c, D)
            a = tl.sqrt_rn(2.0 * c / G)
            b_tg = b_norm / G
            b_th = b_tg.to(tl.float16)
            b_tl = (b_tg - b_th.to(tl.float32)).to(tl.float16)
            b_one = tl.where(m_r, 1.0, 0.0).to(tl.float16)
            p_row = hi_ptr + o_r * D
            if QUERY:
                b_c0, b_c1, b_c2, b_c3 = b_one, b_tl, b_one, b_th
            else:
                b_c0, b_c1, b_c2, b_c3 = b_tl, b_one, b_th, b_one
            tl.store(p_row + 2 * d, b_c0)
            tl.store(p_row + 2 * d + 1, b_c1)
            tl.store(p_row + 3 * d + 2, b_c2)
            tl.store(p_row + 3 * d + 3, b_c3)
            for i_d in range(D_CHUNKS):
                o_c = i_d * BLOCK_D + tl.arange(0, BLOCK_D)
                m_x = m_r[:, None] & (o_c < d)[None, :]
                b_x = _centred_chunk(x_ptr, ctr_ptr, o_r, m_r, o_c, d) * a
                b_hi = b_x.to(tl.float16)
                b_lo = (b_x - b_hi.to(tl.float32)).to(tl.float16)
                p = p_row[:, None] + o_c[None, :]
                if QUERY:
                    tl.store(p, b_lo, mask=m_x)
                    tl.store(p + d, b_hi, mask=m_x)
                else:
                    tl.store(p, b_hi, mask=m_x)
                    tl.store(p + d, b_lo, mask=m_x)
                tl.store(p + 2 * d + 2, b_hi, mask=m_x)
    tl.store(t_ptr + o_r, tl.where(m_r, b_norm, FILL))


@_jit
def _pack_values_kernel(
    w_ptr,           # [n, m]
    top_ptr,         # [m] max |w| per column (float32; SPLIT)
    hi_ptr, lo_ptr,  # [n_pad, ldw] each column times 2^−e as float16 hi + lo (SPLIT), or w; zero padding
    n, m, ldw,
    BLOCK: tl.constexpr, BLOCK_V: tl.constexpr, SPLIT: tl.constexpr,
):
    """The value operand of the tile kernels: padded, each column scaled to a maximum magnitude
    in [2^13, 2^14) (the factor is recomputed from ``top`` where it is needed), split."""
    i_r = tl.program_id(0).to(tl.int64)
    i_v = tl.program_id(1).to(tl.int64)
    o_r = i_r * BLOCK + tl.arange(0, BLOCK)
    o_v = i_v * BLOCK_V + tl.arange(0, BLOCK_V)
    m_v = o_v < m
    b_w = tl.load(w_ptr + o_r[:, None] * m + o_v[None, :], mask=(o_r < n)[:, None] & m_v[None, :], other=0.0)
    p = o_r[:, None] * ldw + o_v[None, :]
    if SPLIT:
        b_w = b_w / _pow2_factor(tl.load(top_ptr + o_v, mask=m_v, other=0.0), 13)[None, :]
        b_hi = b_w.to(tl.float16)
        tl.store(hi_ptr + p, b_hi)
        tl.store(lo_ptr + p, (b_w - b_hi.to(tl.float32)).to(tl.float16))
    else:
        tl.store(hi_ptr + p, b_w)


@_jit
def _scores(
    b_qh, b_ql, qh_ptr, ql_ptr, kh_ptr, kl_ptr, o_m, o_n, g, kt_ptr,
    BLOCK_D: tl.constexpr, D_CHUNKS: tl.constexpr, SPLIT: tl.constexpr, FOLD: tl.constexpr,
):
    """[BLOCK_M, BLOCK_N]: g · q̃_i·k̃_j + kt_j (one FMA per pair; the caller adds the row term),
    q̃ and k̃ as float16 hi + lo parts (SPLIT) or float64; FOLD: g · (folded dot) = s, the
    whole exponent (one multiply per pair, skipped by a uniform branch when G = 1). With one
    feature chunk ``b_qh``/``b_ql`` are the preloaded query tiles; otherwise the features are
    walked in chunks of BLOCK_D and they are unused."""
    D: tl.constexpr = BLOCK_D * D_CHUNKS
    o_d = tl.arange(0, BLOCK_D)
    b_dot = tl.zeros([o_m.shape[0], o_n.shape[0]], dtype=kt_ptr.dtype.element_ty)
    for i_d in range(D_CHUNKS):
        o_dc = i_d * BLOCK_D + o_d
        if D_CHUNKS > 1:
            b_qh = _load_tile(qh_ptr, o_m, o_dc, D)
            if SPLIT and not FOLD:
                b_ql = _load_tile(ql_ptr, o_m, o_dc, D)
        # [BLOCK_D, BLOCK_N]
        b_kh = tl.trans(_load_tile(kh_ptr, o_n, o_dc, D))
        if FOLD:  # one float16 dot over the concatenated operands
            b_dot = tl.dot(b_qh, b_kh, acc=b_dot, out_dtype=tl.float32)
        elif SPLIT:
            b_kl = tl.trans(_load_tile(kl_ptr, o_n, o_dc, D))
            # small parts first: the tensor cores' float32 accumulation truncates (rounds toward
            # zero), so the big hi·hi term should meet the accumulator last
            b_dot = tl.dot(b_ql, b_kh, acc=b_dot, out_dtype=tl.float32)
            b_dot = tl.dot(b_qh, b_kl, acc=b_dot, out_dtype=tl.float32)
            b_dot = tl.dot(b_qh, b_kh, acc=b_dot, out_dtype=tl.float32)
        else:
            b_dot = tl.dot(b_qh, b_kh, acc=b_dot, input_precision="ieee", out_dtype=b_dot.dtype)
    if FOLD:
        if g != 1.0:  # uniform branch: G = 1 needs no multiply
            b_dot = b_dot * g
    else:
        b_dot = b_dot * g + tl.load(kt_ptr + o_n)[None, :]
    return b_dot


@_jit
def _exp(x, EXP2: tl.constexpr):
    """exp2 for float32 (the caller folded log2(e) in), exp for float64."""
    if EXP2:
        return tl.exp2(x)
    else:
        return tl.exp(x)


@_jit
def _pv(b_acc, b_p, b_wh, b_wl, SPLIT: tl.constexpr, MASK_SPLIT: tl.constexpr):
    """b_acc + P·W; with SPLIT, P (float32 in [0, 1]) is split into float16 hi + lo against W's
    float16 hi + lo parts: hi = P rounded to float16 and lo = the rest rounded to float16, or
    (MASK_SPLIT) hi = P cut to float16's 11 significant bits by a mask of its float32 bits (exact
    in float16 from 2^−14 up) and lo = the exact rest rounded (rest < 2^−10·P, so P is held to
    ~2^−21): one LOP and one FADD per entry instead of converting the rounded hi back to float32
    (HADD2.F32, PRMT), but ~10 more registers; lo·hi + hi·lo + hi·hi into a fresh float32 tile, then one
    round-to-nearest add into ``b_acc``. Tensor-core float32 accumulation truncates toward zero,
    so accumulating a whole row of N keys inside the MMAs loses ~0.5 ulp per 16 keys, always
    toward zero: a relative error ~N · 2^−25 (1e-4 at N = 20 000, measured on an H200 and
    reproduced by emulation). Per tile it is a few ulp of the tile's own sum. (The add is not
    folded back into the MMA: Triton folds add(dot(a, b, 0), c) only when the dot starts at 0,
    and the last dot here starts at the partial tile.)"""
    if SPLIT:
        if MASK_SPLIT:
            b_pt = (b_p.to(tl.int32, bitcast=True) & -8192).to(tl.float32, bitcast=True)
            b_ph = b_pt.to(tl.float16)
            b_pl = (b_p - b_pt).to(tl.float16)
        else:
            b_ph = b_p.to(tl.float16)
            b_pl = (b_p - b_ph.to(tl.float32)).to(tl.float16)
        b_t = tl.dot(b_pl, b_wh, out_dtype=tl.float32)
        b_t = tl.dot(b_ph, b_wl, acc=b_t, out_dtype=tl.float32)
        b_t = tl.dot(b_ph, b_wh, acc=b_t, out_dtype=tl.float32)
        return b_acc + b_t
    else:
        return tl.dot(b_p, b_wh, acc=b_acc, input_precision="ieee", out_dtype=b_acc.dtype)


@_jit
def _gaussian_tile(
    b_acc, b_max, b_sum, start_n, g,
    b_qh, b_ql, b_qt, b_isq, b_wih, b_wil, o_m, o_v, m_v,
    qh_ptr, ql_ptr, kh_ptr, kl_ptr, wh_ptr, wl_ptr, out_ptr, kt_ptr, rs_ptr, isk_ptr, b_vs, n_k, m, ldw,
    BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, D_CHUNKS: tl.constexpr,
    ROW_SCALE: tl.constexpr, SIGMA: tl.constexpr, SOFTMAX: tl.constexpr, SYMMETRIC: tl.constexpr,
    SAME: tl.constexpr, DIAG: tl.constexpr, SPLIT: tl.constexpr, EXP2: tl.constexpr, FOLD: tl.constexpr,
    MASK_SPLIT: tl.constexpr,
):
    """One key tile [start_n, start_n + BLOCK_N) of ``_gaussian_tiles_kernel``: returns the updated
    (accumulator, running max, running sum); the symmetric side goes out by atomic adds. DIAG:
    the symmetric kernel's diagonal tile, whose self-distances are set to 0."""
    o_n = start_n + tl.arange(0, BLOCK_N)
    # [BLOCK_M, BLOCK_N]: s_ij − qt_i = 2c q_i·k_j − c‖k_j‖² (+ log-bias), −inf on padded keys
    b_s = _scores(b_qh, b_ql, qh_ptr, ql_ptr, kh_ptr, kl_ptr, o_m, o_n, g, kt_ptr, BLOCK_D, D_CHUNKS, SPLIT, FOLD)
    # the row term joins s here (SAME, SIGMA; it is in the folded dot already), else only the
    # row's maximum at the end
    if (SAME or SIGMA) and not FOLD:
        b_s = b_s + b_qt[:, None]
    if DIAG:
        # a point's distance to itself is exactly 0, not the rounding of ‖x‖² + ‖x‖² − 2 x·x
        # (which costs ~beta·1e-7·‖x‖² on the diagonal: visible for local kernels)
        b_s = tl.where((o_m - start_n).to(tl.int32)[:, None] == tl.arange(0, BLOCK_N)[None, :], 0.0, b_s)
    if SIGMA:
        b_s = b_s * b_isq[:, None] * tl.load(isk_ptr + o_n, mask=o_n < n_k, other=1.0)[None, :]
    # [BLOCK_N, BLOCK_V]
    b_wh = _load_tile(wh_ptr, o_n, o_v, ldw)
    b_wl = b_wh
    if SPLIT:
        b_wl = _load_tile(wl_ptr, o_n, o_v, ldw)
    if SAME:  # s ≤ 0 (up to rounding): every row's own key is at distance 0, no running maximum
        b_p = _exp(b_s, EXP2)
    else:
        b_new = tl.maximum(b_max, tl.max(b_s, 1))
        # a row whose keys so far all weigh 0 keeps a finite reference point: no inf − inf
        b_ref = tl.where(b_new == float("-inf"), 0.0, b_new)
        b_p = _exp(b_s - b_ref[:, None], EXP2)
        b_decay = _exp(b_max - b_ref, EXP2)
        if SOFTMAX:
            b_sum = b_sum * b_decay + tl.sum(b_p, 1)
        b_acc = b_acc * b_decay[:, None]
        b_max = b_new
    b_acc = _pv(b_acc, b_p, b_wh, b_wl, SPLIT, MASK_SPLIT)
    if SYMMETRIC:
        if not DIAG:
            # [BLOCK_N, BLOCK_V]: the transposed tile applied to the row block's own values
            b_t = _pv(tl.zeros([BLOCK_N, b_acc.shape[1]], dtype=b_acc.dtype), tl.trans(b_p), b_wih, b_wil, SPLIT, MASK_SPLIT)
            if ROW_SCALE:
                b_t = b_t * tl.load(rs_ptr + o_n, mask=o_n < n_k, other=0.0)[:, None]
            if SPLIT:
                b_t = b_t * b_vs[None, :]
            tl.atomic_add(out_ptr + o_n[:, None] * m + o_v[None, :], b_t, mask=(o_n < n_k)[:, None] & m_v[None, :], sem="relaxed")
    return b_acc, b_max, b_sum


@_jit
def _gaussian_range(
    b_acc, b_max, b_sum, start, stop, g,
    b_qh, b_ql, b_qt, b_isq, b_wih, b_wil, o_m, o_v, m_v,
    qh_ptr, ql_ptr, kh_ptr, kl_ptr, wh_ptr, wl_ptr, out_ptr, kt_ptr, rs_ptr, isk_ptr, b_vs, n_k, m, ldw,
    BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, D_CHUNKS: tl.constexpr,
    ROW_SCALE: tl.constexpr, SIGMA: tl.constexpr, SOFTMAX: tl.constexpr, SYMMETRIC: tl.constexpr,
    SAME: tl.constexpr, DIAG: tl.constexpr, SPLIT: tl.constexpr, EXP2: tl.constexpr, FOLD: tl.constexpr,
    MASK_SPLIT: tl.constexpr, INTERPRET: tl.constexpr,
):
    """Key tiles start, start + BLOCK_N, … below stop (``_gaussian_tile`` each); INTERPRET: a
    while loop (the interpreter cannot take a runtime range bound), else a pipelined for loop."""
    if INTERPRET:
        start_n = start
        while start_n < stop:
            b_acc, b_max, b_sum = _gaussian_tile(
                b_acc, b_max, b_sum, start_n, g, b_qh, b_ql, b_qt, b_isq, b_wih, b_wil, o_m, o_v, m_v,
                qh_ptr, ql_ptr, kh_ptr, kl_ptr, wh_ptr, wl_ptr, out_ptr, kt_ptr, rs_ptr, isk_ptr, b_vs, n_k, m, ldw,
                BLOCK_N, BLOCK_D, D_CHUNKS, ROW_SCALE, SIGMA, SOFTMAX, SYMMETRIC, SAME, DIAG, SPLIT, EXP2, FOLD, MASK_SPLIT,
            )
            start_n += BLOCK_N
    else:
        for start_n in range(start, stop, BLOCK_N):
            b_acc, b_max, b_sum = _gaussian_tile(
                b_acc, b_max, b_sum, start_n, g, b_qh, b_ql, b_qt, b_isq, b_wih, b_wil, o_m, o_v, m_v,
                qh_ptr, ql_ptr, kh_ptr, kl_ptr, wh_ptr, wl_ptr, out_ptr, kt_ptr, rs_ptr, isk_ptr, b_vs, n_k, m, ldw,
                BLOCK_N, BLOCK_D, D_CHUNKS, ROW_SCALE, SIGMA, SOFTMAX, SYMMETRIC, SAME, DIAG, SPLIT, EXP2, FOLD, MASK_SPLIT,
            )
    return b_acc, b_max, b_sum


@_jit
def _gaussian_tiles_kernel(
    qh_ptr, ql_ptr,  # [n_q_pad, D]  q̃: float16 hi and lo parts (SPLIT), or q (float64)
    kh_ptr, kl_ptr,  # [n_k_pad, D]  k̃: the same for the keys
    wh_ptr, wl_ptr,  # [n_k_pad, ldw] values with the column scale folded in: float16 hi and lo
                     #                parts of each column times 2^-e (SPLIT), or the values
    out_ptr,         # [splits, n_q, m] (zero-filled with SYMMETRIC: accumulated with atomic adds);
                     #               key split i_s writes its partial sums to out_ptr[i_s]
    lse_ptr,         # [n_q]         (SOFTMAX)
    c_ptr,           # [1]           c
    topq_ptr,        # [1]           max |q| (float32; SPLIT): q̃ = q · 2^−eq
    topk_ptr,        # [1]           max |k| (float32; SPLIT)
    qt_ptr,          # [n_q_pad]     −c‖q_i‖²
    kt_ptr,          # [n_k_pad]     −c‖k_j‖² (+ log-bias times log2(e) with EXP2), −inf padding
    rs_ptr,          # [n_q]         row scale (ROW_SCALE)
    isq_ptr,         # [n_q]         1 / sigma_q (SIGMA)
    isk_ptr,         # [n_k]         1 / sigma_k (SIGMA)
    vtop_ptr,        # [m]           max |w| per column (float32; SPLIT): W̃ = W · 2^−e
    n_q, n_k, m, ldw,
    keys_per_split,  # keys per program along grid axis 2 (a multiple of BLOCK_N; SAME, not SYMMETRIC)
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, D_CHUNKS: tl.constexpr,
    BLOCK_V: tl.constexpr, ROW_SCALE: tl.constexpr, SIGMA: tl.constexpr, SOFTMAX: tl.constexpr,
    SYMMETRIC: tl.constexpr, SAME: tl.constexpr, SPLIT: tl.constexpr, EXP2: tl.constexpr, FOLD: tl.constexpr,
    MASK_SPLIT: tl.constexpr, INTERPRET: tl.constexpr,
):
    """out = diag(rs) · G · W for G_ij = exp(s_ij · isq_i · isk_j), one (row block, value column
    block) per program; with SOFTMAX, softmax_j(s_ij) · W and its log-sum-exp.

    Rows keep a running maximum of their exponents without the row term (online, as flash
    attention): P = G / 2^max stays in [0, 1] whatever the distances, and the end multiplies by
    2^(max + qt) (or, with SOFTMAX, divides by the running sum). SAME (the queries are the keys,
    not SOFTMAX): every row's own key is at distance 0, so s ≤ 0 up to rounding and P = G ≤ 1
    without a running maximum; the row term joins s per pair instead (one add replaces the
    max and the subtraction). SYMMETRIC (with SAME; rs = column scale, isq = isk, BLOCK_M a
    multiple of BLOCK_N): the program of row block I visits key tiles from I's own rows on,
    the diagonal block first; a tile J past it is applied to both sides, out_I += G_IJ W_J in
    registers and out_J += rs_J G_IJᵀ W_I by relaxed atomic adds (no fence: only the sum at the
    kernel's end is read; the default acq_rel put a MEMBAR.GPU and an L1 invalidate around every
    add, 1.6x slower), so each tile is exponentiated once; the diagonal block is its own loop
    (DIAG: the exact zero self-distance costs a select there only). Programs are numbered
    longest-first.
    FOLD (SAME, SPLIT, not SIGMA): features and both squared-norm terms, hi and lo
    parts, are the columns of one operand per side (``_pack_points_kernel``), so one float16 dot
    of width 3d + 4 is s / G (three of width d otherwise) and a pair costs one multiply before
    its exponential (against an FMA and an add). Key splits (grid axis 2, SAME without
    SYMMETRIC: no running maximum, so partial sums simply add): program (i_m, i_v, i_s) takes
    keys [i_s·keys_per_split, (i_s + 1)·keys_per_split) and stores its partial product in
    out[i_s]; the launcher sums them (few row blocks: small N). INTERPRET: see ``_gaussian_range``.
    """
    i_m = tl.program_id(0).to(tl.int64)
    i_v = tl.program_id(1).to(tl.int64)
    i_s = tl.program_id(2).to(tl.int64)
    ACC = qt_ptr.dtype.element_ty
    D: tl.constexpr = BLOCK_D * D_CHUNKS
    o_m = i_m * BLOCK_M + tl.arange(0, BLOCK_M)
    m_m = o_m < n_q
    o_v = i_v * BLOCK_V + tl.arange(0, BLOCK_V)
    m_v = o_v < m
    o_d = tl.arange(0, BLOCK_D)
    # the factor of q̃·k̃ in s, and the column factors 2^e of W̃
    g = 2.0 * tl.load(c_ptr)
    b_vs = tl.full([BLOCK_V], 1.0, dtype=ACC)
    if SPLIT:
        g = g * _pow2_factor(tl.load(topq_ptr), 7) * _pow2_factor(tl.load(topk_ptr), 7)
        b_vs = _pow2_factor(tl.load(vtop_ptr + o_v, mask=m_v, other=0.0), 13)
    if FOLD:  # the folded operands give s / G (the pack kernel's G from the same top and c)
        g = _fold_scale(tl.load(topk_ptr), tl.load(c_ptr), D)
    # [BLOCK_M, BLOCK_D]: the query tile when the features fit one chunk
    b_qh = _load_tile(qh_ptr, o_m, o_d, D)
    b_ql = b_qh
    if SPLIT and not FOLD:
        b_ql = _load_tile(ql_ptr, o_m, o_d, D)
    b_qt = tl.load(qt_ptr + o_m)
    b_isq = tl.full([BLOCK_M], 1.0, dtype=ACC)
    if SIGMA:
        b_isq = tl.load(isq_ptr + o_m, mask=m_m, other=1.0)
    # [BLOCK_M, BLOCK_V]: this block's own values, for the transposed side (SYMMETRIC)
    b_wih = _load_tile(wh_ptr, o_m, o_v, ldw)
    b_wil = b_wih
    if SPLIT:
        b_wil = _load_tile(wl_ptr, o_m, o_v, ldw)
    b_acc = tl.zeros([BLOCK_M, BLOCK_V], dtype=ACC)
    b_max = tl.full([BLOCK_M], float("-inf"), dtype=ACC)
    b_sum = tl.zeros([BLOCK_M], dtype=ACC)
    # SYMMETRIC: the diagonal tile first (DIAG: exact zero self-distances), then the tiles after
    # it; else every key tile. (The plain kernel with SAME does not zero its diagonal: the select
    # raised it from 80 to 127 registers; its self-distances carry ~beta·2^-23·‖x − centre‖².)
    k_lo = i_s * keys_per_split
    k_hi = tl.minimum(k_lo + keys_per_split, n_k)
    if SYMMETRIC:
        k_lo = i_m * BLOCK_M + BLOCK_M
        b_acc, b_max, b_sum = _gaussian_range(
            b_acc, b_max, b_sum, i_m * BLOCK_M, k_lo, g, b_qh, b_ql, b_qt, b_isq, b_wih, b_wil, o_m, o_v, m_v,
            qh_ptr, ql_ptr, kh_ptr, kl_ptr, wh_ptr, wl_ptr, out_ptr, kt_ptr, rs_ptr, isk_ptr, b_vs, n_k, m, ldw,
            BLOCK_N, BLOCK_D, D_CHUNKS, ROW_SCALE, SIGMA, SOFTMAX, SYMMETRIC, SAME, True, SPLIT, EXP2, FOLD, MASK_SPLIT, INTERPRET,
        )
    b_acc, b_max, b_sum = _gaussian_range(
        b_acc, b_max, b_sum, k_lo, k_hi, g, b_qh, b_ql, b_qt, b_isq, b_wih, b_wil, o_m, o_v, m_v,
        qh_ptr, ql_ptr, kh_ptr, kl_ptr, wh_ptr, wl_ptr, out_ptr, kt_ptr, rs_ptr, isk_ptr, b_vs, n_k, m, ldw,
        BLOCK_N, BLOCK_D, D_CHUNKS, ROW_SCALE, SIGMA, SOFTMAX, SYMMETRIC, SAME, False, SPLIT, EXP2, FOLD, MASK_SPLIT, INTERPRET,
    )
    # the rows' maximal exponents, with the row term (in s already with SIGMA)
    b_top = b_max
    if not SIGMA:
        b_top = b_max + b_qt
    if SOFTMAX:
        b_pos = b_sum > 0
        b_div = tl.where(b_pos, b_sum, 1.0)
        b_acc = b_acc / b_div[:, None]
        if EXP2:
            b_lse = (b_top + tl.log2(b_div)) * 0.6931471805599453
        else:
            b_lse = b_top + tl.log(b_div)
        tl.store(lse_ptr + o_m, tl.where(b_pos, b_lse, float("-inf")), mask=m_m & (i_v == 0))
    elif not SAME:
        b_acc = b_acc * _exp(tl.where(b_max == float("-inf"), 0.0, b_top), EXP2)[:, None]
    if ROW_SCALE:
        b_acc = b_acc * tl.load(rs_ptr + o_m, mask=m_m, other=0.0)[:, None]
    if SPLIT:
        b_acc = b_acc * b_vs[None, :]
    p_out = out_ptr + i_s * n_q * m + o_m[:, None] * m + o_v[None, :]
    if SYMMETRIC:
        tl.atomic_add(p_out, b_acc, mask=m_m[:, None] & m_v[None, :], sem="relaxed")
    else:
        tl.store(p_out, b_acc, mask=m_m[:, None] & m_v[None, :])


@_jit
def _knn_tile(
    b_bd, b_bi, start_n, g, b_qh, b_ql, b_qt, o_m, qh_ptr, ql_ptr, kh_ptr, kl_ptr, kt_ptr, n_k,
    BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, D_CHUNKS: tl.constexpr, K_PAD: tl.constexpr,
    EXCLUDE_SELF: tl.constexpr, SPLIT: tl.constexpr,
):
    """Merge key tile [start_n, start_n + BLOCK_N) into the best (distance, index) slots."""
    o_s = tl.arange(0, K_PAD)
    o_n = start_n + tl.arange(0, BLOCK_N).to(tl.int64)
    # [BLOCK_M, BLOCK_N]: squared distances, +inf on padded keys (and on self)
    b_d2 = _scores(b_qh, b_ql, qh_ptr, ql_ptr, kh_ptr, kl_ptr, o_m, o_n, g, kt_ptr, BLOCK_D, D_CHUNKS, SPLIT, False)
    b_d2 = tl.maximum(b_d2 + b_qt[:, None], 0.0)
    if EXCLUDE_SELF:
        b_d2 = tl.where(o_n[None, :] == o_m[:, None], float("inf"), b_d2)
    b_cand = tl.min(b_d2, 1)
    b_worst = tl.max(b_bd, 1)
    while tl.max((b_cand < b_worst).to(tl.int32), 0) > 0:
        b_take = b_cand < b_worst
        # [BLOCK_M]: the candidate's index (smallest among equal distances)
        b_j = tl.min(tl.where(b_d2 == b_cand[:, None], o_n[None, :], n_k), 1)
        # the slot of the worst (largest distance, then largest index; the slot number breaks
        # the ties between still-empty slots, index −1)
        b_key = tl.where(b_bd == b_worst[:, None], b_bi * K_PAD + o_s[None, :], -2 * K_PAD)
        m_hit = (b_key == tl.max(b_key, 1)[:, None]) & b_take[:, None]
        b_bd = tl.where(m_hit, b_cand[:, None], b_bd)
        b_bi = tl.where(m_hit, b_j[:, None], b_bi)
        b_d2 = tl.where((o_n[None, :] == b_j[:, None]) & b_take[:, None], float("inf"), b_d2)
        b_cand = tl.min(b_d2, 1)
        b_worst = tl.max(b_bd, 1)
    return b_bd, b_bi


@_jit
def _knn_kernel(
    qh_ptr, ql_ptr,  # [n_q_pad, D] q̃ (see _gaussian_tiles_kernel)
    kh_ptr, kl_ptr,  # [n_k_pad, D] k̃
    topq_ptr,        # [1] max |q| (float32; SPLIT)
    topk_ptr,        # [1] max |k| (float32; SPLIT)
    qt_ptr,          # [n_q_pad] ‖q_i‖²
    kt_ptr,          # [n_k_pad] ‖k_j‖², +inf padding
    dist_ptr,        # [n_q, k]
    idx_ptr,         # [n_q, k] int64
    n_q, n_k, k,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, D_CHUNKS: tl.constexpr,
    K_PAD: tl.constexpr, EXCLUDE_SELF: tl.constexpr, SPLIT: tl.constexpr, INTERPRET: tl.constexpr,
):
    """The k smallest (distance, index) pairs of each query row, ties to the smaller index.

    A program keeps its rows' best k in registers ([BLOCK_M, K_PAD], padding slots at −inf so
    they are never the worst). Per key tile it repeatedly moves each row's best tile candidate
    (smallest distance, then index) into the slot of its current worst while the candidate is
    strictly better; tiles come in index order, so a tie never displaces an earlier index. Most
    tiles after the first few insert nothing and cost one comparison. A selection sort writes
    the result in ascending order."""
    i_m = tl.program_id(0).to(tl.int64)
    ACC = qt_ptr.dtype.element_ty
    D: tl.constexpr = BLOCK_D * D_CHUNKS
    o_m = i_m * BLOCK_M + tl.arange(0, BLOCK_M)
    m_m = o_m < n_q
    o_s = tl.arange(0, K_PAD)
    o_d = tl.arange(0, BLOCK_D)
    g = -2.0
    if SPLIT:
        g = g * _pow2_factor(tl.load(topq_ptr), 7) * _pow2_factor(tl.load(topk_ptr), 7)
    b_qh = _load_tile(qh_ptr, o_m, o_d, D)
    b_ql = b_qh
    if SPLIT:
        b_ql = _load_tile(ql_ptr, o_m, o_d, D)
    b_qt = tl.load(qt_ptr + o_m)
    # [BLOCK_M, K_PAD]
    b_bd = tl.where(o_s[None, :] < k, float("inf"), float("-inf")) + tl.zeros([BLOCK_M, K_PAD], dtype=ACC)
    b_bi = tl.full([BLOCK_M, K_PAD], -1, dtype=tl.int64)
    if INTERPRET:
        start_n = i_m * 0
        while start_n < n_k:
            b_bd, b_bi = _knn_tile(
                b_bd, b_bi, start_n, g, b_qh, b_ql, b_qt, o_m, qh_ptr, ql_ptr, kh_ptr, kl_ptr, kt_ptr, n_k,
                BLOCK_N, BLOCK_D, D_CHUNKS, K_PAD, EXCLUDE_SELF, SPLIT,
            )
            start_n += BLOCK_N
    else:
        for start_n in range(0, n_k, BLOCK_N):
            b_bd, b_bi = _knn_tile(
                b_bd, b_bi, start_n, g, b_qh, b_ql, b_qt, o_m, qh_ptr, ql_ptr, kh_ptr, kl_ptr, kt_ptr, n_k,
                BLOCK_N, BLOCK_D, D_CHUNKS, K_PAD, EXCLUDE_SELF, SPLIT,
            )
    b_bd = tl.where(o_s[None, :] < k, b_bd, float("inf"))
    r = i_m * 0
    while r < k:
        b_min = tl.min(b_bd, 1)
        b_j = tl.min(tl.where(b_bd == b_min[:, None], b_bi, n_k), 1)
        tl.store(dist_ptr + o_m * k + r, b_min, mask=m_m)
        tl.store(idx_ptr + o_m * k + r, b_j, mask=m_m)
        b_bd = tl.where(b_bi == b_j[:, None], float("inf"), b_bd)
        r += 1


@_jit
def _bgh_tile(
    b_acc, start_n, lo, g, b_qh, b_ql, b_qt, o_m, o_e, qh_ptr, ql_ptr, kh_ptr, kl_ptr, xt_ptr, ieps_ptr, n, n_eps,
    BLOCK: tl.constexpr, BLOCK_D: tl.constexpr, D_CHUNKS: tl.constexpr, SPLIT: tl.constexpr, EXP2: tl.constexpr,
):
    """Add key tile [start_n, start_n + BLOCK) to the partial sums of every ε."""
    ACC = b_qt.dtype
    o_n = start_n + tl.arange(0, BLOCK)
    # [BLOCK, BLOCK]: −d2; −inf for padding; exactly 0 on the diagonal (S(ε) → n as ε → 0)
    b_d2 = _scores(b_qh, b_ql, qh_ptr, ql_ptr, kh_ptr, kl_ptr, o_m, o_n, g, xt_ptr, BLOCK_D, D_CHUNKS, SPLIT, False)
    b_d2 = tl.maximum(b_d2 + b_qt[:, None], 0.0)
    b_nd2 = -tl.where((o_m[:, None] == o_n[None, :]) & (o_n < n)[None, :], 0.0, b_d2)
    w = tl.where(start_n > lo, 2.0, 1.0).to(tl.float64)
    e = lo * 0
    while e < n_eps:
        b_ie = tl.load(ieps_ptr + e).to(ACC)
        b_tile = tl.sum(tl.sum(_exp(b_nd2 * b_ie, EXP2), 1), 0).to(tl.float64)
        b_acc += tl.where(o_e == e, b_tile * w, 0.0)
        e += 1
    return b_acc


@_jit
def _bgh_kernel(
    qh_ptr, ql_ptr,  # [n_pad, D] x̃ (see _gaussian_tiles_kernel), as queries
    kh_ptr, kl_ptr,  # [n_pad, D] x̃ as keys (the same arrays)
    top_ptr,         # [1] max |x| (float32; SPLIT)
    xt_ptr,          # [n_pad] ‖x_i‖², +inf padding
    ieps_ptr,        # [n_eps] 1/ε, times log2(e) with EXP2 (float64)
    part_ptr,        # [n_programs, EPS_PAD] float64 partial sums
    n, n_eps,
    BLOCK: tl.constexpr, BLOCK_D: tl.constexpr, D_CHUNKS: tl.constexpr, EPS_PAD: tl.constexpr,
    SPLIT: tl.constexpr, EXP2: tl.constexpr, INTERPRET: tl.constexpr,
):
    """Partial S(ε) = Σ exp(−d2/ε) of row block I over key blocks J >= I, each block's
    distances computed once for the whole ε grid; blocks J > I count twice (d2 is symmetric).
    Padded query rows have ‖x‖² = +inf too, so they add nothing. Tile sums go to float64 at
    once; the host adds the per-program partials (deterministic)."""
    i_m = tl.program_id(0).to(tl.int64)
    D: tl.constexpr = BLOCK_D * D_CHUNKS
    o_m = i_m * BLOCK + tl.arange(0, BLOCK)
    o_e = tl.arange(0, EPS_PAD)
    o_d = tl.arange(0, BLOCK_D)
    g = -2.0
    if SPLIT:
        f = _pow2_factor(tl.load(top_ptr), 7)
        g = g * f * f
    b_qh = _load_tile(qh_ptr, o_m, o_d, D)
    b_ql = b_qh
    if SPLIT:
        b_ql = _load_tile(ql_ptr, o_m, o_d, D)
    b_qt = tl.load(xt_ptr + o_m)
    b_acc = tl.zeros([EPS_PAD], dtype=tl.float64)
    lo = i_m * BLOCK
    if INTERPRET:
        start_n = lo
        while start_n < n:
            b_acc = _bgh_tile(
                b_acc, start_n, lo, g, b_qh, b_ql, b_qt, o_m, o_e, qh_ptr, ql_ptr, kh_ptr, kl_ptr, xt_ptr, ieps_ptr,
                n, n_eps, BLOCK, BLOCK_D, D_CHUNKS, SPLIT, EXP2,
            )
            start_n += BLOCK
    else:
        for start_n in range(lo, n, BLOCK):
            b_acc = _bgh_tile(
                b_acc, start_n, lo, g, b_qh, b_ql, b_qt, o_m, o_e, qh_ptr, ql_ptr, kh_ptr, kl_ptr, xt_ptr, ieps_ptr,
                n, n_eps, BLOCK, BLOCK_D, D_CHUNKS, SPLIT, EXP2,
            )
    tl.store(part_ptr + i_m * EPS_PAD + o_e, b_acc)


# launchers


# lean launches (``_launch.LeanKernel``: a bound launch skips Triton's per-call argument binding) of the
# kernels every product runs; defined with Triton only (without it every call takes the reference)
if triton is not None:
    from .._launch import LeanKernel

    _PACK_POINTS = LeanKernel(_pack_points_kernel)
    _STATS = LeanKernel(_stats_kernel)
    _CENTRE = LeanKernel(_centre_kernel)
    _PACK_VALUES = LeanKernel(_pack_values_kernel)
    _TILES = LeanKernel(_gaussian_tiles_kernel)


@dataclass(frozen=True)
class TileConfig:
    """Tile shape and launch width of one launch (see ``pick_config``)."""

    block_m: int
    block_n: int
    num_warps: int
    num_stages: int = 2
    maxnreg: int | None = None  # register cap per thread (None: the compiler's choice)


def _pow2_at_least(n: int, floor: int = 16) -> int:
    return max(floor, 1 << max(0, math.ceil(math.log2(max(n, 1)))))


def _mask_split(width: int, block_v: int) -> bool:
    """Whether a FOLD product splits P by the mantissa mask (``_pv``): with 16-column value blocks and
    the 16- or 64-wide folded operand (d <= 4 or 10 <= d <= 20), where it was measured faster with
    a 128-register cap (H100, notes/diffusion-tiles.md session 12). The 32-wide operand and 32-column
    blocks need more registers with it (163–205 against 153–168; a 128 cap spills 240–440 B), so they
    keep the rounded split."""
    return block_v <= 16 and width != 32


def pick_config(job: str, dtype: torch.dtype, width: int, block_v: int, fold: bool = False) -> TileConfig:
    """Tile shape per job ("matmat", "rowsum", "sym", "softmax", "knn", "bgh"), dtype, padded
    feature width, value block and FOLD; tl.dot needs every tile side >= 16 and the symmetric
    job block_m a multiple of block_n. Wide features or value blocks get smaller tiles and one
    stage, to fit shared memory. The float32 matmat/rowsum choices are the fastest of
    ``flashmarkov.bench.diffusion.tune`` on an H100 (N = 65 536 and 262 144, d = 3, k = 16:
    notes/diffusion-tiles.md); the others are first choices checked to compile for sm_90
    without spills. Under the interpreter 16 x 16, so small tests cross many tiles."""
    if _runtime.interpreting():
        return TileConfig(16, 16, 1)
    # the concatenated FOLD operand (3d + 4 wide) keeps the big tiles up to d = 20 (64 wide)
    narrow = width <= (64 if fold else 32) and block_v <= 32
    if job == "knn":
        return TileConfig(32, 64 if dtype == torch.float32 else 32, 4)
    if job == "bgh":
        return TileConfig(64, 64, 4)
    if dtype == torch.float64:
        return TileConfig(64, 64 if job == "sym" else 32, 4) if narrow else TileConfig(32, 32, 4, 1)
    if job == "sym":  # 4 programs per SM (118 registers, 53 KB of shared memory at d = 16; H100:
        # 128 x 64 takes 204 registers and 2 fit, 64 x 32 doubles the per-tile overhead)
        return TileConfig(64, 64, 4, 2) if narrow else TileConfig(64, 64, 4, 1)
    if not narrow:
        return TileConfig(64, 32, 4, 1)
    if job in ("matmat", "rowsum"):  # 64 pairs per thread with FOLD, 32 without
        if fold and _mask_split(width, block_v):
            # 128 registers keep 4 programs per SM (uncapped, the masked P split takes 134–137 and
            # 3 fit); ptxas fits 128 without spills there (sm_90a, d = 1 … 4 and 10 … 20)
            return TileConfig(128, 64, 4, 3, 128)
        return TileConfig(128, 64, 4, 3) if fold else TileConfig(64, 64, 4, 3)
    return TileConfig(128, 64, 8)


# programs per SM a launch should reach before its keys are split (4 four-warp programs of 127
# registers fit an SM), and the fewest key tiles a split keeps (its prologue amortised)
SPLIT_PROGRAMS_PER_SM = 4
SPLIT_MIN_TILES = 8


def key_splits(n_programs: int, key_tiles: int, device: torch.device) -> int:
    """How many key ranges a queries-are-keys launch of ``n_programs`` (row block, column block)
    programs over ``key_tiles`` key tiles splits into: enough for SPLIT_PROGRAMS_PER_SM programs
    per SM, each keeping at least SPLIT_MIN_TILES tiles (1: no split). The partial products
    (splits × n × m floats) are summed by the launcher in a fixed order: deterministic."""
    want = _host.cdiv(SPLIT_PROGRAMS_PER_SM * _host.sm_count(device), n_programs)
    return max(1, min(want, key_tiles // SPLIT_MIN_TILES))


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def _features_split(d: int) -> tuple[int, int]:
    """(BLOCK_D, D_CHUNKS): the padded feature width of one tl.dot and how many chunks cover d."""
    block_d = min(_pow2_at_least(d), 64)
    return block_d, -(-d // block_d)


def _pack_points(X: Tensor, ctr: Tensor, n_pad: int, block_d: int, d_chunks: int, fill: float, *,
                 c: Tensor | None = None, bias: Tensor | None = None, fold: str | None = None,
                 top: Tensor | None = None) -> tuple[Tensor, Tensor | None, Tensor, Tensor | None]:
    """(hi, lo, t, top) for ``_pack_points_kernel``: the operands of X − ctr and max |x − ctr|
    (float32), or (x − ctr padded, None, t, None) for float64. ``c`` given: the Gaussian row
    term with ``bias``. ``fold``: "query" or "key" (FOLD, float32 Gaussian without bias), with
    ``top`` the keys' when given: one zero-filled operand of the concatenated layout, lo is None."""
    n, d = X.shape
    split = X.dtype == torch.float32
    width = block_d * d_chunks
    hi = (torch.zeros if fold else torch.empty)(n_pad, width, dtype=torch.float16 if split else X.dtype, device=X.device)
    lo = torch.empty_like(hi) if split and not fold else None
    t = torch.empty(n_pad, dtype=X.dtype, device=X.device)
    if split and top is None:  # the same float32 subtractions as the kernel's, at the columns' extremes
        lo_x, hi_x = torch.aminmax(X, dim=0)
        top = torch.maximum(hi_x - ctr, ctr - lo_x).amax().reshape(1)
    block, flags = 64, (c is not None, bias is not None, split, fold is not None, fold == "query")
    _PACK_POINTS(
        (n_pad // block, 1, 1), (X.dtype, fill, block, block_d, d_chunks, flags),
        (X, ctr, top, c, bias, hi, hi if fold else lo, t), (n, d), (),
        lambda: dict(FILL=fill, BLOCK=block, BLOCK_D=block_d, D_CHUNKS=d_chunks, GAUSSIAN=flags[0], BIAS=flags[1],
                     SPLIT=split, EXP2=split, FOLD=flags[3], QUERY=flags[4], num_warps=4),
    )
    return hi, lo, t, top


def _pack_values(W: Tensor, n_pad: int, ldw: int, block_v: int) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """(hi, lo, top) for ``_pack_values_kernel``: the value operand and max |w| per column
    (float32), or (w padded, None, None) for float64."""
    n, m = W.shape
    split = W.dtype == torch.float32
    hi = torch.empty(n_pad, ldw, dtype=torch.float16 if split else W.dtype, device=W.device)
    lo = torch.empty_like(hi) if split else None
    top = torch.linalg.vector_norm(W, ord=math.inf, dim=0) if split else None
    block = 64
    _PACK_VALUES(
        (n_pad // block, ldw // block_v, 1), (W.dtype, block, block_v), (W, top, hi, lo), (n, m, ldw), (),
        lambda: dict(BLOCK=block, BLOCK_V=block_v, SPLIT=split, num_warps=4),
    )
    return hi, lo, top


STATS_PROGRAMS = 256  # programs of ``_stats_kernel`` at most (device-independent: the same sums everywhere)


def _centre(K: Tensor) -> tuple[Tensor, Tensor | None]:
    """(``reference.centre(K)``, max |K − centre| in float32 for float32 K, else None) by two launches
    (the torch form takes ~20 small ones). The float64 mean sums in another order than torch's, so
    the centre can differ from the reference's where the mean sits within rounding of a rounding
    boundary (both are multiples of the same 2^e, as distances need)."""
    n, d = K.shape
    split = K.dtype == torch.float32
    block_d, d_chunks = _features_split(d)
    width, block = block_d * d_chunks, 128
    rows = _host.cdiv(_host.cdiv(n, min(STATS_PROGRAMS, _host.cdiv(n, block))), block) * block
    n_part = _host.cdiv(n, rows)
    part = torch.empty(n_part, 3, width, dtype=torch.float64, device=K.device)
    ctr = torch.empty(d, dtype=K.dtype, device=K.device)
    top = torch.empty(1, dtype=torch.float32, device=K.device) if split else None
    interp = _runtime.interpreting()
    _STATS(
        (n_part, 1, 1), (K.dtype, block, block_d, d_chunks, interp), (K, part), (n, d, rows), (),
        lambda: dict(BLOCK=block, BLOCK_D=block_d, D_CHUNKS=d_chunks, INTERPRET=interp, num_warps=4),
    )
    _CENTRE(
        (1, 1, 1), (K.dtype, block_d, d_chunks, interp), (part, ctr, top), (n_part, n, d), (),
        lambda: dict(BLOCK_P=64, BLOCK_D=block_d, D_CHUNKS=d_chunks, SPLIT=split, INTERPRET=interp, num_warps=4),
    )
    return ctr, top


PACK_ROWS = 128  # packed operands have a multiple of this many rows: every tile's block_m and block_n divide it


class Operands(NamedTuple):
    """The point operands of one Gaussian product (``_pack_operands``): packed once, they serve any
    values (``_apply``). Query side qh, ql, qt, topq; key side kh, kl, kt, topk (``_pack_points``);
    c = beta (times log2(e) with EXP2); isq, isk the inverse bandwidths or None."""

    job: str
    qh: Tensor
    ql: Tensor | None
    qt: Tensor
    topq: Tensor | None
    kh: Tensor
    kl: Tensor | None
    kt: Tensor
    topk: Tensor | None
    c: Tensor
    isq: Tensor | None
    isk: Tensor | None
    n_q: int
    n_k: int
    block_d: int
    d_chunks: int
    same: bool
    fold: bool


def _pack_operands(
    Q: Tensor, K: Tensor, beta: float, *, job: str, sigma_q: Tensor | None = None, sigma_k: Tensor | None = None,
    log_bias: Tensor | None = None,
) -> Operands:
    """The operands of job "matmat", "rowsum", "sym" or "softmax" on queries Q and keys K (``_apply``)."""
    split = exp2 = Q.dtype == torch.float32
    (n_q, d), n_k = Q.shape, K.shape[0]
    symmetric, softmax = job == "sym", job == "softmax"
    same = symmetric or (K is Q and not softmax)  # queries are the keys: no running maximum
    fold = FOLD and split and same and sigma_q is None
    block_d, d_chunks = _features_split(3 * d + 4 if fold else d)
    q_pad, k_pad = _round_up(n_q, PACK_ROWS), _round_up(n_k, PACK_ROWS)
    c = torch.full((1,), beta * _LOG2E if exp2 else beta, dtype=Q.dtype, device=Q.device)
    ctr, topk = _centre(K)
    kh, kl, kt, topk = _pack_points(K, ctr, k_pad, block_d, d_chunks, -math.inf, c=c, bias=log_bias,
                                    fold="key" if fold else None, top=topk)
    if fold:  # one operand each (no lo part); padded keys: zero rows (s = 0, finite) against zero values
        kl = kh
        qh, ql, qt, topq = _pack_points(Q, ctr, q_pad, block_d, d_chunks, 0.0, c=c, fold="query", top=topk)
        ql = qh
    elif K is Q and log_bias is None:  # padded query rows are never stored: their −inf is harmless
        qh, ql, qt, topq = kh, kl, kt, topk
    else:
        qh, ql, qt, topq = _pack_points(Q, ctr, q_pad, block_d, d_chunks, 0.0, c=c)
    isq = None if sigma_q is None else 1.0 / sigma_q
    isk = None if sigma_k is None else (isq if symmetric else 1.0 / sigma_k)
    return Operands(job, qh, ql, qt, topq, kh, kl, kt, topk, c, isq, isk, n_q, n_k, block_d, d_chunks, same, fold)


def _apply(ops: Operands, W: Tensor, row_scale: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
    """One launch of ``_gaussian_tiles_kernel`` for ``ops`` (``_pack_operands``) and values ``W`` (the
    column scale folded in): (out, lse), lse only for "softmax"."""
    split = exp2 = ops.qh.dtype != torch.float64
    n_q, n_k, m, dtype, device = ops.n_q, ops.n_k, W.shape[1], W.dtype, W.device
    symmetric, softmax = ops.job == "sym", ops.job == "softmax"
    width = ops.block_d * ops.d_chunks
    block_v = min(_pow2_at_least(m), 64)
    ldw = _round_up(m, block_v)
    cfg = pick_config(ops.job, dtype, width, block_v, ops.fold)
    block_n = cfg.block_n
    if symmetric and cfg.block_m % block_n:
        raise RuntimeError(f"symmetric tiles need block_m a multiple of block_n, got {cfg}")
    if PACK_ROWS % cfg.block_m or PACK_ROWS % block_n:
        raise RuntimeError(f"tiles {cfg} do not divide the packed operands' {PACK_ROWS}-row multiple")
    k_pad = ops.kh.shape[0]
    wh, wl, vtop = _pack_values(W, k_pad, ldw, block_v)
    n_programs = _host.cdiv(n_q, cfg.block_m) * (ldw // block_v)
    splits = key_splits(n_programs, k_pad // block_n, device) if ops.same and not symmetric else 1
    keys_per_split = _host.cdiv(k_pad // block_n, splits) * block_n
    splits = _host.cdiv(n_k, keys_per_split)
    out = (torch.zeros if symmetric else torch.empty)((splits, n_q, m), dtype=dtype, device=device)
    lse = torch.empty(n_q, dtype=dtype, device=device) if softmax else None
    flags = (ops.job, row_scale is not None, ops.isq is not None, ops.same, ops.fold, ops.fold and _mask_split(width, block_v))
    _TILES(
        (_host.cdiv(n_q, cfg.block_m), ldw // block_v, splits), (dtype, cfg, ops.block_d, ops.d_chunks, block_v, flags),
        (ops.qh, ops.ql, ops.kh, ops.kl, wh, wl, out, lse, ops.c, ops.topq, ops.topk, ops.qt, ops.kt, row_scale, ops.isq,
         ops.isk, vtop),
        (n_q, n_k, m, ldw, keys_per_split), (),
        lambda: dict(
            BLOCK_M=cfg.block_m, BLOCK_N=block_n, BLOCK_D=ops.block_d, D_CHUNKS=ops.d_chunks, BLOCK_V=block_v,
            ROW_SCALE=flags[1], SIGMA=flags[2], SOFTMAX=softmax, SYMMETRIC=symmetric, SAME=ops.same, SPLIT=split,
            EXP2=exp2, FOLD=ops.fold, MASK_SPLIT=flags[5], INTERPRET=_runtime.interpreting(), num_warps=cfg.num_warps,
            num_stages=cfg.num_stages, maxnreg=cfg.maxnreg,
        ),
    )
    return (out[0] if splits == 1 else out.sum(0)), lse


def _gaussian_launch(
    Q: Tensor, K: Tensor, W: Tensor, beta: float, *, job: str, row_scale: Tensor | None = None,
    sigma_q: Tensor | None = None, sigma_k: Tensor | None = None, log_bias: Tensor | None = None,
) -> tuple[Tensor, Tensor | None]:
    """``_apply`` of freshly packed operands: one product of job "matmat", "rowsum", "sym" or "softmax";
    ``W`` holds the values with the column scale folded in."""
    ops = _pack_operands(Q, K, beta, job=job, sigma_q=sigma_q, sigma_k=sigma_k, log_bias=log_bias)
    return _apply(ops, W, row_scale)


def _scaled(V: Tensor, scale: Tensor | None) -> Tensor:
    return V if scale is None else V * scale[:, None]


def _launch_matmat(Q, K, V, beta, *, row_scale, col_scale, sigma_q, sigma_k) -> Tensor:
    return _gaussian_launch(
        Q, K, _scaled(V, col_scale), beta, job="matmat", row_scale=row_scale, sigma_q=sigma_q, sigma_k=sigma_k
    )[0]


def _launch_rowsum(Q, K, beta, *, col_scale, sigma_q, sigma_k) -> Tensor:
    W = K.new_ones(K.shape[0], 1) if col_scale is None else col_scale[:, None]
    out, _ = _gaussian_launch(Q, K, W, beta, job="rowsum", sigma_q=sigma_q, sigma_k=sigma_k)
    return out.view(-1)


def _launch_matmat_sym(X, V, beta, *, scale, sigma) -> Tensor:
    return _gaussian_launch(X, X, _scaled(V, scale), beta, job="sym", row_scale=scale, sigma_q=sigma, sigma_k=sigma)[0]


def _launch_softmax_apply(Q, K, V, beta, *, log_bias) -> tuple[Tensor, Tensor]:
    return _gaussian_launch(Q, K, V, beta, job="softmax", log_bias=log_bias)


def _launch_knn(Q, K, k, *, exclude_self) -> tuple[Tensor, Tensor]:
    (n_q, d), n_k = Q.shape, K.shape[0]
    block_d, d_chunks = _features_split(d)
    cfg = pick_config("knn", Q.dtype, block_d * d_chunks, 16)
    q_pad, k_pad = _round_up(n_q, max(cfg.block_m, 64)), _round_up(n_k, max(cfg.block_n, 64))
    ctr, topk = _centre(K)
    qh, ql, qt, topq = _pack_points(Q, ctr, q_pad, block_d, d_chunks, 0.0)
    kh, kl, kt, topk = _pack_points(K, ctr, k_pad, block_d, d_chunks, math.inf, top=topk)
    dist = torch.empty(n_q, k, dtype=Q.dtype, device=Q.device)
    index = torch.empty(n_q, k, dtype=torch.int64, device=Q.device)
    _knn_kernel[(_host.cdiv(n_q, cfg.block_m),)](
        qh, ql, kh, kl, topq, topk, qt, kt, dist, index, n_q, n_k, k,
        BLOCK_M=cfg.block_m, BLOCK_N=cfg.block_n, BLOCK_D=block_d, D_CHUNKS=d_chunks, K_PAD=_pow2_at_least(k, 1),
        EXCLUDE_SELF=exclude_self, SPLIT=ql is not None, INTERPRET=_runtime.interpreting(), num_warps=cfg.num_warps,
    )
    return dist, index


def _launch_bgh_sums(X, eps) -> Tensor:
    n, d = X.shape
    exp2 = X.dtype == torch.float32
    block_d, d_chunks = _features_split(d)
    cfg = pick_config("bgh", X.dtype, block_d * d_chunks, 16)
    n_pad = _round_up(n, max(cfg.block_m, 64))
    eps_pad = _pow2_at_least(eps.shape[0], 1)
    ieps = (1.0 / eps.to(torch.float64)) * (_LOG2E if exp2 else 1.0)
    ctr, top = _centre(X)
    xh, xl, xt, top = _pack_points(X, ctr, n_pad, block_d, d_chunks, math.inf, top=top)
    n_prog = _host.cdiv(n, cfg.block_m)
    part = torch.empty(n_prog, eps_pad, dtype=torch.float64, device=X.device)
    _bgh_kernel[(n_prog,)](
        xh, xl, xh, xl, top, xt, ieps, part, n, eps.shape[0],
        BLOCK=cfg.block_m, BLOCK_D=block_d, D_CHUNKS=d_chunks, EPS_PAD=eps_pad, SPLIT=xl is not None, EXP2=exp2,
        INTERPRET=_runtime.interpreting(), num_warps=cfg.num_warps,
    )
    return part.sum(0)[: eps.shape[0]]
