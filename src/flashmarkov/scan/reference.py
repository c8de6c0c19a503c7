"""The linear recurrence in plain PyTorch: the test oracle and the path CPU tensors take.

    y[t] = g[t] * y[t-1] + x[t],  y[-1] = h0          (reverse: y[t] = g[t] * y[t+1] + x[t])

Computed as a blocked scan (a sequential pass inside blocks of ~sqrt(T) steps, vectorised over
blocks, then a sequential pass over block carries), which is the sequential recurrence
re-associated: 2*sqrt(T) Python steps instead of T. Packed variable-length sequences reset the
recurrence at each start: the gate there becomes 0 and the initial state enters through the
token, x'[start] = x[start] + g[start] * h0. Half-precision inputs are computed in float32,
float64 in float64. ../math.md section 1 has the formulas, including the backward.
"""

from __future__ import annotations

import math

import torch

Tensor = torch.Tensor


def _acc_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _to_rows(t: Tensor, dim: int, acc: torch.dtype) -> Tensor:
    """(..., T, ...) with T at ``dim`` -> (R, T) in ``acc``, R the product of the other sizes."""
    t = t.movedim(dim, -1).to(acc)
    return t.reshape(-1, t.shape[-1])


def _from_rows(r: Tensor, like: Tensor, dim: int) -> Tensor:
    """Inverse of ``_to_rows``: (R, T) -> the shape of ``like`` in its dtype."""
    moved = like.movedim(dim, -1).shape
    return r.reshape(moved).movedim(-1, dim).to(like.dtype)


def _states_to_rows(state: Tensor | None, n_seq: int, n_rows: int, acc: torch.dtype, device: torch.device) -> Tensor:
    """A state of shape (*other) or (N, *other) -> (N, R) in ``acc``; zeros when absent."""
    if state is None:
        return torch.zeros(n_seq, n_rows, dtype=acc, device=device)
    return state.to(acc).reshape(n_seq, n_rows)


