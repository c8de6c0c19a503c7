"""Inputs and the float64-reference check shared by the scan tests."""

from __future__ import annotations

import torch

from flashmarkov.scan import linear_scan, linear_scan_bwd_ref, linear_scan_ref

from ..conftest import assert_close


def make_gates(shape: tuple[int, ...], dtype: torch.dtype, device: str, *, allow_growth: bool) -> torch.Tensor:
    """Gates in ±[0.6, 1], some exactly zero, and (for short sequences) some above 1."""
    g = 0.6 + 0.4 * torch.rand(shape, device=device, dtype=torch.float64)
    g = torch.where(torch.rand(shape, device=device) < 0.15, -g, g)
    g = torch.where(torch.rand(shape, device=device) < 0.02, torch.zeros_like(g), g)
    if allow_growth:
        g = torch.where(torch.rand(shape, device=device) < 0.1, 1.15 * g, g)
    return g.to(dtype)


def state_shape(shape: tuple[int, ...], dim: int, offsets: list[int] | None) -> tuple[int, ...]:
    other = tuple(s for i, s in enumerate(shape) if i != dim % len(shape))
    return other if offsets is None else (len(offsets) - 1, *other)


def check_scan(
    shape: tuple[int, ...],
    dim: int,
    dtype: torch.dtype,
    device: str,
    *,
    reverse: bool = False,
    with_initial: bool = False,
    with_final: bool = False,
    offsets: list[int] | None = None,
) -> None:
    """Run ``linear_scan`` forward and backward on fresh random inputs and compare y, the final
    state and every gradient with the float64 reference from the same (rounded) inputs."""
    T = shape[dim]
    g = make_gates(shape, dtype, device, allow_growth=T <= 128)
    x = torch.randn(shape, device=device, dtype=torch.float64).to(dtype)
    cu = None if offsets is None else torch.tensor(offsets, dtype=torch.int32, device=device)
    s_shape = state_shape(shape, dim, offsets)
    h0 = torch.randn(s_shape, device=device, dtype=torch.float64).to(dtype) if with_initial else None

    gi, xi = g.clone().requires_grad_(), x.clone().requires_grad_()
    hi = h0.clone().requires_grad_() if h0 is not None else None
    out = linear_scan(gi, xi, dim=dim, reverse=reverse, initial_state=hi, return_final_state=with_final, cu_seqlens=cu)
    y, final = out if with_final else (out, None)
    dy = torch.randn_like(y)
    dfinal = torch.randn_like(final) if with_final else None
    torch.autograd.backward([y] + ([final] if with_final else []), [dy] + ([dfinal] if with_final else []))

    h0_64 = h0.double() if h0 is not None else None
    y_ref, final_ref = linear_scan_ref(
        g.double(), x.double(), dim=dim, reverse=reverse, initial_state=h0_64, return_final_state=True, cu_seqlens=cu
    )
    dg_ref, dx_ref, dh0_ref = linear_scan_bwd_ref(
        g.double(), y_ref, dy.double(), dim=dim, reverse=reverse, initial_state=h0_64,
        dfinal=dfinal.double() if dfinal is not None else None, cu_seqlens=cu,
    )
    assert y.dtype == dtype and y.shape == x.shape
    assert_close(y, y_ref, dtype, "y")
    if with_final:
        assert final.dtype == dtype
        assert_close(final, final_ref, dtype, "final_state")
    assert_close(gi.grad, dg_ref, dtype, "d gates")
    assert_close(xi.grad, dx_ref, dtype, "d tokens")
    if with_initial:
        assert_close(hi.grad, dh0_ref, dtype, "d initial_state")


# ---------------------------------------------------------------------------------------------
# A second float64 reference for the GPU tests: a recursive blocked scan written with in-place
# torch ops, independent of the Triton kernels and of flashmarkov.scan.reference (checked
# against the latter in test_blocked_ref.py). About 2·CHUNK kernel launches per level and
# log_CHUNK(T) levels: ~250 launches for T = 10^6 instead of one per step.

BLOCKED_CHUNK = 32


