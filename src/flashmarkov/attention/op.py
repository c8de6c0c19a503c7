"""Attention as PyTorch operators: ``flashmarkov::attention`` (forward, differentiable, returns
(o, lse)) and ``flashmarkov::attention_bwd`` (dq, dk, dv).

Both take canonical tensors: dense (B, H, S, D) views (a "bshd" tensor is passed as its
transposed view, no copy) or packed (total, H, D) with int32 offsets ``cu_q`` / ``cu_k``. The
implementation asks ``_runtime.backend_for``: Triton for float16/bfloat16/float32, the reference
for float64 and on the reference backend. Outputs are allocated with ``torch.empty_like`` of
their input on every backend, so real and fake tensors agree. The backward's lse gradient
(``dlse``) is honoured: lse is a differentiable output.
"""

from __future__ import annotations

import functools

import torch

from .. import _runtime
from . import reference

Tensor = torch.Tensor


def _use_triton(x: Tensor) -> bool:
    return x.dtype != torch.float64 and _runtime.backend_for(x.device) == "triton"


def _lse_like(q: Tensor, cu_q: Tensor | None) -> Tensor:
    """lse: (B, Hq, Sq) dense or (Hq, total_q) varlen, float32 (float64 for float64 q)."""
    shape = q.shape[:3] if cu_q is None else (q.shape[1], q.shape[0])
    return q.new_empty(shape, dtype=reference.acc_dtype(q.dtype))


def _reference(
    q: Tensor, k: Tensor, v: Tensor, cu_q: Tensor | None, cu_k: Tensor | None,
    causal: bool, scale: float, wl: int, wr: int, softcap: float,
) -> tuple[Tensor, Tensor]:
    kw = dict(causal=causal, softmax_scale=scale, window=(wl, wr), softcap=softcap, return_lse=True)
    if cu_q is None:
        return reference.flash_attention_ref(q, k, v, **kw)
    return reference.flash_attention_varlen_ref(q, k, v, cu_q, cu_k, 0, 0, **kw)


def attention_fwd(
    q: Tensor, k: Tensor, v: Tensor, cu_q: Tensor | None, cu_k: Tensor | None, max_sq: int, max_sk: int,
    causal: bool, scale: float, wl: int, wr: int, softcap: float,
) -> tuple[Tensor, Tensor]:
    """(o like q, lse) for canonical tensors (module docstring)."""
    o, lse = torch.empty_like(q), _lse_like(q, cu_q)
    if not _use_triton(q):
        o_ref, lse_ref = _reference(q, k, v, cu_q, cu_k, causal, scale, wl, wr, softcap)
        o.copy_(o_ref)
        lse.copy_(lse_ref)
        return o, lse
    fwd = _kernels()[0]
    fwd.attention_forward(q, k, v, o, lse, fwd.make_problem(q, k, cu_q, cu_k, max_sq, max_sk, scale, causal, wl, wr, softcap))
    return o, lse


@functools.cache
def _kernels() -> tuple:
    """(forward, backward) kernel modules, imported on first use (they import Triton)."""
    from . import backward, forward

    return forward, backward


attention_op = torch.library.custom_op("flashmarkov::attention", attention_fwd, mutates_args=())


@attention_op.register_fake
def _(q, k, v, cu_q, cu_k, max_sq, max_sk, causal, scale, wl, wr, softcap):
    return torch.empty_like(q), _lse_like(q, cu_q)


def attention_bwd_ref(
    do: Tensor, q: Tensor, k: Tensor, v: Tensor, o: Tensor, lse: Tensor, dlse: Tensor | None,
    cu_q: Tensor | None, cu_k: Tensor | None, max_sq: int, max_sk: int,
    causal: bool, scale: float, wl: int, wr: int, softcap: float,
) -> tuple[Tensor, Tensor, Tensor]:
    """``attention_bwd`` by the PyTorch reference: torch ops throughout, so autograd can
    differentiate the gradients again (O(Sq·Sk) memory)."""
    kw = dict(dlse=dlse, causal=causal, softmax_scale=scale, window=(wl, wr), softcap=softcap)
    if cu_q is None:
        return reference.flash_attention_bwd_ref(do, q, k, v, **kw)
    return reference.flash_attention_varlen_bwd_ref(do, q, k, v, cu_q, cu_k, **kw)