def _scan_rows(g: Tensor, x: Tensor) -> Tensor:
    """Forward scan of (R, T) rows from a zero state, blocked: exact re-association of the loop."""
    n_rows, length = g.shape
    block = max(1, math.isqrt(length))
    n_blocks = -(-length // block)
    pad = n_blocks * block - length
    if pad:
        g = torch.cat([g, g.new_ones(n_rows, pad)], dim=1)
        x = torch.cat([x, x.new_zeros(n_rows, pad)], dim=1)
    g = g.view(n_rows, n_blocks, block)
    x = x.view(n_rows, n_blocks, block)
    # inside each block: a = running product of gates, b = running scan from zero
    a_cols, b_cols = [], []
    a, b = torch.ones_like(g[..., 0]), torch.zeros_like(x[..., 0])
    for i in range(block):
        a = a * g[..., i]
        b = g[..., i] * b + x[..., i]
        a_cols.append(a)
        b_cols.append(b)
    a_blk, b_blk = torch.stack(a_cols, dim=-1), torch.stack(b_cols, dim=-1)  # [R, n_blocks, block]
    # across blocks: the state entering each block
    carries, h = [], torch.zeros_like(x[:, 0, 0])
    for k in range(n_blocks):
        carries.append(h)
        h = a_blk[:, k, -1] * h + b_blk[:, k, -1]
    carry_in = torch.stack(carries, dim=-1)  # [R, n_blocks]
    y = b_blk + a_blk * carry_in[..., None]
    return y.reshape(n_rows, n_blocks * block)[:, :length]


def _boundaries(offsets: Tensor, length: int) -> tuple[Tensor, Tensor, Tensor]:
    """Per position of the packed axis: sequence id, is-start and is-end masks."""
    pos = torch.arange(length, device=offsets.device)
    seq = torch.searchsorted(offsets[1:], pos, right=True)
    return seq, offsets[seq] == pos, offsets[seq + 1] - 1 == pos


def _scan_packed(g: Tensor, x: Tensor, offsets: Tensor, h0: Tensor) -> tuple[Tensor, Tensor]:
    """Forward scan of (R, T) rows holding packed sequences ``offsets`` (int64, N+1 entries), each
    from its own state h0[n] (N, R). Returns y (R, T) and the final states (N, R)."""
    length = g.shape[1]
    seq, start, _ = _boundaries(offsets, length)
    x = torch.where(start, x + g * h0[seq].T, x)
    g = torch.where(start, torch.zeros_like(g), g)
    y = _scan_rows(g, x)
    nonempty = offsets[1:] > offsets[:-1]
    last = (offsets[1:] - 1).clamp(min=0)
    final = torch.where(nonempty[:, None], y[:, last].T, h0)
    return y, final


def _layout(tokens: Tensor, dim: int, cu_seqlens: Tensor | None) -> tuple[int, Tensor]:
    length = tokens.shape[dim]
    if cu_seqlens is None:
        return 1, torch.tensor([0, length], device=tokens.device)
    return cu_seqlens.numel() - 1, cu_seqlens.to(device=tokens.device, dtype=torch.int64)


def _flip_offsets(offsets: Tensor, length: int) -> Tensor:
    return length - offsets.flip(0)


def linear_scan_ref(
    gates: Tensor,
    tokens: Tensor,
    *,
    dim: int = -1,
    reverse: bool = False,
    initial_state: Tensor | None = None,
    return_final_state: bool = False,
    cu_seqlens: Tensor | None = None,
) -> Tensor | tuple[Tensor, Tensor]:
    """Reference ``linear_scan``; same signature and meaning (see ``flashmarkov.scan.linear_scan``).

    No input validation: the public function validates before calling it.
    """
    dim = dim % tokens.dim()
    acc = _acc_dtype(tokens.dtype)
    g, x = _to_rows(gates, dim, acc), _to_rows(tokens, dim, acc)
    n_rows, length = x.shape
    n_seq, offsets = _layout(tokens, dim, cu_seqlens)
    h0 = _states_to_rows(initial_state, n_seq, n_rows, acc, x.device)
    if reverse:
        y, final = _scan_packed(g.flip(1), x.flip(1), _flip_offsets(offsets, length), h0.flip(0))
        y, final = y.flip(1), final.flip(0)
    else:
        y, final = _scan_packed(g, x, offsets, h0)
    y = _from_rows(y, tokens, dim)
    if not return_final_state:
        return y
    state_shape = tuple(s for i, s in enumerate(tokens.shape) if i != dim)
    if cu_seqlens is not None:
        state_shape = (n_seq, *state_shape)
    return y, final.reshape(state_shape).to(tokens.dtype)


def _bwd_packed(
    g: Tensor, y: Tensor, dy: Tensor, offsets: Tensor, h0: Tensor, dfinal: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """Backward of ``_scan_packed`` (forward direction) on (R, T) rows; returns dg, dx, dh0."""
    length = g.shape[1]
    seq, start, end = _boundaries(offsets, length)
    # a[t] = dy[t] + g[t+1] a[t+1] inside a sequence, a[end] = dy[end] + dfinal: a reverse scan whose
    # "initial state" dfinal enters at each end with gate 1.
    g_next = torch.cat([g[:, 1:], g.new_ones(g.shape[0], 1)], dim=1)
    g_next = torch.where(end, torch.ones_like(g_next), g_next)
    a, _ = _scan_packed(g_next.flip(1), dy.flip(1), _flip_offsets(offsets, length), dfinal.flip(0))
    a = a.flip(1)
    y_prev = torch.cat([y.new_zeros(y.shape[0], 1), y[:, :-1]], dim=1)
    y_prev = torch.where(start, h0[seq].T, y_prev)
    nonempty = offsets[1:] > offsets[:-1]
    first = offsets[:-1].clamp(max=length - 1)
    dh0 = torch.where(nonempty[:, None], (g[:, first] * a[:, first]).T, dfinal)
    return a * y_prev, a, dh0


def linear_scan_bwd_ref(
    gates: Tensor,
    y: Tensor,
    dy: Tensor,
    *,
    dim: int = -1,
    reverse: bool = False,
    initial_state: Tensor | None = None,
    dfinal: Tensor | None = None,
    cu_seqlens: Tensor | None = None,
) -> tuple[Tensor, Tensor, Tensor | None]:
    """Gradients of ``linear_scan_ref``: (d gates, d tokens, d initial_state or None).

    ``y`` is the forward output, ``dy`` its gradient, ``dfinal`` the final state's gradient
    (None for zero). ../math.md section 1 gives the formulas.
    """
    dim = dim % y.dim()
    acc = _acc_dtype(y.dtype)
    g, yr, dyr = (_to_rows(t, dim, acc) for t in (gates, y, dy))
    n_rows, length = yr.shape
    n_seq, offsets = _layout(y, dim, cu_seqlens)
    h0 = _states_to_rows(initial_state, n_seq, n_rows, acc, yr.device)
    dhT = _states_to_rows(dfinal, n_seq, n_rows, acc, yr.device)
    if reverse:
        dg, dx, dh0 = _bwd_packed(
            g.flip(1), yr.flip(1), dyr.flip(1), _flip_offsets(offsets, length), h0.flip(0), dhT.flip(0)
        )
        dg, dx, dh0 = dg.flip(1), dx.flip(1), dh0.flip(0)
    else:
        dg, dx, dh0 = _bwd_packed(g, yr, dyr, offsets, h0, dhT)
    d_state = None
    if initial_state is not None:
        d_state = dh0.reshape(initial_state.shape).to(initial_state.dtype)
    return _from_rows(dg, gates, dim), _from_rows(dx, y, dim), d_state
