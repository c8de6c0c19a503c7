"""α-diffmax along one axis as PyTorch operators: ``flashmarkov::diffmax`` (differentiable in X
and α) and ``flashmarkov::diffmax_bwd``.

α reaches the ops either as a tensor (compute dtype, broadcastable to X with ``dim`` of size 1;
learnable) or, when that is None, as the float ``alpha_value`` (which also lets the kernels
specialise α = 1/2, 2/3, 3/4). Each op's implementation asks ``_runtime.backend_for`` and runs
the Triton launcher (``rows.py``) or the reference. Outputs are laid out like their inputs on
every backend, so real and fake agree.
"""

from __future__ import annotations

import torch

from .. import _runtime
from . import reference

Tensor = torch.Tensor


def _keep_shape(x: Tensor, dim: int) -> list[int]:
    return [1 if i == dim % x.dim() else s for i, s in enumerate(x.shape)]


def _acc(dtype: torch.dtype) -> torch.dtype:
    return reference.compute_dtype(dtype)


def diffmax_fwd(
    X: Tensor, alpha: Tensor | None, alpha_value: float, dim: int, n_iter: int, ensure_sum_one: bool
) -> tuple[Tensor, Tensor]:
    """(p, τ): p like X, τ per row in the keepdim shape and compute dtype (−inf for empty rows)."""
    p = torch.empty_like(X)
    tau = X.new_empty(_keep_shape(X, dim), dtype=_acc(X.dtype))
    if _runtime.backend_for(X.device) == "reference":
        p_ref, tau_ref = reference.diffmax_bisect_ref(
            X, alpha if alpha is not None else alpha_value, dim, n_iter, ensure_sum_one, return_tau=True
        )
        p.copy_(p_ref)
        tau.copy_(tau_ref)
        return p, tau
    from .rows import diffmax_fwd_launch

    diffmax_fwd_launch(X, alpha, alpha_value, dim, n_iter, ensure_sum_one, p, tau.view(-1))
    return p, tau


diffmax_op = torch.library.custom_op("flashmarkov::diffmax", diffmax_fwd, mutates_args=())


@diffmax_op.register_fake
def _(X, alpha, alpha_value, dim, n_iter, ensure_sum_one):
    return torch.empty_like(X), X.new_empty(_keep_shape(X, dim), dtype=_acc(X.dtype))


def diffmax_bwd(
    p: Tensor, dp: Tensor, alpha: Tensor | None, alpha_value: float, dim: int, need_alpha_grad: bool
) -> tuple[Tensor, Tensor]:
    """(dX, dα per row): dX like p; dα in the keepdim shape and compute dtype, or an empty
    tensor without ``need_alpha_grad``."""
    dX = torch.empty_like(p)
    dalpha = p.new_empty(_keep_shape(p, dim) if need_alpha_grad else [0], dtype=_acc(p.dtype))
    if _runtime.backend_for(p.device) == "reference":
        dX_ref, da_ref = _bwd_ref(p, dp, alpha, alpha_value, dim, need_alpha_grad)
        dX.copy_(dX_ref)
        if need_alpha_grad:
            dalpha.copy_(da_ref)
        return dX, dalpha
    from .rows import diffmax_bwd_launch

    diffmax_bwd_launch(p, dp, alpha, alpha_value, dim, dX, dalpha.view(-1) if need_alpha_grad else None)
    return dX, dalpha


def _bwd_ref(
    p: Tensor, dp: Tensor, alpha: Tensor | None, alpha_value: float, dim: int, need_alpha_grad: bool,
) -> tuple[Tensor, Tensor | None]:
    """``diffmax_bwd`` by the PyTorch reference (from p alone): torch ops throughout, so autograd can
    differentiate the gradients again (``DiffmaxFunction`` under ``create_graph``)."""
    return reference.diffmax_bisect_bwd_ref(p, dp, alpha if alpha is not None else alpha_value, dim, need_alpha_grad=need_alpha_grad)


diffmax_bwd_op = torch.library.custom_op("flashmarkov::diffmax_bwd", diffmax_bwd, mutates_args=())


