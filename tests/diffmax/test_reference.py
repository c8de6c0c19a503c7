"""The reference α-diffmax (the CPU path) against independent float64 oracles: a from-scratch
bisection, softmax (α → 1), sparsemax (α → 0); masks, empty rows, dtypes, α forms, gradients."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from flashmarkov.diffmax import diffmax_attention_bwd_ref, diffmax_attention_ref, diffmax_bisect_bwd_ref, diffmax_bisect_ref

from ..conftest import assert_close
from .helpers import independent_diffmax, scores, sparsemax


@pytest.mark.parametrize("alpha", [0.01, 0.3, 0.5, 0.85, 0.99])
@pytest.mark.parametrize("n", [1, 2, 7, 100, 1000])
def test_matches_independent_bisection_float64(n, alpha):
    z = scores((5, n), torch.float64)
    p = diffmax_bisect_ref(z, alpha, n_iter=60)
    expected = independent_diffmax(z, alpha)
    assert (p - expected).abs().max().item() <= 1e-10
    if n >= 4:
        assert (p[:, 3] == 0).all()  # the −inf entry
    sums = p.sum(-1)
    assert (p[1] == 0).all()  # the fully masked row
    assert (sums[[0, 2, 3, 4]] - 1).abs().max() < 1e-12


def test_exact_zeros_and_sparsity_grow_as_alpha_falls():
    z = 3 * torch.randn(4, 50, dtype=torch.float64)
    zeros = [(diffmax_bisect_ref(z, a) == 0).double().mean().item() for a in (0.99, 0.85, 0.5)]
    assert zeros[0] < zeros[1] < zeros[2]
    assert zeros[2] > 0.8  # math.md: 94% at α = 0.5 on this distribution


@pytest.mark.parametrize("alpha,tol", [(0.99, 3e-2), (0.999, 3e-3)])
def test_alpha_to_one_is_softmax(alpha, tol):
    z = torch.randn(6, 40, dtype=torch.float64)
    err = (diffmax_bisect_ref(z, alpha, n_iter=80) - torch.softmax(z, -1)).abs().max().item()
    assert err < tol


@pytest.mark.parametrize("alpha,tol", [(1e-2, 2e-2), (1e-4, 2e-4)])
def test_alpha_to_zero_is_sparsemax(alpha, tol):
    z = torch.randn(6, 40, dtype=torch.float64)
    err = (diffmax_bisect_ref(z, alpha, n_iter=80) - sparsemax(z)).abs().max().item()
    assert err < tol


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
@pytest.mark.parametrize("dim", [0, 1, -1])
def test_dtypes_and_dims(dtype, dim):
    z = scores((4, 6, 33), dtype).movedim(-1, dim)
    p = diffmax_bisect_ref(z, 0.7, dim=dim)
    assert p.dtype == dtype and p.shape == z.shape
    assert_close(p, independent_diffmax(z, 0.7, dim), dtype, f"p ({dtype}, dim={dim})")


def test_alpha_per_row_tensor_and_callable():
    z = scores((3, 4, 20), torch.float64)
    a = torch.rand(3, 1, 1, dtype=torch.float64) * 0.9 + 0.05
    p = diffmax_bisect_ref(z, a)
    for i in range(3):
        torch.testing.assert_close(p[i], independent_diffmax(z[i], float(a[i])), atol=1e-10, rtol=0)
    torch.testing.assert_close(diffmax_bisect_ref(z, lambda: 0.4), diffmax_bisect_ref(z, 0.4), atol=0, rtol=0)


def test_tau_and_no_sum_renormalisation():
    z = scores((3, 25), torch.float64)
    p, tau = diffmax_bisect_ref(z, 0.6, ensure_sum_one=False, return_tau=True)
    assert tau.shape == (3, 1) and tau[1].item() == -math.inf
    x = 0.4 * z
    manual = torch.where(torch.isfinite(x), (x - tau).clamp(min=0), torch.zeros_like(x)) ** 2.5
    torch.testing.assert_close(p[[0, 2]], manual[[0, 2]], atol=1e-14, rtol=0)
    assert (p.sum(-1)[[0, 2]] - 1).abs().max() < 1e-12


def _finite_difference(f, x: torch.Tensor, h: float = 1e-6) -> torch.Tensor:
    grad = torch.zeros_like(x)
    for i in range(x.numel()):
        e = torch.zeros_like(x).view(-1)
        e[i] = h
        e = e.view_as(x)
        grad.view(-1)[i] = (f(x + e) - f(x - e)) / (2 * h)
    return grad


@pytest.mark.parametrize("alpha", [0.2, 0.5, 0.8])
def test_backward_formulas_against_finite_differences(alpha):
    z = torch.randn(3, 9, dtype=torch.float64)
    z[0, 4] = -math.inf
    a = torch.tensor([[alpha], [alpha * 0.9], [alpha * 1.1]], dtype=torch.float64)
    p = diffmax_bisect_ref(z, a, n_iter=80)
    dp = torch.randn_like(p)
    dz, da = diffmax_bisect_bwd_ref(p, dp, a)
    finite = torch.isfinite(z)
    dz_fd = _finite_difference(lambda t: (diffmax_bisect_ref(torch.where(finite, t, z), a, n_iter=80) * dp).sum(), torch.where(finite, z, 0.0))
    da_fd = _finite_difference(lambda t: (diffmax_bisect_ref(z, t, n_iter=80) * dp).sum(), a)
    assert (dz[finite] - dz_fd[finite]).abs().max() < 1e-7
    assert torch.equal(dz[~finite], torch.zeros_like(dz[~finite]))
    assert (da - da_fd).abs().max() < 1e-7


@pytest.mark.parametrize("alpha", [0.3, 0.5, 0.8])
def test_autograd_through_the_reference(alpha):
    """Autograd through ``diffmax_bisect_ref`` (τ attached by two Newton steps, its value unchanged)
    gives the closed-form gradients of ``diffmax_bisect_bwd_ref`` in X and a per-row α, with a masked
    entry and a fully masked row, and exact second derivatives (gradgradcheck). With τ held constant
    autograd gave the Jacobian diag(s) − p sᵀ."""
    z = torch.randn(4, 11, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    z[0, 4] = -math.inf
    z[3] = -math.inf
    a = torch.tensor([[alpha], [alpha * 0.9], [alpha * 1.1], [alpha]], dtype=torch.float64)
    x, al = z.clone().requires_grad_(), a.clone().requires_grad_()
    p = diffmax_bisect_ref(x, al, n_iter=80)
    with torch.no_grad():
        assert torch.equal(p, diffmax_bisect_ref(z, a, n_iter=80))  # the same values
    dp = torch.randn(p.shape, dtype=p.dtype, generator=torch.Generator().manual_seed(6))
    dx, da = torch.autograd.grad(p, (x, al), dp)
    dx_ref, da_ref = diffmax_bisect_bwd_ref(p.detach(), dp, a)
    assert (dx - dx_ref).abs().max() < 1e-12 and torch.equal(dx[3], torch.zeros(11, dtype=torch.float64))
    assert (da - da_ref).abs().max() < 1e-10
    finite = torch.isfinite(z)
    assert torch.autograd.gradgradcheck(
        lambda t, u: diffmax_bisect_ref(torch.where(finite, t, z), u, n_iter=80),
        (torch.where(finite, z, 0.0).requires_grad_(), a.clone().requires_grad_()),
    )


@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(1, 40),
    rows=st.integers(1, 4),
    alpha=st.floats(0.02, 0.98),
    scale=st.floats(0.01, 30.0),
    masked=st.floats(0.0, 0.9),
)
def test_property_sums_and_support(n, rows, alpha, scale, masked):
    z = scale * torch.randn(rows, n, dtype=torch.float64)
    z = torch.where(torch.rand(rows, n) < masked, torch.full_like(z, -math.inf), z)
    p = diffmax_bisect_ref(z, alpha)
    assert torch.isfinite(p).all() and (p >= 0).all()
    live = torch.isfinite(z).any(-1)
    assert (p.sum(-1)[live] - 1).abs().max().item() < 1e-12 if live.any() else True
    assert torch.equal(p[~live], torch.zeros_like(p[~live]))
    assert torch.equal(p[~torch.isfinite(z)], torch.zeros_like(p[~torch.isfinite(z)]))
    # the largest score always carries weight, and weights follow the order of the scores
    top = z.argmax(-1)
    assert (p[live].gather(-1, top[live, None]) > 0).all()
    assert (p.max(-1).values[live] == p[live].gather(-1, top[live, None]).squeeze(-1)).all()
    assert (independent_diffmax(z, alpha) - p).abs().max().item() < 1e-10


def test_attention_reference_matches_dense_scores():
    """Chunked reference attention = diffmax of explicit masked scores times V, with GQA."""
    B, Hq, Hkv, Sq, Sk, D = 2, 4, 2, 13, 21, 8
    q = torch.randn(B, Hq, Sq, D, dtype=torch.float64)
    k = torch.randn(B, Hkv, Sk, D, dtype=torch.float64)
    v = torch.randn(B, Hkv, Sk, 5, dtype=torch.float64)
    for causal, window in ((False, (-1, -1)), (True, (-1, -1)), (False, (3, 2)), (True, (4, -1))):
        o, tau, rn, states = diffmax_attention_ref(q, k, v, 0.5, causal=causal, softmax_scale=0.7, window=window, block=(4, 8))
        kk, vv = k.repeat_interleave(2, 1), v.repeat_interleave(2, 1)
        s = 0.7 * q @ kk.transpose(-1, -2)
        i = torch.arange(Sq)[:, None] + Sk - Sq
        j = torch.arange(Sk)[None, :]
        vis = torch.ones(Sq, Sk, dtype=torch.bool)
        if causal:
            vis &= j <= i
        if window[0] >= 0:
            vis &= j >= i - window[0]
        if window[1] >= 0:
            vis &= j <= i + window[1]
        p = independent_diffmax(s.masked_fill(~vis, -math.inf), 0.5)
        assert (o - p @ vv).abs().max() < 1e-10
        assert states.shape == (B, Hq, 4, 3)
        assert set(states.unique().tolist()) <= {0, 1, 2}
        do = torch.randn_like(o)
        dq, dk, dv = diffmax_attention_bwd_ref(q, k, v, do, 0.5, causal=causal, softmax_scale=0.7, window=window)
        # dense chain rule through the row backward
        pd = p
        dp = do @ vv.transpose(-1, -2)
        ds, _ = diffmax_bisect_bwd_ref(pd, dp, 0.5, need_alpha_grad=False)
        assert (dq - 0.7 * ds @ kk).abs().max() < 1e-10
        dk_full = 0.7 * ds.transpose(-1, -2) @ q
        assert (dk - dk_full.view(B, Hkv, 2, Sk, D).sum(2)).abs().max() < 1e-10
        dv_full = pd.transpose(-1, -2) @ do
        assert (dv - dv_full.view(B, Hkv, 2, Sk, 5).sum(2)).abs().max() < 1e-10
