"""The attention reference against an independent float64 formula: one query row at a time,
visibility spelled out from ../math.md §2, softmax by ``torch.softmax`` on the visible keys."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from flashmarkov.attention.reference import (
    flash_attention_bwd_ref,
    flash_attention_ref,
    flash_attention_varlen_bwd_ref,
    flash_attention_varlen_ref,
)


def naive(q, k, v, causal, window, softcap, scale):
    """o (B, Hq, Sq, D), lse (B, Hq, Sq) by explicit loops over rows, float64."""
    B, Hq, Sq, D = q.shape
    Hkv, Sk = k.shape[1], k.shape[2]
    wl, wr = window
    o = torch.zeros(B, Hq, Sq, D, dtype=torch.float64)
    lse = torch.full((B, Hq, Sq), -math.inf, dtype=torch.float64)
    for b in range(B):
        for h in range(Hq):
            kh = h // (Hq // Hkv)
            for i in range(Sq):
                a = i + Sk - Sq
                keys = [
                    j for j in range(Sk)
                    if (not causal or j <= a) and (wl < 0 or j >= a - wl) and (wr < 0 or j <= a + wr)
                ]
                if not keys:
                    continue
                s = scale * (k[b, kh, keys].double() @ q[b, h, i].double())
                if softcap > 0:
                    s = softcap * torch.tanh(s / softcap)
                o[b, h, i] = torch.softmax(s, 0) @ v[b, kh, keys].double()
                lse[b, h, i] = torch.logsumexp(s, 0)
    return o, lse


CASES = [
    # (B, Hq, Hkv, Sq, Sk, D, causal, window, softcap)
    (1, 2, 2, 7, 7, 5, False, (-1, -1), 0.0),
    (2, 4, 2, 5, 9, 3, True, (-1, -1), 0.0),
    (1, 3, 1, 9, 4, 4, True, (-1, -1), 0.0),  # Sq > Sk: causal leaves rows without keys
    (1, 2, 1, 8, 8, 4, False, (2, 1), 0.0),
    (1, 2, 1, 6, 11, 4, True, (3, -1), 2.0),
    (1, 2, 2, 10, 6, 4, False, (-1, 0), 0.5),
    (1, 1, 1, 1, 1, 4, True, (0, 0), 0.0),
]


@pytest.mark.parametrize("B,Hq,Hkv,Sq,Sk,D,causal,window,softcap", CASES)
def test_reference_matches_naive(B, Hq, Hkv, Sq, Sk, D, causal, window, softcap):
    q = torch.randn(B, Hq, Sq, D, dtype=torch.float64)
    k, v = torch.randn(2, B, Hkv, Sk, D, dtype=torch.float64)
    o, lse = flash_attention_ref(q, k, v, causal=causal, window=window, softcap=softcap, return_lse=True, softmax_scale=0.7)
    o_n, lse_n = naive(q, k, v, causal, window, softcap, 0.7)
    torch.testing.assert_close(o, o_n, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(lse, lse_n, rtol=1e-12, atol=1e-12)
    assert lse.dtype == torch.float64


@settings(max_examples=25, deadline=None)
@given(
    sq=st.integers(1, 9), sk=st.integers(1, 9), d=st.integers(1, 6), group=st.sampled_from([1, 2]),
    causal=st.booleans(), wl=st.integers(-1, 4), wr=st.integers(-1, 4), softcap=st.sampled_from([0.0, 1.5]),
    layout=st.sampled_from(["bhsd", "bshd"]),
)
def test_reference_property(sq, sk, d, group, causal, wl, wr, softcap, layout):
    """Any shape, mask and layout: equal to the naive formula, finite, -inf lse exactly on empty rows."""
    q = torch.randn(1, 2 * group, sq, d, dtype=torch.float64)
    k, v = torch.randn(2, 1, 2, sk, d, dtype=torch.float64)
    o_n, lse_n = naive(q, k, v, causal, (wl, wr), softcap, 1 / math.sqrt(d))
    if layout == "bshd":
        q, k, v = (x.transpose(1, 2).contiguous() for x in (q, k, v))
    o, lse = flash_attention_ref(q, k, v, causal=causal, window=(wl, wr), softcap=softcap, return_lse=True, layout=layout)
    if layout == "bshd":
        o = o.transpose(1, 2)
    torch.testing.assert_close(o, o_n, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(lse, lse_n, rtol=1e-12, atol=1e-12)
    assert torch.isfinite(o).all()


def test_empty_rows_zero_output_and_gradient():
    """Causal with Sq > Sk: the first Sq - Sk rows see nothing: o = 0, lse = -inf, and every
    gradient (through o and through the finite lse) is finite, zero for those rows' q."""
    q = torch.randn(1, 2, 9, 4, dtype=torch.float64, requires_grad=True)
    k = torch.randn(1, 1, 4, 4, dtype=torch.float64, requires_grad=True)
    v = torch.randn(1, 1, 4, 4, dtype=torch.float64, requires_grad=True)
    o, lse = flash_attention_ref(q, k, v, causal=True, return_lse=True)
    assert torch.equal(o[:, :, :5], torch.zeros_like(o[:, :, :5]))
    assert (lse[:, :, :5] == -math.inf).all() and torch.isfinite(lse[:, :, 5:]).all()
    (o.square().sum() + torch.where(torch.isfinite(lse), lse, 0).sum()).backward()
    for t in (q, k, v):
        assert torch.isfinite(t.grad).all()
    assert torch.equal(q.grad[:, :, :5], torch.zeros_like(q.grad[:, :, :5]))


