"""The scan as PyTorch operators: ``flashmarkov::linear_scan`` (differentiable),
``flashmarkov::linear_scan_bwd`` and ``flashmarkov::linear_scan_out`` (writes into ``out``).

One custom op per job, whatever the device: its implementation asks ``_runtime.backend_for``
and runs the Triton launcher or the reference. Fake implementations give torch.compile the
output metadata, so compiled graphs hold the ops without graph breaks. Outputs are laid out like
their inputs (``torch.empty_like``) on every backend, so real and fake agree.
"""

from __future__ import annotations

import functools

import torch

from .. import _runtime
from . import reference

Tensor = torch.Tensor


def _state_shape(tokens: Tensor, dim: int, cu_seqlens: Tensor | None) -> list[int]:
    shape = [s for i, s in enumerate(tokens.shape) if i != dim % tokens.dim()]
    return shape if cu_seqlens is None else [cu_seqlens.shape[0] - 1, *shape]


@functools.cache
def _kernels():
    """``flashmarkov.scan.kernels``, imported on first use (it imports Triton)."""
    from . import kernels

    return kernels


def _like(t: Tensor | None, gates: Tensor, stride: tuple[int, ...], keep_values: bool) -> Tensor | None:
    """``t`` itself when laid out like ``gates`` (the usual case), else a work tensor laid out like
    ``gates`` holding a copy of ``t`` when ``keep_values``."""
    if t is None or t.stride() == stride:
        return t
    work = torch.empty_like(gates, dtype=t.dtype)
    return work.copy_(t) if keep_values else work


def _triton_pass(
    gates: Tensor,
    tokens: Tensor,
    out: Tensor,
    dim: int,
    reverse: bool,
    *,
    initial_state: Tensor | None,
    state_out: Tensor | None,
    cu_seqlens: Tensor | None,
    y: Tensor | None = None,
    dgates: Tensor | None = None,
    dfinal: Tensor | None = None,
) -> None:
    """One Triton pass writing ``out`` (and ``dgates``, ``state_out``).

    Runs on the data as it lies when ``gates`` has a copy-free (P, T, Q) view; other tensors
    whose strides differ from ``gates``' are brought to them (a copy), as is ``gates`` itself when
    it has no such view.
    """
    kernels = _kernels()
    dim = dim % gates.dim()
    view = kernels.view_of(gates, dim)
    if view is None:
        gates = gates.contiguous()
        view = kernels.view_of(gates, dim)
    stride = gates.stride()
    work = (_like(tokens, gates, stride, True), _like(out, gates, stride, False), _like(y, gates, stride, True),
            _like(dgates, gates, stride, False))
    kernels.scan_launch(
        gates, work[0], work[1], view,
        reverse=reverse, initial_state=None if initial_state is None else initial_state.contiguous(),
        state_out=state_out, cu_seqlens=cu_seqlens, y=work[2], dgates=work[3],
        dfinal=None if dfinal is None else dfinal.contiguous(),
    )
    for dst, src in ((out, work[1]), (dgates, work[3])):
        if dst is not None and src is not dst:
            dst.copy_(src)


def _fwd(
    gates: Tensor,
    tokens: Tensor,
    initial_state: Tensor | None,
    cu_seqlens: Tensor | None,
    dim: int,
    reverse: bool,
    need_final: bool,
) -> tuple[Tensor, Tensor | None]:
    """(y, final state or None unless ``need_final``)."""
    y = torch.empty_like(tokens)
    if _runtime.backend_for(tokens.device) == "reference":
        y_ref, final = reference.linear_scan_ref(
            gates, tokens, dim=dim, reverse=reverse, initial_state=initial_state,
            return_final_state=True, cu_seqlens=cu_seqlens,
        )
        y.copy_(y_ref)
        return y, (final.contiguous() if need_final else None)
    final = None
    if need_final:
        final = tokens.new_empty(_state_shape(tokens, dim, cu_seqlens))
        if cu_seqlens is not None:  # empty sequences keep their initial state
            final.copy_(initial_state) if initial_state is not None else final.zero_()
    _triton_pass(gates, tokens, y, dim, reverse, initial_state=initial_state, state_out=final, cu_seqlens=cu_seqlens)
    return y, final


def scan_fwd(
    gates: Tensor,
    tokens: Tensor,
    initial_state: Tensor | None,
    cu_seqlens: Tensor | None,
    dim: int,
    reverse: bool,
    need_final: bool,
) -> tuple[Tensor, Tensor]:
    """(y, final state); the final state is an empty tensor unless ``need_final``."""
    y, final = _fwd(gates, tokens, initial_state, cu_seqlens, dim, reverse, need_final)
    return y, (final if final is not None else tokens.new_empty(0))


linear_scan_op = torch.library.custom_op("flashmarkov::linear_scan", scan_fwd, mutates_args=())


@linear_scan_op.register_fake
def _(gates, tokens, initial_state, cu_seqlens, dim, reverse, need_final):
    final = tokens.new_empty(_state_shape(tokens, dim, cu_seqlens) if need_final else [0])
    return torch.empty_like(tokens), final