@diffmax_bwd_op.register_fake
def _(p, dp, alpha, alpha_value, dim, need_alpha_grad):
    dalpha = p.new_empty(_keep_shape(p, dim) if need_alpha_grad else [0], dtype=_acc(p.dtype))
    return torch.empty_like(p), dalpha


def _setup_context(ctx, inputs, output) -> None:
    X, alpha, alpha_value, dim, _, _ = inputs
    ctx.save_for_backward(output[0], alpha)
    ctx.alpha_value, ctx.dim = alpha_value, dim


def _gradients(ctx, dp: Tensor | None, bwd) -> tuple:
    """Input gradients of (X, alpha, alpha_value, dim, n_iter, ensure_sum_one) through ``bwd``:
    the backward op (traced by torch.compile) or its plain function (eager)."""
    p, alpha = ctx.saved_tensors
    if dp is None:
        dp = torch.zeros_like(p)
    need_alpha = alpha is not None and ctx.needs_input_grad[1]
    dX, dalpha = bwd(p, dp, alpha, ctx.alpha_value, ctx.dim, need_alpha)
    d_alpha = dalpha.sum_to_size(alpha.shape) if need_alpha else None
    return dX, d_alpha, None, None, None, None


def _backward(ctx, dp: Tensor | None, dtau: Tensor | None):
    return _gradients(ctx, dp, diffmax_bwd_op)


diffmax_op.register_autograd(_backward, setup_context=_setup_context)


class DiffmaxFunction(torch.autograd.Function):
    """The eager path: the forward and backward of ``flashmarkov::diffmax`` without the custom-op
    dispatch layers (host time that a small call on the GPU would notice); ``diffmax_bisect``
    uses the custom op while torch.compile traces. Gradients are not materialised: the engine
    would otherwise fill a zero tensor for τ's (never used) gradient on every backward. A backward
    under ``create_graph=True`` runs the reference backward, which autograd differentiates again."""

    @staticmethod
    def forward(ctx, X, alpha, alpha_value, dim, n_iter, ensure_sum_one):
        ctx.set_materialize_grads(False)
        p, tau = diffmax_fwd(X, alpha, alpha_value, dim, n_iter, ensure_sum_one)
        _setup_context(ctx, (X, alpha, alpha_value, dim, n_iter, ensure_sum_one), (p, tau))
        ctx.mark_non_differentiable(tau)
        return p, tau

    @staticmethod
    def backward(ctx, dp, dtau):
        return _gradients(ctx, dp, _bwd_ref if torch.is_grad_enabled() else diffmax_bwd)