def attention_bwd(
    do: Tensor, q: Tensor, k: Tensor, v: Tensor, o: Tensor, lse: Tensor, dlse: Tensor | None,
    cu_q: Tensor | None, cu_k: Tensor | None, max_sq: int, max_sk: int,
    causal: bool, scale: float, wl: int, wr: int, softcap: float,
) -> tuple[Tensor, Tensor, Tensor]:
    """(dq, dk, dv) like (q, k, v); ``dlse`` may be None (lse unused)."""
    dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
    if not _use_triton(q):
        grads = attention_bwd_ref(do, q, k, v, o, lse, dlse, cu_q, cu_k, max_sq, max_sk, causal, scale, wl, wr, softcap)
        for dst, src in zip((dq, dk, dv), grads, strict=True):
            dst.copy_(src)
        return dq, dk, dv
    fwd, bwd = _kernels()
    prob = fwd.make_problem(q, k, cu_q, cu_k, max_sq, max_sk, scale, causal, wl, wr, softcap)
    bwd.attention_backward(do, q, k, v, o, lse, dlse, dq, dk, dv, prob)
    return dq, dk, dv


attention_bwd_op = torch.library.custom_op("flashmarkov::attention_bwd", attention_bwd, mutates_args=())


@attention_bwd_op.register_fake
def _(do, q, k, v, o, lse, dlse, cu_q, cu_k, max_sq, max_sk, causal, scale, wl, wr, softcap):
    return torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)


_PARAMS = ("cu_q", "cu_k", "max_sq", "max_sk", "causal", "scale", "wl", "wr", "softcap")


def _setup_context(ctx, inputs, output) -> None:
    q, k, v, cu_q, cu_k, *params = inputs
    ctx.save_for_backward(q, k, v, output[0], output[1], cu_q, cu_k)
    ctx.params = tuple(params)


def _gradients(ctx, do: Tensor | None, dlse: Tensor | None, bwd) -> tuple:
    """Gradients of (q, k, v, cu_q, cu_k, max_sq, max_sk, causal, scale, wl, wr, softcap) through
    ``bwd``: the backward op (traced by torch.compile) or its plain function (eager)."""
    q, k, v, o, lse, cu_q, cu_k = ctx.saved_tensors
    if do is None:
        do = torch.zeros_like(o)
    dq, dk, dv = bwd(do, q, k, v, o, lse, dlse, cu_q, cu_k, *ctx.params)
    return (dq, dk, dv) + (None,) * len(_PARAMS)


def _backward(ctx, do: Tensor | None, dlse: Tensor | None):
    return _gradients(ctx, do, dlse, attention_bwd_op)


attention_op.register_autograd(_backward, setup_context=_setup_context)


class AttentionFunction(torch.autograd.Function):
    """The eager path: the same forward and backward as ``flashmarkov::attention`` without the
    custom-op dispatch layers (host time that matters for short sequences). Gradients are not
    materialised, so an unused lse costs nothing in the backward. A backward under
    ``create_graph=True`` (a second derivative to come) runs the reference backward, whose torch
    ops autograd differentiates again; the kernels' backward is first-order only."""

    @staticmethod
    def forward(ctx, q, k, v, cu_q, cu_k, max_sq, max_sk, causal, scale, wl, wr, softcap):
        ctx.set_materialize_grads(False)
        o, lse = attention_fwd(q, k, v, cu_q, cu_k, max_sq, max_sk, causal, scale, wl, wr, softcap)
        _setup_context(ctx, (q, k, v, cu_q, cu_k, max_sq, max_sk, causal, scale, wl, wr, softcap), (o, lse))
        return o, lse

    @staticmethod
    def backward(ctx, do, dlse):
        return _gradients(ctx, do, dlse, attention_bwd_ref if torch.is_grad_enabled() else attention_bwd)