def _bwd(
    gates: Tensor,
    y: Tensor,
    dy: Tensor,
    initial_state: Tensor | None,
    dfinal: Tensor | None,
    cu_seqlens: Tensor | None,
    dim: int,
    reverse: bool,
) -> tuple[Tensor, Tensor, Tensor | None]:
    """(d gates, d tokens, d initial_state or None without an initial state)."""
    dgates, dtokens = torch.empty_like(gates), torch.empty_like(y)
    if _runtime.backend_for(y.device) == "reference":
        dg, dx, dh0 = _bwd_ref(gates, y, dy, initial_state, dfinal, cu_seqlens, dim, reverse)
        dgates.copy_(dg)
        dtokens.copy_(dx)
        return dgates, dtokens, (dh0.contiguous() if dh0 is not None else None)
    dh0 = None
    if initial_state is not None:
        dh0 = torch.empty_like(initial_state, memory_format=torch.contiguous_format)
        if cu_seqlens is not None:  # empty sequences pass the final state's gradient through
            dh0.copy_(dfinal) if dfinal is not None else dh0.zero_()
    _triton_pass(
        gates, dy, dtokens, dim, reverse, initial_state=initial_state, state_out=dh0,
        cu_seqlens=cu_seqlens, y=y, dgates=dgates, dfinal=dfinal,
    )
    return dgates, dtokens, dh0


def _bwd_ref(
    gates: Tensor,
    y: Tensor,
    dy: Tensor,
    initial_state: Tensor | None,
    dfinal: Tensor | None,
    cu_seqlens: Tensor | None,
    dim: int,
    reverse: bool,
) -> tuple[Tensor, Tensor, Tensor | None]:
    """``_bwd`` by the PyTorch reference: torch ops throughout, so autograd can differentiate the
    gradients again (``LinearScanFunction`` under ``create_graph``)."""
    return reference.linear_scan_bwd_ref(
        gates, y, dy, dim=dim, reverse=reverse, initial_state=initial_state, dfinal=dfinal, cu_seqlens=cu_seqlens,
    )


def scan_bwd(
    gates: Tensor,
    y: Tensor,
    dy: Tensor,
    initial_state: Tensor | None,
    dfinal: Tensor | None,
    cu_seqlens: Tensor | None,
    dim: int,
    reverse: bool,
) -> tuple[Tensor, Tensor, Tensor]:
    """(d gates, d tokens, d initial_state); the last is empty without an initial state."""
    dg, dx, dh0 = _bwd(gates, y, dy, initial_state, dfinal, cu_seqlens, dim, reverse)
    return dg, dx, (dh0 if dh0 is not None else y.new_empty(0))


linear_scan_bwd_op = torch.library.custom_op("flashmarkov::linear_scan_bwd", scan_bwd, mutates_args=())


@linear_scan_bwd_op.register_fake
def _(gates, y, dy, initial_state, dfinal, cu_seqlens, dim, reverse):
    dh0 = y.new_empty(0) if initial_state is None else torch.empty_like(initial_state, memory_format=torch.contiguous_format)
    return torch.empty_like(gates), torch.empty_like(y), dh0


def _setup_context(ctx, inputs, output) -> None:
    gates, _, initial_state, cu_seqlens, dim, reverse, need_final = inputs
    ctx.save_for_backward(gates, output[0], initial_state, cu_seqlens)
    ctx.dim, ctx.reverse, ctx.need_final = dim, reverse, need_final


def _gradients(ctx, dy: Tensor | None, dfinal: Tensor | None, bwd) -> tuple:
    """Input gradients of (gates, tokens, initial_state, cu_seqlens, dim, reverse, need_final)
    through ``bwd``: the backward op (traced by torch.compile) or its plain function (eager)."""
    gates, y, initial_state, cu_seqlens = ctx.saved_tensors
    if dy is None:
        dy = torch.zeros_like(y)
    if not ctx.need_final:
        dfinal = None
    dg, dx, dh0 = bwd(gates, y, dy, initial_state, dfinal, cu_seqlens, ctx.dim, ctx.reverse)
    return dg, dx, (dh0 if initial_state is not None else None), None, None, None, None


def _backward(ctx, dy: Tensor | None, dfinal: Tensor | None):
    return _gradients(ctx, dy, dfinal, linear_scan_bwd_op)


linear_scan_op.register_autograd(_backward, setup_context=_setup_context)


class LinearScanFunction(torch.autograd.Function):
    """The eager path: the same forward and backward as ``flashmarkov::linear_scan`` without the
    custom-op dispatch layers, which cost more host time than a short scan takes on the GPU.
    ``linear_scan`` uses the custom op while torch.compile traces. Returns ``y`` alone unless
    ``need_final`` (then ``(y, final)``): no placeholder tensors on the eager path. A backward under
    ``create_graph=True`` runs the reference backward, which autograd differentiates again."""

    @staticmethod
    def forward(ctx, gates, tokens, initial_state, cu_seqlens, dim, reverse, need_final):
        y, final = _fwd(gates, tokens, initial_state, cu_seqlens, dim, reverse, need_final)
        _setup_context(ctx, (gates, tokens, initial_state, cu_seqlens, dim, reverse, need_final), (y, final))
        return (y, final) if need_final else y

    @staticmethod
    def backward(ctx, dy, dfinal=None):
        return _gradients(ctx, dy, dfinal, _bwd_ref if torch.is_grad_enabled() else _bwd)


def scan_out(gates: Tensor, tokens: Tensor, out: Tensor, dim: int, reverse: bool) -> None:
    """Forward scan written into ``out`` (no autograd)."""
    if _runtime.backend_for(tokens.device) == "reference":
        out.copy_(reference.linear_scan_ref(gates, tokens, dim=dim, reverse=reverse))
        return
    _triton_pass(gates, tokens, out, dim, reverse, initial_state=None, state_out=None, cu_seqlens=None)


linear_scan_out_op = torch.library.custom_op("flashmarkov::linear_scan_out", scan_out, mutates_args=("out",))


@linear_scan_out_op.register_fake
def _(gates, tokens, out, dim, reverse):
    return None