def test_varlen_reference_is_per_sequence():
    lens_q, lens_k = [3, 0, 5, 2], [4, 2, 5, 0]
    cu_q, cu_k = (torch.tensor([0, *itertools.accumulate(lens)], dtype=torch.int32) for lens in (lens_q, lens_k))
    q = torch.randn(10, 4, 3, dtype=torch.float64)
    k, v = torch.randn(2, 11, 2, 3, dtype=torch.float64)
    o, lse = flash_attention_varlen_ref(q, k, v, cu_q, cu_k, 5, 5, causal=True, window=(2, -1), return_lse=True)
    assert o.shape == q.shape and lse.shape == (4, 10)
    for n in range(4):
        qs, ks, vs = (x[c[n] : c[n + 1]].transpose(0, 1)[None] for x, c in ((q, cu_q), (k, cu_k), (v, cu_k)))
        if lens_q[n] == 0:
            continue
        o_n, lse_n = naive(qs, ks, vs, True, (2, -1), 0.0, 1 / math.sqrt(3))
        torch.testing.assert_close(o[cu_q[n] : cu_q[n + 1]], o_n[0].transpose(0, 1), rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(lse[:, cu_q[n] : cu_q[n + 1]], lse_n[0], rtol=1e-12, atol=1e-12)
    assert (o[8:] == 0).all() and (lse[:, 8:] == -math.inf).all()  # the last sequence has no keys


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_reference_dtypes(dtype):
    """Half and single inputs compute in float32: o in the input dtype, lse in float32. Inputs from
    their own generator (the global one's state depends on which tests ran before); o within 4 ulps
    of its largest magnitude (an absolute 4 eps failed for float32 where |o| reached 1.7)."""
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 2, 6, 8, generator=gen).to(dtype) for _ in range(3))
    o, lse = flash_attention_ref(q, k, v, return_lse=True)
    o64, lse64 = flash_attention_ref(q.double(), k.double(), v.double(), return_lse=True)
    assert o.dtype == dtype and lse.dtype == torch.float32
    ulp = torch.finfo(dtype).eps * max(1.0, o64.abs().max().item())
    torch.testing.assert_close(o.double(), o64, rtol=0, atol=4 * ulp)
    torch.testing.assert_close(lse.double(), lse64, rtol=0, atol=1e-5)


def test_reference_gradcheck():
    q = torch.randn(1, 2, 5, 3, dtype=torch.float64, requires_grad=True)
    k = torch.randn(1, 1, 7, 3, dtype=torch.float64, requires_grad=True)
    v = torch.randn(1, 1, 7, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda q, k, v: flash_attention_ref(q, k, v, causal=True, window=(3, -1), softcap=2.0, return_lse=True),
        (q, k, v),
    )


@pytest.mark.parametrize("layout", ["bhsd", "bshd"])
def test_explicit_backward_matches_autograd(layout):
    """flash_attention_bwd_ref (the formulas, with dlse) equals autograd through flash_attention_ref."""
    kw = dict(causal=True, window=(4, -1), softcap=1.5, softmax_scale=0.6)
    shape = (lambda h, s: (2, h, s, 5)) if layout == "bhsd" else (lambda h, s: (2, s, h, 5))
    q = torch.randn(shape(4, 9), dtype=torch.float64, requires_grad=True)
    k, v = (torch.randn(shape(2, 7), dtype=torch.float64, requires_grad=True) for _ in range(2))
    do, dlse = torch.randn(shape(4, 9), dtype=torch.float64), torch.randn(2, 4, 9, dtype=torch.float64)
    o, lse = flash_attention_ref(q, k, v, return_lse=True, layout=layout, **kw)
    fin = torch.isfinite(lse)
    expected = torch.autograd.grad((o * do).sum() + (torch.where(fin, lse, 0) * dlse).sum(), (q, k, v))
    got = flash_attention_bwd_ref(do, q.detach(), k.detach(), v.detach(), dlse=dlse, layout=layout, **kw)
    for g, e in zip(got, expected, strict=True):
        torch.testing.assert_close(g, e, rtol=1e-12, atol=1e-12)


def test_explicit_varlen_backward_matches_autograd():
    cu_q = torch.tensor([0, 3, 3, 8, 10], dtype=torch.int32)
    cu_k = torch.tensor([0, 4, 6, 11, 11], dtype=torch.int32)
    q = torch.randn(10, 4, 3, dtype=torch.float64, requires_grad=True)
    k, v = (torch.randn(11, 2, 3, dtype=torch.float64, requires_grad=True) for _ in range(2))
    do, dlse = torch.randn(10, 4, 3, dtype=torch.float64), torch.randn(4, 10, dtype=torch.float64)
    o, lse = flash_attention_varlen_ref(q, k, v, cu_q, cu_k, 5, 5, causal=True, return_lse=True)
    fin = torch.isfinite(lse)
    expected = torch.autograd.grad((o * do).sum() + (torch.where(fin, lse, 0) * dlse).sum(), (q, k, v))
    got = flash_attention_varlen_bwd_ref(do, q.detach(), k.detach(), v.detach(), cu_q, cu_k, dlse=dlse, causal=True)
    for g, e in zip(got, expected, strict=True):
        torch.testing.assert_close(g, e, rtol=1e-12, atol=1e-12)