def _blocked_rows(g: torch.Tensor, x: torch.Tensor, chunk: int = BLOCKED_CHUNK) -> torch.Tensor:
    """y[:, t] = g[:, t] * y[:, t-1] + x[:, t] from y[:, -1] = 0, for (R, T) rows.

    Split T into n chunks of ``chunk`` steps; one loop over the steps, vectorised over every
    (row, chunk), gives each chunk's local scan B and running gate product A; the chunk ends
    (A[-1], B[-1]) form a recurrence of length n, solved by the same function, whose values
    are the states entering the chunks; then y = B + A * carry."""
    n_rows, length = x.shape
    if length <= chunk:  # sequential, one contiguous row of states per step
        gt, xt = g.t().contiguous(), x.t().contiguous()
        yt = torch.empty_like(xt)
        if length:
            yt[0] = xt[0]
        for t in range(1, length):
            torch.addcmul(xt[t], gt[t], yt[t - 1], out=yt[t])
        return yt.t()
    n = -(-length // chunk)
    pad = n * chunk - length
    if pad:  # padded steps come after every real one: any values would do
        g = torch.cat([g, g.new_zeros(n_rows, pad)], dim=1)
        x = torch.cat([x, x.new_zeros(n_rows, pad)], dim=1)
    gc = g.reshape(n_rows, n, chunk).permute(2, 0, 1).contiguous()  # (chunk, R, n): steps outermost
    b = x.reshape(n_rows, n, chunk).permute(2, 0, 1).clone(memory_format=torch.contiguous_format)  # local scan, in place
    a = torch.empty_like(gc)
    a[0] = gc[0]
    for c in range(1, chunk):
        torch.mul(a[c - 1], gc[c], out=a[c])
        torch.addcmul(b[c], gc[c], b[c - 1], out=b[c])
    ends = _blocked_rows(a[-1], b[-1], chunk)  # (R, n): the state after each chunk
    carry = torch.cat([ends.new_zeros(n_rows, 1), ends[:, :-1]], dim=1)  # the state entering it
    b.addcmul_(a, carry)
    return b.permute(1, 2, 0).reshape(n_rows, n * chunk)[:, :length]


def _blocked_offsets(cu_seqlens: torch.Tensor | None, length: int, device: torch.device) -> torch.Tensor:
    if cu_seqlens is None:
        return torch.tensor([0, length], dtype=torch.int64, device=device)
    return cu_seqlens.to(device=device, dtype=torch.int64)


def _blocked_seq_masks(offsets: torch.Tensor, length: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Sequence id of each position, and its start and end masks."""
    pos = torch.arange(length, device=offsets.device)
    seq = torch.bucketize(pos, offsets[1:], right=True)
    return seq, pos == offsets[seq], pos == offsets[seq + 1] - 1


def _blocked_packed(g: torch.Tensor, x: torch.Tensor, offsets: torch.Tensor, h0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward scan of (R, T) rows holding the sequences ``offsets``, sequence n from h0[n]
    (N, R): at a start the gate is 0 and the token x + g * h0. Returns y (R, T), final (N, R)."""
    length = x.shape[1]
    seq, start, _ = _blocked_seq_masks(offsets, length)
    x = torch.where(start, x + g * h0[seq].t(), x)
    g = torch.where(start, torch.zeros_like(g), g)
    y = _blocked_rows(g, x)
    nonempty = offsets[1:] > offsets[:-1]
    last = (offsets[1:] - 1).clamp(0, max(length - 1, 0))
    final = torch.where(nonempty[:, None], y[:, last].t(), h0)
    return y, final


def _blocked_rows_of(t: torch.Tensor, dim: int) -> torch.Tensor:
    t = t.movedim(dim, -1).to(torch.float64)
    return t.reshape(-1, t.shape[-1])


def _blocked_unrows(r: torch.Tensor, like: torch.Tensor, dim: int) -> torch.Tensor:
    return r.reshape(like.movedim(dim, -1).shape).movedim(-1, dim)


def blocked_scan_ref(
    gates: torch.Tensor,
    tokens: torch.Tensor,
    *,
    dim: int = -1,
    reverse: bool = False,
    initial_state: torch.Tensor | None = None,
    return_final_state: bool = False,
    cu_seqlens: torch.Tensor | None = None,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """``linear_scan`` in float64 by the blocked scan, on the inputs' device; the signature of
    ``linear_scan_ref``. Outputs are float64 whatever the input dtype."""
    dim = dim % tokens.dim()
    g, x = _blocked_rows_of(gates, dim), _blocked_rows_of(tokens, dim)
    n_rows, length = x.shape
    offsets = _blocked_offsets(cu_seqlens, length, x.device)
    n_seq = offsets.numel() - 1
    h0 = (torch.zeros(n_seq, n_rows, dtype=torch.float64, device=x.device) if initial_state is None
          else initial_state.to(torch.float64).reshape(n_seq, n_rows))
    if reverse:
        y, final = _blocked_packed(g.flip(1), x.flip(1), length - offsets.flip(0), h0.flip(0))
        y, final = y.flip(1), final.flip(0)
    else:
        y, final = _blocked_packed(g, x, offsets, h0)
    y = _blocked_unrows(y, tokens, dim)
    if not return_final_state:
        return y
    s_shape = tuple(s for i, s in enumerate(tokens.shape) if i != dim)
    return y, final.reshape((n_seq, *s_shape) if cu_seqlens is not None else s_shape)


def blocked_scan_bwd_ref(
    gates: torch.Tensor,
    y: torch.Tensor,
    dy: torch.Tensor,
    *,
    dim: int = -1,
    reverse: bool = False,
    initial_state: torch.Tensor | None = None,
    dfinal: torch.Tensor | None = None,
    cu_seqlens: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """(d gates, d tokens, d initial_state or None) in float64; the signature of
    ``linear_scan_bwd_ref``. In the forward direction (math.md section 1): a = the reverse scan of
    dy with gates g[t+1], dfinal entering at each sequence end; dx = a; dg = a * y[t-1] (h0 at a
    start); dh0 = g[start] * a[start] (dfinal for an empty sequence)."""
    dim = dim % y.dim()
    g, yr, dyr = (_blocked_rows_of(t, dim) for t in (gates, y, dy))
    n_rows, length = yr.shape
    offsets = _blocked_offsets(cu_seqlens, length, yr.device)
    n_seq = offsets.numel() - 1
    zeros = torch.zeros(n_seq, n_rows, dtype=torch.float64, device=yr.device)
    h0 = zeros if initial_state is None else initial_state.to(torch.float64).reshape(n_seq, n_rows)
    dhT = zeros if dfinal is None else dfinal.to(torch.float64).reshape(n_seq, n_rows)
    if reverse:  # the reverse scan is the forward scan of the flipped sequences
        g, yr, dyr = g.flip(1), yr.flip(1), dyr.flip(1)
        offsets, h0, dhT = length - offsets.flip(0), h0.flip(0), dhT.flip(0)
    seq, start, end = _blocked_seq_masks(offsets, length)
    g_next = torch.cat([g[:, 1:], g.new_ones(n_rows, 1)], dim=1)
    g_next = torch.where(end, torch.ones_like(g_next), g_next)  # dfinal enters at an end with gate 1
    a, _ = _blocked_packed(g_next.flip(1), dyr.flip(1), length - offsets.flip(0), dhT.flip(0))
    a = a.flip(1)
    y_prev = torch.cat([yr.new_zeros(n_rows, 1), yr[:, :-1]], dim=1)
    y_prev = torch.where(start, h0[seq].t(), y_prev)
    dg = a * y_prev
    nonempty = offsets[1:] > offsets[:-1]
    first = offsets[:-1].clamp(0, max(length - 1, 0))
    dh0 = torch.where(nonempty[:, None], (g[:, first] * a[:, first]).t(), dhT)
    if reverse:
        dg, a, dh0 = dg.flip(1), a.flip(1), dh0.flip(0)
    d_state = None if initial_state is None else dh0.reshape(initial_state.shape)
    return _blocked_unrows(dg, gates, dim), _blocked_unrows(a, y, dim), d_state
