"""``flashmarkov.scan``: the first-order linear recurrence y[t] = g[t] * y[t-1] + x[t].

``linear_scan`` is the general entry point; ``pscan`` and ``scan_forward`` keep fpscan's names and
meaning for its users, without its restrictions (any length, any layout, any float dtype).
CUDA tensors run Triton kernels at the memory-bandwidth limit; other tensors run the PyTorch
reference (``flashmarkov.scan.reference.linear_scan_ref``), which is exact.
"""

from __future__ import annotations

import torch

from .. import _checks
from .op import LinearScanFunction, linear_scan_op, linear_scan_out_op, scan_out
from .op import _fwd as scan_fwd_eager
from .reference import linear_scan_bwd_ref, linear_scan_ref

Tensor = torch.Tensor

__all__ = ["linear_scan", "pscan", "scan_forward", "linear_scan_ref", "linear_scan_bwd_ref"]


def _validate(
    gates: object, tokens: object, dim: object, reverse: object, initial_state: object, cu_seqlens: object
) -> tuple[Tensor, Tensor, int, Tensor | None, Tensor | None]:
    gates = _checks.check_tensor("gates", gates)
    tokens = _checks.check_tensor("tokens", tokens)
    _checks.check_like("tokens", tokens, "gates", gates)
    dim = _checks.check_dim("dim", dim, tokens.dim())
    _checks.check_flag("reverse", reverse)
    length = tokens.shape[dim]
    if length == 0:
        raise ValueError(f"the scanned axis dim={dim} of tokens {tuple(tokens.shape)} has length T = 0; need T >= 1")
    if cu_seqlens is None and initial_state is None:
        return gates, tokens, dim, None, None
    state_shape = [s for i, s in enumerate(tokens.shape) if i != dim]
    why = "the input's shape without dim"
    if cu_seqlens is not None:
        cu_seqlens = _checks.check_offsets("cu_seqlens", cu_seqlens, length, tokens.device)
        state_shape = [cu_seqlens.shape[0] - 1, *state_shape]
        why = "(number of sequences, *the input's shape without dim)"
    if initial_state is not None:
        initial_state = _checks.check_tensor("initial_state", initial_state, min_ndim=0)
        _checks.check_like("initial_state", initial_state, "tokens", tokens, shape=False)
        _checks.check_shape("initial_state", initial_state, state_shape, why)
    return gates, tokens, dim, initial_state, cu_seqlens


def linear_scan(
    gates: Tensor,
    tokens: Tensor,
    *,
    dim: int = -1,
    reverse: bool = False,
    initial_state: Tensor | None = None,
    return_final_state: bool = False,
    cu_seqlens: Tensor | None = None,
) -> Tensor | tuple[Tensor, Tensor]:
    """First-order linear recurrence along ``dim``.

    ``y[t] = gates[t] * y[t-1] + tokens[t]`` with ``y[-1] = initial_state`` (zero by default);
    with ``reverse=True``, ``y[t] = gates[t] * y[t+1] + tokens[t]`` from the end.

    Args:
        gates, tokens: same shape, dtype (float16, bfloat16, float32 or float64) and device; any
            rank; the scanned axis ``dim`` has any length T >= 1. Gates may be negative, zero or > 1.
        dim: the time axis. (B, D, T) with ``dim=-1`` and (B, T, D) with ``dim=1`` both run
            without a transpose copy.
        reverse: scan from the end.
        initial_state: the state before the first step, shaped like ``tokens`` without ``dim``
            (with ``cu_seqlens``: (N, *that), one per sequence). Differentiable.
        return_final_state: also return the state after the last step (same shape as
            ``initial_state``); its gradient flows.
        cu_seqlens: int32 offsets (N + 1,) from 0 to T: ``dim`` holds N packed sequences, each
            scanned independently with its own initial and final state (empty ones allowed).

    Returns:
        ``y`` (shape and dtype of ``tokens``), or ``(y, final_state)``. Half-precision inputs
        accumulate in float32. Differentiable in gates, tokens and initial_state.
    """
    gates, tokens, dim, initial_state, cu_seqlens = _validate(gates, tokens, dim, reverse, initial_state, cu_seqlens)
    _checks.check_flag("return_final_state", return_final_state)
    args = (gates, tokens, initial_state, cu_seqlens, dim, reverse, return_final_state)
    if torch.compiler.is_compiling():
        y, final = linear_scan_op(*args)
        return (y, final) if return_final_state else y
    if torch.is_grad_enabled() and (
        gates.requires_grad or tokens.requires_grad or (initial_state is not None and initial_state.requires_grad)
    ):
        return LinearScanFunction.apply(*args)  # y, or (y, final) with return_final_state
    # nothing to differentiate: the same forward without the autograd.Function's bookkeeping
    y, final = scan_fwd_eager(*args)
    return (y, final) if return_final_state else y


def pscan(gates: Tensor, tokens: Tensor) -> Tensor:
    """fpscan's differentiable scan: ``y[..., t] = gates[..., t] * y[..., t-1] + tokens[..., t]``
    along the last axis ((B, D, T) in fpscan), for any length, rank and float dtype."""
    return linear_scan(gates, tokens, dim=-1)


def scan_forward(gates: Tensor, tokens: Tensor, reverse: bool = False, out: Tensor | None = None) -> Tensor:
    """fpscan's forward-only scan along the last axis, optionally reversed, written into ``out``
    when given (same shape, dtype and device as ``tokens``). No autograd."""
    gates, tokens, dim, _, _ = _validate(gates, tokens, -1, reverse, None, None)
    if out is None:
        out = torch.empty_like(tokens)
    else:
        _checks.check_tensor("out", out)
        _checks.check_like("out", out, "tokens", tokens)
    with torch.no_grad():
        if torch.compiler.is_compiling():
            linear_scan_out_op(gates, tokens, out, dim, reverse)
        else:
            scan_out(gates, tokens, out, dim, reverse)
    return out
