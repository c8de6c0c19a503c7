"""Fused diffmax attention on CPU: the Triton kernels through the interpreter (o, dq, dk, dv and
the tile states against diffmax applied to explicit scores), the public function on the
reference path (gradcheck, torch.compile, opcheck, stats), and bad input."""

from __future__ import annotations

import math

import pytest
import torch

from flashmarkov.diffmax import diffmax_attention, diffmax_attention_bwd_ref, diffmax_attention_ref
from flashmarkov.diffmax.op import diffmax_attention_bwd_op, diffmax_attention_op

from ..conftest import DEVICE, INTERPRETED_DTYPES, TOLERANCE, assert_close, rel_err
from .helpers import independent_diffmax


def _inputs(B, Hq, Hkv, Sq, Sk, D, Dv, dtype, device, clustered=False, gen=None):
    """q, k, v drawn from ``gen`` (default: a fresh generator seeded 0), never from the global RNG,
    whose state depends on which tests ran before in the same process (xdist's order)."""
    gen = torch.Generator().manual_seed(0) if gen is None else gen
    q = torch.randn(B, Hq, Sq, D, dtype=torch.float64, generator=gen).to(device)
    k = torch.randn(B, Hkv, Sk, D, dtype=torch.float64, generator=gen).to(device)
    if clustered:  # queries and keys in two far-apart clusters: half the tiles are all zero
        sign = torch.where(torch.arange(Sk, device=device) < Sk // 2, 1.0, -1.0)[:, None]
        k = 0.3 * k + 4 * sign
        q = 0.3 * q + 4 * torch.where(torch.arange(Sq, device=device) < Sq // 2, 1.0, -1.0)[:, None]
    v = torch.randn(B, Hkv, Sk, Dv, dtype=torch.float64, generator=gen).to(device)
    return q.to(dtype), k.to(dtype), v.to(dtype)


def _weights(q, k, alpha, causal, scale, window):
    """diffmax of explicit float64 scores (independent bisection), (B, Hq, Sq, Sk), with GQA."""
    kk = k.double().repeat_interleave(q.shape[1] // k.shape[1], 1)
    s = scale * q.double() @ kk.transpose(-1, -2)
    Sq, Sk = q.shape[2], k.shape[2]
    i = torch.arange(Sq, device=q.device)[:, None] + Sk - Sq
    j = torch.arange(Sk, device=q.device)[None, :]
    vis = torch.ones(Sq, Sk, dtype=torch.bool, device=q.device)
    if causal:
        vis &= j <= i
    if window[0] >= 0:
        vis &= j >= i - window[0]
    if window[1] >= 0:
        vis &= j <= i + window[1]
    return independent_diffmax(s.masked_fill(~vis, -math.inf), alpha)


def _dense(q, k, v, alpha, causal, scale, window):
    """diffmax of explicit float64 scores times V, with GQA."""
    return _weights(q, k, alpha, causal, scale, window) @ v.double().repeat_interleave(q.shape[1] // k.shape[1], 1)


def _rounded_operands(q, k, v, do, alpha, causal, scale, window):
    """(o, dq, dk, dv) of the exact float64 computation except that the operands of its five
    matmuls that are not inputs (P for O and dV, dS for dq and dK) are rounded to q's dtype, as
    any kernel that runs those matmuls on 16-bit tensor cores rounds them: with FlashAttention's
    rule (issue 3) a 16-bit kernel may be up to 2× as far from the float64 result as this.
    It matters where the gradient cancels: clustered keys make dq = Σ_j dS_ij k_j a small
    difference of large terms (Σ_j dS_ij = 0 and every k_j ≈ the cluster's centre)."""
    g = q.shape[1] // k.shape[1]
    kk, vv = k.double().repeat_interleave(g, 1), v.double().repeat_interleave(g, 1)
    rnd = lambda t: t.to(q.dtype).double()  # noqa: E731
    p = _weights(q, k, alpha, causal, scale, window)
    sp = p**alpha  # s = P^α (zero off the support)
    dp = do.double() @ vv.transpose(-1, -2)
    delta = (sp * dp).sum(-1, keepdim=True) / sp.sum(-1, keepdim=True).clamp_min(1e-300)
    ds = rnd(sp * (dp - delta))
    dk = scale * (ds.transpose(-1, -2) @ q.double())
    dv = rnd(p).transpose(-1, -2) @ do.double()
    fold = lambda t: t.unflatten(1, (k.shape[1], g)).sum(2)  # noqa: E731 - GQA: sum over the group
    return rnd(p) @ vv, scale * (ds @ kk), fold(dk), fold(dv)


def _check_attention(shape, dtype, device, *, alpha=0.5, causal=False, window=(-1, -1), scale=None, clustered=False, seed=0):
    """o, dq, dk, dv against float64 diffmax of explicit scores, within the dtype's tolerance;
    16-bit results also within 2× the error of ``_rounded_operands`` (FlashAttention's rule),
    whichever bound is larger."""
    B, Hq, Hkv, Sq, Sk, D, Dv = shape
    gen = torch.Generator().manual_seed(seed)
    q, k, v = _inputs(B, Hq, Hkv, Sq, Sk, D, Dv, dtype, device, clustered, gen)
    qi, ki, vi = (t.clone().requires_grad_() for t in (q, k, v))
    o, stats = diffmax_attention(qi, ki, vi, alpha, causal=causal, softmax_scale=scale, window=window, return_stats=True)
    sc = scale if scale is not None else D**-0.5
    assert o.dtype == dtype and o.shape == (B, Hq, Sq, Dv)
    do = torch.randn(o.shape, dtype=torch.float64, generator=gen).to(dtype=o.dtype, device=o.device)
    o.backward(do)
    refs = (_dense(q, k, v, alpha, causal, sc, window),
            *diffmax_attention_bwd_ref(q.double(), k.double(), v.double(), do.double(), alpha, causal=causal, softmax_scale=sc, window=window))
    rounded = _rounded_operands(q, k, v, do, alpha, causal, sc, window) if dtype.itemsize == 2 else (None,) * 4
    for name, got, ref, low in zip(("o", "dq", "dk", "dv"), (o, qi.grad, ki.grad, vi.grad), refs, rounded):
        if low is None or rel_err(got, ref) <= TOLERANCE[dtype]:
            assert_close(got, ref, dtype, name)
        else:
            err, bound = rel_err(got, ref), 2 * rel_err(low, ref)
            assert err <= bound, f"{name}: relative error {err:.3g} > {TOLERANCE[dtype]:.1g} and > 2 × {bound / 2:.3g} (rounded operands)"
    return stats


@pytest.mark.parametrize("clustered", [False, True], ids=["random", "clustered"])
def test_rounded_operands_model(clustered):
    """The error model behind the 16-bit rule of ``_check_attention`` is neither exact nor loose:
    rounding P and dS to bfloat16 errs ~2e-3 on o, dk, dv and, for random inputs, on dq; for
    clustered keys dq errs ~2e-2 (dq = Σ_j dS_ij k_j cancels), the case the rule exists for."""
    B, Hq, Hkv, Sq, Sk, D, Dv = shape = (1, 2, 1, 256, 256, 64, 64)
    gen = torch.Generator().manual_seed(0)
    q, k, v = _inputs(*shape, torch.bfloat16, "cpu", clustered, gen)
    do = torch.randn((B, Hq, Sq, Dv), dtype=torch.float64, generator=gen).to(torch.bfloat16)
    sc = D**-0.5
    refs = (_dense(q, k, v, 0.5, False, sc, (-1, -1)),
            *diffmax_attention_bwd_ref(q.double(), k.double(), v.double(), do.double(), 0.5, softmax_scale=sc))
    errs = dict(zip(("o", "dq", "dk", "dv"), (rel_err(a, b) for a, b in zip(_rounded_operands(q, k, v, do, 0.5, False, sc, (-1, -1)), refs))))
    for name, err in errs.items():
        if clustered and name == "dq":
            assert 1e-2 < err < 5e-2, (name, err)
        else:
            assert 5e-4 < err < 4e-3, (name, err)


ATTN_CASES = {
    "square": dict(shape=(1, 2, 2, 17, 17, 16, 16)),
    "gqa-causal-sq<sk": dict(shape=(1, 4, 2, 20, 37, 16, 24), causal=True),
    "causal-sq>sk-window": dict(shape=(2, 1, 1, 33, 20, 24, 16), causal=True, window=(5, -1)),
    "band-alpha0.3": dict(shape=(1, 2, 1, 30, 30, 16, 16), window=(3, 4), alpha=0.3, scale=0.4),
    "alpha0.8-one-query": dict(shape=(1, 2, 2, 1, 40, 16, 16), alpha=0.8),
}


@pytest.mark.parametrize("dtype", INTERPRETED_DTYPES)
@pytest.mark.parametrize("case", ATTN_CASES)
def test_kernels_attention(case, dtype, triton_backend, nan_alloc, small_tiles):
    _check_attention(dtype=dtype, device=triton_backend, **ATTN_CASES[case])


TALL_CASES = {
    "gqa-causal-long": dict(shape=(1, 2, 1, 70, 90, 16, 16), causal=True),
    "causal-sq>sk-window": ATTN_CASES["causal-sq>sk-window"],
    "band-alpha0.3": ATTN_CASES["band-alpha0.3"],
}


@pytest.mark.parametrize("case", TALL_CASES)
def test_kernels_attention_tall_tiles(case, triton_backend, nan_alloc, monkeypatch):
    """Query tiles taller than key tiles, as the GPU configuration (128 × 64) has them: the band,
    the masks of partly visible tiles and the backward's lists with BLOCK_M ≠ BLOCK_N."""
    from flashmarkov.diffmax import attention

    monkeypatch.setattr(attention, "pick_config", lambda d, itemsize: attention.AttnConfig(32, 16, 1, 2))
    _check_attention(dtype=torch.float32, device=triton_backend, **TALL_CASES[case])


@pytest.mark.parametrize("case", ["gqa-causal-sq<sk", "causal-sq>sk-window", "band-alpha0.3"])
def test_kernels_attention_backward_steps(case, triton_backend, nan_alloc, monkeypatch):
    """The backward kernels on parts of the forward's query tiles (``bwd_block_m`` < ``block_m``),
    as the GPU default for 16-bit D ≤ 64 has them (which the interpreter cannot run in bf16), in
    float32: the dq kernel's programs on 32 of a tile's 64 queries, the dkdv kernel walking each
    listed query tile in 16-query steps (``dkdv_block_m``); tall tiles, GQA, Dv ≠ D and masked
    edge tiles (a part wholly past Sq too)."""
    from flashmarkov.diffmax import attention

    monkeypatch.setattr(attention, "pick_config", lambda d, itemsize: attention.AttnConfig(64, 32, 4, 2, 0, 4, bwd_block_m=32, dkdv_block_m=16))
    _check_attention(dtype=torch.float32, device=triton_backend, **ATTN_CASES[case])


def test_kernels_attention_refuse_tiles_too_small_for_their_warps():
    """A score tile of fewer than 4 elements per thread (32 × 16 on the backward's 8 warps: a wrong
    dq on the H100) is refused before any launch, on every device."""
    from flashmarkov.diffmax import attention

    q, k, v = _inputs(1, 1, 1, 40, 40, 16, 16, torch.float32, "cpu")
    tau, rn = torch.zeros(1, 1, 40), torch.ones(1, 1, 40)
    states = torch.ones(1, 1, 2, 3, dtype=torch.int8)
    with pytest.raises(ValueError, match="4 scores per thread"):
        attention.attention_bwd_launch(q, k, v, q, tau, rn, states, 0.5, False, 0.25, (-1, -1), attention.AttnConfig(32, 16, 4, 2, 0, 8))
    with pytest.raises(ValueError, match="4 scores per thread"):
        attention.attention_fwd_launch(q, k, v, 0.5, False, 0.25, (-1, -1), 50, attention.AttnConfig(16, 16, 4))
    with pytest.raises(ValueError, match="4 scores per thread"):  # the backward's 16 x 16 parts
        attention.attention_bwd_launch(q, k, v, q, tau, rn, states, 0.5, False, 0.25, (-1, -1), attention.AttnConfig(32, 16, 4, 2, 0, 4, bwd_block_m=16))
    with pytest.raises(ValueError, match="must divide"):
        attention.attention_bwd_launch(q, k, v, q, tau, rn, states, 0.5, False, 0.25, (-1, -1), attention.AttnConfig(32, 16, 1, 2, bwd_block_m=24))


def test_kernels_skip_zero_tiles(triton_backend, small_tiles):
    """Clustered keys: the zero tiles are found (and skipped); the tile states equal the
    reference's, computed from the exact weights."""
    stats = _check_attention((1, 1, 1, 64, 64, 16, 16), torch.float64, triton_backend, alpha=0.3, clustered=True)
    assert stats["block"] == (16, 16)
    assert stats["tiles_visible"] == 16
    assert stats["tile_skip_fraction"] >= 0.5
    q, k, v = _inputs(1, 1, 1, 64, 64, 16, 16, torch.float64, triton_backend, clustered=True)
    states = diffmax_attention_op(q, k, v, 0.3, False, 0.25, -1, -1, 50)[3]
    ref_states = diffmax_attention_ref(q, k, v, 0.3, softmax_scale=0.25, block=(16, 16))[3]
    assert torch.equal(states, ref_states)


@pytest.mark.parametrize("causal,heads", [(False, (1, 1)), (True, (2, 1))])
def test_kernels_skip_zero_tiles_causal_gqa(causal, heads, triton_backend, small_tiles):
    """Zero tiles dropped from the forward's list in the Newton passes (clustered keys, causal
    band, GQA): outputs, gradients and the tile states still match the reference."""
    shape = (1, heads[0], heads[1], 64, 80, 16, 16)
    _check_attention(shape, torch.float64, triton_backend, alpha=0.5, causal=causal, clustered=True)
    q, k, v = _inputs(*shape, torch.float64, triton_backend, clustered=True)
    states = diffmax_attention_op(q, k, v, 0.5, causal, 0.25, -1, -1, 50)[3]
    ref_states = diffmax_attention_ref(q, k, v, 0.5, causal=causal, softmax_scale=0.25, block=(16, 16))[3]
    assert torch.equal(states, ref_states)
    assert (states == 2).any() and (states == 1).any()


@pytest.mark.parametrize("groups", [4, 16])
def test_kernels_start_from_run_maxima(groups, triton_backend, small_tiles, monkeypatch):
    """τ starts from the maxima of runs of consecutive key tiles: 17 key tiles in runs of 5
    (4 runs, the last one short) or of 2 (9 of 16 runs used, 7 empty)."""
    from flashmarkov.diffmax import attention

    monkeypatch.setattr(attention, "START_GROUPS", groups)
    _check_attention((1, 1, 1, 16, 272, 16, 16), torch.float64, triton_backend, alpha=0.5)


def test_kernels_tied_maxima(triton_backend, small_tiles):
    """Equal largest scores (duplicated keys, in one tile and across tiles): the start of τ from a
    row's two largest entries handles ties."""
    q, k, v = _inputs(1, 1, 1, 20, 40, 16, 16, torch.float64, triton_backend)
    k[:, :, 1] = k[:, :, 0]
    k[:, :, 33] = k[:, :, 0]
    qi, ki, vi = (t.clone().requires_grad_() for t in (q, k, v))
    o = diffmax_attention(qi, ki, vi, 0.5)
    assert_close(o, _dense(q, k, v, 0.5, False, 0.25, (-1, -1)), torch.float64, "o")


@pytest.mark.parametrize("n_m,n_n,chunk", [(3, 5, 1024), (5, 40, 16)])
def test_live_tile_lists(n_m, n_n, chunk, triton_backend, monkeypatch):
    """The backward's lists: per query tile its live key tiles, per key tile its live (query head
    of the group, query tile) pairs, ascending, with their numbers (in one chunk, or read 16 at a
    time: 40 key tiles in 3 chunks)."""
    from flashmarkov.diffmax import attention
    from flashmarkov.diffmax.attention import live_tile_lists

    monkeypatch.setattr(attention, "LIST_CHUNK", chunk)

    g = torch.Generator().manual_seed(0)
    B, Hq, Hkv = 2, 4, 2
    states = torch.randint(0, 3, (B, Hq, n_m, n_n), generator=g).to(torch.int8)
    by_query, count_query, by_key, count_key = (t.cpu() for t in live_tile_lists(states.to(triton_backend), Hkv))
    G = Hq // Hkv
    for b in range(B):
        for h in range(Hq):
            for m in range(n_m):
                live = (states[b, h, m] == 1).nonzero().flatten().tolist()
                assert count_query[b, h, m] == len(live) and by_query[b, h, m, : len(live)].tolist() == live
        for kh in range(Hkv):
            # entry i_g · n_m + m of key tile n is states[b, kh · G + i_g, m, n], listed as i_g · 2^20 + m
            group = (states[b, kh * G : (kh + 1) * G] == 1).reshape(G * n_m, n_n)
            for n in range(n_n):
                live = [(e // n_m << attention.LIST_SHIFT) + e % n_m for e in group[:, n].nonzero().flatten().tolist()]
                assert count_key[b, kh, n] == len(live) and by_key[b, kh, n, : len(live)].tolist() == live
    assert by_query.is_contiguous() and by_key.is_contiguous() and by_key.dtype == torch.int32


# ---- the public function on the reference path ----


def test_reference_path_matches_dense_and_stats():
    stats = _check_attention((2, 4, 2, 13, 21, 8, 5), torch.float64, "cpu", causal=True)
    assert set(stats) == {"tile_skip_fraction", "tiles_skipped", "tiles_visible", "block"}
    assert 0 <= stats["tile_skip_fraction"] <= 1


def test_gradcheck_float64():
    q, k, v = _inputs(1, 2, 1, 5, 7, 4, 3, torch.float64, "cpu")
    args = tuple(t.requires_grad_() for t in (q, k, v))
    assert torch.autograd.gradcheck(lambda a, b, c: diffmax_attention(a, b, c, 0.6, causal=True, n_iter=80), args, atol=1e-7)


@pytest.mark.parametrize("alpha", [0.5, 0.3])
def test_gradgradcheck_float64(alpha):
    """Second derivatives on the reference path against finite differences of the backward (GQA,
    causal, Sq < Sk; α = 0.3 puts y^(k−2) with k < 2 in the second derivative). The reference once
    held the bisection's τ constant, whose Jacobian diag(s) − p sᵀ is not the weights' (wrong
    second derivatives, silently)."""
    q, k, v = _inputs(1, 2, 1, 5, 7, 4, 3, torch.float64, "cpu", gen=torch.Generator().manual_seed(3))
    args = tuple(t.requires_grad_() for t in (q, k, v))
    assert torch.autograd.gradgradcheck(
        lambda a, b, c: diffmax_attention(a, b, c, alpha, causal=True, n_iter=80), args, atol=1e-6
    )


@pytest.mark.parametrize("backend", ["reference", "triton"])
def test_double_backward(backend, monkeypatch):
    """A gradient penalty through diffmax attention (GQA, causal, Sq < Sk): under ``create_graph`` the
    backward runs the reference's torch ops on either path; float32 against the float64 reference
    path (whose second derivatives ``test_gradgradcheck_float64`` checks). The kernels' backward
    returned gradients without a graph (the penalty's gradient silently dropped)."""
    gen = torch.Generator().manual_seed(0)
    base = _inputs(2, 4, 2, 19, 26, 16, 8, torch.float64, "cpu", gen=gen)
    w = torch.randn(2, 4, 19, 8, generator=gen, dtype=torch.float64)

    def second_order(device, dtype):
        xs = [x.to(device=device, dtype=dtype).requires_grad_() for x in base]
        o = diffmax_attention(*xs, 0.5, causal=True)
        firsts = torch.autograd.grad((o * w.to(o)).sum(), xs, create_graph=True)
        penalty = sum((g.double() ** 2).sum() for g in firsts)
        return torch.autograd.grad(penalty, xs)

    expected = second_order("cpu", torch.float64)
    device = "cpu"
    if backend == "triton":  # compiled on a GPU, interpreted on CPU tensors
        monkeypatch.setenv("FLASHMARKOV_BACKEND", "triton")
        device = DEVICE
    for name, g, e in zip(("q", "k", "v"), second_order(device, torch.float32), expected, strict=True):
        assert rel_err(g.cpu(), e) <= TOLERANCE[torch.float32], f"d2/d{name}: {rel_err(g.cpu(), e):.3g}"


def test_torch_compile_fullgraph():
    def model(q, k, v):
        return (diffmax_attention(q, k, v, 0.5, causal=True) ** 2).sum()

    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    q, k, v = (t.requires_grad_() for t in _inputs(1, 2, 1, 9, 9, 8, 8, torch.float32, "cpu"))
    out = compiled(q, k, v)
    grads = torch.autograd.grad(out, (q, k, v))
    expected = model(q, k, v)
    for got, ref in zip(grads, torch.autograd.grad(expected, (q, k, v))):
        torch.testing.assert_close(got, ref)
    torch.testing.assert_close(out, expected)


def test_opcheck():
    q, k, v = (t.requires_grad_() for t in _inputs(1, 2, 1, 6, 9, 8, 4, torch.float32, "cpu"))
    args = (q, k, v, 0.5, True, 0.3, -1, -1, 50)
    torch.library.opcheck(diffmax_attention_op, args)
    o, tau, rn, states = diffmax_attention_op(*(t.detach() for t in (q, k, v)), *args[3:])
    torch.library.opcheck(
        diffmax_attention_bwd_op, (q.detach(), k.detach(), v.detach(), torch.randn(o.shape, dtype=o.dtype, generator=torch.Generator().manual_seed(1)), tau, rn, states, *args[3:])
    )


def test_rows_without_keys_are_zero():
    q, k, v = _inputs(1, 1, 1, 6, 3, 4, 4, torch.float32, "cpu")
    o = diffmax_attention(q, k, v, 0.5, causal=True)  # queries 0..2 see no key (Sk − Sq = −3)
    assert torch.equal(o[0, 0, :3], torch.zeros(3, 4)) and torch.isfinite(o).all()


@pytest.mark.parametrize("backend", ["reference", "triton"])
@pytest.mark.parametrize("B,Sq,Sk", [(0, 5, 7), (2, 0, 7), (2, 5, 0)], ids=["B=0", "Sq=0", "Sk=0"])
def test_empty_dims(B, Sq, Sk, backend, monkeypatch):
    """An empty batch or sequence gives empty outputs and gradients (rows without keys: zeros),
    on both paths; the reference once indexed the scores of batch 0 and concatenated no chunks."""
    device = "cpu"
    if backend == "triton":  # compiled on a GPU, interpreted on CPU tensors
        monkeypatch.setenv("FLASHMARKOV_BACKEND", "triton")
        device = DEVICE
    q, k, v = (t.requires_grad_() for t in _inputs(B, 2, 1, Sq, Sk, 16, 8, torch.float32, device))
    o, stats = diffmax_attention(q, k, v, 0.5, causal=Sq == 0, return_stats=True)
    assert o.shape == (B, 2, Sq, 8) and torch.equal(o, torch.zeros_like(o))
    assert stats["tiles_skipped"] == 0 and stats["tiles_visible"] == 0
    grads = torch.autograd.grad(o, (q, k, v), torch.ones_like(o), allow_unused=True)
    for g, x in zip(grads, (q, k, v)):
        assert g is not None and g.shape == x.shape and torch.equal(g, torch.zeros_like(x))


# ---- bad input ----

Q, K, V = _inputs(1, 4, 2, 5, 6, 8, 8, torch.float32, "cpu")
BAD = [
    (dict(q=Q[0]), ValueError, "q must have at least 4"),
    (dict(q=Q.long()), TypeError, "q has dtype torch.int64"),
    (dict(k=K.double()), TypeError, "k has dtype torch.float64 but q has torch.float32"),
    (dict(k=K[..., :4]), ValueError, "k has shape"),
    (dict(v=V[:, :, :4]), ValueError, "v has shape"),
    (dict(k=torch.randn(1, 3, 6, 8), v=torch.randn(1, 3, 6, 8)), ValueError, "must divide the query heads"),
    (dict(alpha=1.0), ValueError, "alpha=1.0 must lie in"),
    (dict(alpha=torch.tensor(0.5)), TypeError, "alpha must be a float"),
    (dict(causal=1), TypeError, "causal must be a bool"),
    (dict(softmax_scale=-1.0), ValueError, "softmax_scale must be"),
    (dict(window=(3,)), ValueError, "window must be a pair"),
    (dict(window=(-2, 0)), ValueError, "window must be a pair"),
    (dict(n_iter=0), ValueError, "n_iter=0 must be >= 1"),
    (dict(return_stats="yes"), TypeError, "return_stats must be a bool"),
]


@pytest.mark.parametrize("kwargs,error,match", BAD)
def test_bad_input(kwargs, error, match):
    args = dict(q=Q, k=K, v=V)
    args.update(kwargs)
    with pytest.raises(error, match=match):
        diffmax_attention(**args)
