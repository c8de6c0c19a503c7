"""The GPU tests' float64 reference (helpers.blocked_scan_ref / blocked_scan_bwd_ref, a recursive
blocked scan) against flashmarkov.scan.reference, on the CPU, at lengths around the chunk size
and its powers (one, two and three levels, padded and exact), with every feature."""

from __future__ import annotations

import itertools

import pytest
import torch

from flashmarkov.scan import linear_scan_bwd_ref, linear_scan_ref

from ..conftest import rel_err
from .helpers import BLOCKED_CHUNK, blocked_scan_bwd_ref, blocked_scan_ref, make_gates, state_shape

C = BLOCKED_CHUNK
LENGTHS = [1, 2, 7, C - 1, C, C + 1, 2 * C, C * C - 1, C * C + 1, C * C * C + 5]
LAYOUTS = {"bdt": lambda T: ((2, 3, T), -1), "btd": lambda T: ((2, T, 3), 1)}


def packed(T: int) -> list[int]:
    """Sequences of awkward lengths, an empty one at each end and one in the middle."""
    cuts = sorted({min(T, c) for c in (1, T // 3, T // 3, (2 * T) // 3 + 1)})
    return [0, 0, *cuts[:-1], cuts[-1] if cuts[-1] == T else T, T] if T > 1 else [0, 0, 1, 1]


def check_against_reference(shape, dim, *, reverse, with_initial, with_final, offsets, allow_growth):
    T = shape[dim]
    g = make_gates(shape, torch.float64, "cpu", allow_growth=allow_growth)
    x = torch.randn(shape, dtype=torch.float64)
    cu = None if offsets is None else torch.tensor(offsets, dtype=torch.int32)
    s_shape = state_shape(shape, dim, offsets)
    h0 = torch.randn(s_shape, dtype=torch.float64) if with_initial else None
    dy = torch.randn(shape, dtype=torch.float64)
    dfinal = torch.randn(s_shape, dtype=torch.float64) if with_final else None
    kw = dict(dim=dim, reverse=reverse, initial_state=h0, cu_seqlens=cu)

    y_ref, final_ref = linear_scan_ref(g, x, return_final_state=True, **kw)
    y, final = blocked_scan_ref(g, x, return_final_state=True, **kw)
    assert y.dtype == final.dtype == torch.float64
    assert y.shape == y_ref.shape and final.shape == final_ref.shape
    assert rel_err(y, y_ref) <= 1e-12, (T, "y")
    assert rel_err(final, final_ref) <= 1e-12, (T, "final")
    assert torch.equal(blocked_scan_ref(g, x, **kw), y)

    grads_ref = linear_scan_bwd_ref(g, y_ref, dy, dfinal=dfinal, **kw)
    grads = blocked_scan_bwd_ref(g, y_ref, dy, dfinal=dfinal, **kw)
    for name, got, want in zip(("d gates", "d tokens", "d initial_state"), grads, grads_ref):
        if want is None:
            assert got is None, name
            continue
        assert got.shape == want.shape and got.dtype == torch.float64, name
        assert rel_err(got, want) <= 1e-12, (T, name)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("T", LENGTHS)
def test_blocked_lengths(T, layout):
    shape, dim = LAYOUTS[layout](T)
    for reverse, varlen in itertools.product([False, True], repeat=2):
        check_against_reference(
            shape, dim, reverse=reverse, with_initial=True, with_final=True,
            offsets=packed(T) if varlen else None, allow_growth=T <= 128,
        )


@pytest.mark.parametrize("offsets", [None, [0, 1, 400, 400, 1057], [0, 1057], [0, 0, 1057, 1057]])
@pytest.mark.parametrize("reverse,with_initial,with_final", list(itertools.product([False, True], repeat=3)))
def test_blocked_features(reverse, with_initial, with_final, offsets):
    check_against_reference(
        (2, 1057, 5), 1, reverse=reverse, with_initial=with_initial, with_final=with_final, offsets=offsets,
        allow_growth=False,
    )


def test_blocked_matches_definition():
    """Small enough for the definition itself: y[t] = g[t] y[t-1] + x[t] one step at a time."""
    g = make_gates((3, 4 * C + 3), torch.float64, "cpu", allow_growth=True)
    x = torch.randn(3, 4 * C + 3, dtype=torch.float64)
    h = torch.zeros(3, dtype=torch.float64)
    ys = []
    for t in range(x.shape[1]):
        h = g[:, t] * h + x[:, t]
        ys.append(h)
    torch.testing.assert_close(blocked_scan_ref(g, x), torch.stack(ys, dim=1), rtol=1e-12, atol=1e-12)


def test_blocked_inputs_untouched():
    g = make_gates((2, 5, 3 * C + 1), torch.float64, "cpu", allow_growth=False)
    x, dy = torch.randn(2, 5, 3 * C + 1, dtype=torch.float64), torch.randn(2, 5, 3 * C + 1, dtype=torch.float64)
    g0, x0, dy0 = g.clone(), x.clone(), dy.clone()
    y = blocked_scan_ref(g, x, dim=-1)
    blocked_scan_bwd_ref(g, y, dy, dim=-1)
    assert torch.equal(g, g0) and torch.equal(x, x0) and torch.equal(dy, dy0)