def _states_shape(q: Tensor, Sk: int) -> list[int]:
    from .attention import pick_config

    cfg = pick_config(q.shape[-1], q.element_size())
    return [q.shape[0], q.shape[1], -(-q.shape[2] // cfg.block_m), -(-Sk // cfg.block_n)]


def attention_fwd(
    q: Tensor, k: Tensor, v: Tensor, alpha: float, causal: bool, scale: float, wl: int, wr: int, n_iter: int
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(o, τ, 1/S, tile states) of diffmax attention; see ``attention.py`` and ``reference.py``."""
    if _runtime.backend_for(q.device) == "reference":
        from .attention import pick_config

        cfg = pick_config(q.shape[-1], q.element_size())
        o, tau, rn, states = reference.diffmax_attention_ref(
            q, k, v, alpha, causal=causal, softmax_scale=scale, window=(wl, wr), n_iter=n_iter,
            block=(cfg.block_m, cfg.block_n),
        )
        return o, tau, rn, states
    from .attention import attention_fwd_launch

    return attention_fwd_launch(q, k, v, alpha, causal, scale, (wl, wr), n_iter)


diffmax_attention_op = torch.library.custom_op("flashmarkov::diffmax_attention", attention_fwd, mutates_args=())


@diffmax_attention_op.register_fake
def _(q, k, v, alpha, causal, scale, wl, wr, n_iter):
    B, Hq, Sq, _ = q.shape
    acc = _acc(q.dtype)
    return (
        q.new_empty(B, Hq, Sq, v.shape[-1]),
        q.new_empty(B, Hq, Sq, dtype=acc),
        q.new_empty(B, Hq, Sq, dtype=acc),
        q.new_empty(_states_shape(q, k.shape[2]), dtype=torch.int8),
    )


def attention_bwd_ref(
    q: Tensor, k: Tensor, v: Tensor, do: Tensor, tau: Tensor, rn: Tensor, states: Tensor,
    alpha: float, causal: bool, scale: float, wl: int, wr: int, n_iter: int,
) -> tuple[Tensor, Tensor, Tensor]:
    """``attention_bwd`` by the PyTorch reference: torch ops throughout, with the weights' threshold τ
    carrying its exact derivatives (``reference.diffmax_bisect_ref``), so autograd differentiates the
    gradients again (``DiffmaxAttentionFunction`` under ``create_graph``; O(Sq·Sk) memory per chunk)."""
    return reference.diffmax_attention_bwd_ref(
        q, k, v, do, alpha, causal=causal, softmax_scale=scale, window=(wl, wr), n_iter=n_iter
    )


def attention_bwd(
    q: Tensor, k: Tensor, v: Tensor, do: Tensor, tau: Tensor, rn: Tensor, states: Tensor,
    alpha: float, causal: bool, scale: float, wl: int, wr: int, n_iter: int,
) -> tuple[Tensor, Tensor, Tensor]:
    """(dq, dk, dv) of diffmax attention."""
    if _runtime.backend_for(q.device) == "reference":
        return attention_bwd_ref(q, k, v, do, tau, rn, states, alpha, causal, scale, wl, wr, n_iter)
    from .attention import attention_bwd_launch

    return attention_bwd_launch(q, k, v, do, tau, rn, states, alpha, causal, scale, (wl, wr))


diffmax_attention_bwd_op = torch.library.custom_op(
    "flashmarkov::diffmax_attention_bwd", attention_bwd, mutates_args=()
)


@diffmax_attention_bwd_op.register_fake
def _(q, k, v, do, tau, rn, states, alpha, causal, scale, wl, wr, n_iter):
    return q.new_empty(q.shape), k.new_empty(k.shape), v.new_empty(v.shape)


def _attn_setup_context(ctx, inputs, output) -> None:
    q, k, v, alpha, causal, scale, wl, wr, n_iter = inputs
    ctx.save_for_backward(q, k, v, *output[1:])
    ctx.args = (alpha, causal, scale, wl, wr, n_iter)


def _attn_gradients(ctx, do: Tensor | None, bwd) -> tuple:
    q, k, v, tau, rn, states = ctx.saved_tensors
    if do is None:
        do = q.new_zeros(*q.shape[:3], v.shape[-1])
    dq, dk, dv = bwd(q, k, v, do, tau, rn, states, *ctx.args)
    return dq, dk, dv, None, None, None, None, None, None


def _attn_backward(ctx, do, dtau, drn, dstates):
    return _attn_gradients(ctx, do, diffmax_attention_bwd_op)


diffmax_attention_op.register_autograd(_attn_backward, setup_context=_attn_setup_context)


class DiffmaxAttentionFunction(torch.autograd.Function):
    """The eager path of ``flashmarkov::diffmax_attention`` (no custom-op dispatch layers).
    Gradients are not materialised: the engine would otherwise fill zero tensors for the
    gradients of τ, 1/S and the tile states (three allocations and fill kernels per backward).
    A backward under ``create_graph=True`` runs the reference backward (``attention_bwd_ref``),
    which autograd differentiates again; the kernels' backward is first-order only."""

    @staticmethod
    def forward(ctx, q, k, v, alpha, causal, scale, wl, wr, n_iter):
        ctx.set_materialize_grads(False)
        out = attention_fwd(q, k, v, alpha, causal, scale, wl, wr, n_iter)
        _attn_setup_context(ctx, (q, k, v, alpha, causal, scale, wl, wr, n_iter), out)
        ctx.mark_non_differentiable(*out[1:])
        return out

    @staticmethod
    def backward(ctx, do, dtau, drn, dstates):
        return _attn_gradients(ctx, do, attention_bwd_ref if torch.is_grad_enabled() else attention_bwd)
