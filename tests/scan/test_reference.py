"""The reference against the recurrence's definition, a plain loop over t, in float64; its
backward against autograd through that loop."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from flashmarkov.scan import linear_scan_bwd_ref, linear_scan_ref

from .helpers import make_gates, state_shape


def loop_scan(g, x, *, dim, reverse, h0, offsets):
    """y[t] = g[t] y[t-1] + x[t], one step at a time, per sequence of ``offsets``."""
    g, x = g.movedim(dim, 0), x.movedim(dim, 0)
    T = x.shape[0]
    offsets = offsets or [0, T]
    n_seq = len(offsets) - 1
    h0 = h0.reshape(n_seq, *x.shape[1:]) if h0 is not None else torch.zeros(n_seq, *x.shape[1:], dtype=x.dtype)
    ys = [None] * T
    finals = []
    for n in range(n_seq):
        h = h0[n]
        steps = range(offsets[n + 1] - 1, offsets[n] - 1, -1) if reverse else range(offsets[n], offsets[n + 1])
        for t in steps:
            h = g[t] * h + x[t]
            ys[t] = h
        finals.append(h)
    return torch.stack(ys).movedim(0, dim), torch.stack(finals)


CASES = [
    ((3, 4, 1), -1, None),
    ((2, 3, 17), -1, None),
    ((2, 17, 3), 1, None),
    ((17,), 0, None),
    ((2, 23, 3), 1, [0, 5, 5, 11, 23]),
    ((2, 3, 9), 2, [0, 0, 4, 9]),
    ((4, 30), 1, [0, 30]),
]


@pytest.mark.parametrize("shape,dim,offsets", CASES)
@pytest.mark.parametrize("reverse", [False, True])
def test_reference_matches_loop(shape, dim, offsets, reverse):
    g = make_gates(shape, torch.float64, "cpu", allow_growth=True).requires_grad_()
    x = torch.randn(shape, dtype=torch.float64, requires_grad=True)
    s_shape = state_shape(shape, dim, offsets)
    h0 = torch.randn(s_shape, dtype=torch.float64, requires_grad=True)
    cu = None if offsets is None else torch.tensor(offsets, dtype=torch.int32)

    y_loop, final_loop = loop_scan(g, x, dim=dim, reverse=reverse, h0=h0, offsets=offsets)
    final_loop = final_loop.reshape(s_shape)
    y, final = linear_scan_ref(
        g.detach(), x.detach(), dim=dim, reverse=reverse, initial_state=h0.detach(), return_final_state=True, cu_seqlens=cu
    )
    torch.testing.assert_close(y, y_loop.detach(), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(final, final_loop.detach(), rtol=1e-12, atol=1e-12)

    dy, dfinal = torch.randn_like(y), torch.randn_like(final)
    torch.autograd.backward([y_loop, final_loop], [dy, dfinal])
    dg, dx, dh0 = linear_scan_bwd_ref(
        g.detach(), y, dy, dim=dim, reverse=reverse, initial_state=h0.detach(), dfinal=dfinal, cu_seqlens=cu
    )
    for name, ours, theirs in (("dg", dg, g.grad), ("dx", dx, x.grad), ("dh0", dh0, h0.grad)):
        torch.testing.assert_close(ours, theirs, rtol=1e-11, atol=1e-11, msg=name)


def test_reference_without_initial_state_starts_from_zero():
    g = make_gates((3, 40), torch.float64, "cpu", allow_growth=False)
    x = torch.randn(3, 40, dtype=torch.float64)
    y = linear_scan_ref(g, x)
    y_loop, _ = loop_scan(g, x, dim=1, reverse=False, h0=None, offsets=None)
    torch.testing.assert_close(y, y_loop, rtol=1e-12, atol=1e-12)


@settings(max_examples=40, deadline=None)
@given(
    lengths=st.lists(st.integers(0, 9), min_size=1, max_size=5),
    channels=st.integers(1, 3),
    reverse=st.booleans(),
    seed=st.integers(0, 2**31 - 1),
)
def test_reference_varlen_property(lengths, channels, reverse, seed):
    """Packed sequences give what each sequence gives alone."""
    if sum(lengths) == 0:
        lengths = [*lengths, 1]
    torch.manual_seed(seed)
    offsets = [0]
    for n in lengths:
        offsets.append(offsets[-1] + n)
    T = offsets[-1]
    g = make_gates((channels, T), torch.float64, "cpu", allow_growth=True)
    x = torch.randn(channels, T, dtype=torch.float64)
    h0 = torch.randn(len(lengths), channels, dtype=torch.float64)
    y, final = linear_scan_ref(
        g, x, reverse=reverse, initial_state=h0, return_final_state=True,
        cu_seqlens=torch.tensor(offsets, dtype=torch.int32),
    )
    for n, (a, b) in enumerate(zip(offsets[:-1], offsets[1:])):
        if a == b:
            torch.testing.assert_close(final[n], h0[n])
            continue
        y_n, f_n = linear_scan_ref(g[:, a:b], x[:, a:b], reverse=reverse, initial_state=h0[n], return_final_state=True)
        torch.testing.assert_close(y[:, a:b], y_n, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(final[n], f_n, rtol=1e-12, atol=1e-12)
