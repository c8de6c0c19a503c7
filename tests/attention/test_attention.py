"""flashmarkov.attention on CPU: the Triton kernels through the interpreter at tiny sizes (o, lse,
dq, dk, dv against the float64 reference), the public API on the reference path (gradcheck,
torch.compile, opcheck), and bad input."""

from __future__ import annotations

import math

import pytest
import torch

from flashmarkov.attention import flash_attention, flash_attention_ref, flash_attention_varlen, forward
from flashmarkov.attention.op import attention_bwd_op, attention_op

from ..conftest import DEVICE, TOLERANCE, rel_err
from .helpers import check_attention, check_varlen, rand

F16, F32 = torch.float16, torch.float32

# A small but complete grid: lengths {1, 17, 63, 100} on both sides, head dims {16, 40, 64},
# each feature alone and combined, Sq < Sk and Sq > Sk (rows without keys), GQA and MQA.
KERNEL_CASES = [
    # dtype, Hq, Hkv, Sq, Sk, D, options
    (F16, 2, 2, 17, 17, 16, {}),
    (F32, 2, 1, 63, 100, 40, dict(causal=True)),
    (F16, 4, 2, 100, 63, 64, dict(causal=True)),
    (F32, 2, 1, 1, 100, 16, dict(causal=True)),
    (F32, 2, 2, 100, 1, 40, {}),
    (F32, 2, 1, 1, 1, 64, dict(causal=True)),
    (F32, 2, 1, 63, 63, 16, dict(window=(5, 3))),
    (F16, 2, 1, 100, 63, 16, dict(causal=True, window=(7, -1))),
    (F32, 2, 2, 63, 17, 40, dict(window=(-1, 4))),
    (F32, 2, 1, 17, 63, 64, dict(causal=True, softcap=5.0)),
    (F16, 4, 1, 63, 63, 16, dict(window=(0, 0), softcap=2.0, softmax_scale=0.3)),
    (F32, 4, 2, 17, 100, 40, dict(causal=True, window=(20, -1), softcap=3.0)),
    (F32, 2, 1, 0, 17, 16, dict(causal=True)),  # no queries
    (F16, 2, 2, 17, 0, 16, {}),  # no keys: o = 0, lse = -inf, zero dq
]


@pytest.mark.parametrize("dtype,Hq,Hkv,Sq,Sk,D,opts", KERNEL_CASES)
def test_kernels(dtype, Hq, Hkv, Sq, Sk, D, opts, triton_backend, nan_alloc):
    check_attention(triton_backend, dtype, Hq=Hq, Hkv=Hkv, Sq=Sq, Sk=Sk, D=D, **opts)


@pytest.mark.parametrize("block_m,block_n", [(16, 32), (32, 16)])
def test_kernels_unequal_tiles(block_m, block_n, triton_backend, nan_alloc, monkeypatch):
    """Band bounds with BLOCK_M != BLOCK_N, in all three kernels."""
    monkeypatch.setattr(forward, "pick_config", lambda *a: forward.AttnConfig(block_m, block_n, 1, 1))
    from flashmarkov.attention import backward

    monkeypatch.setattr(backward, "pick_config", lambda *a: forward.AttnConfig(block_m, block_n, 1, 1))
    check_attention(triton_backend, F32, B=2, Hq=2, Hkv=1, Sq=63, Sk=100, D=16, causal=True, window=(40, 9))


def test_kernels_int64_offsets(triton_backend, nan_alloc, monkeypatch):
    """The LARGE variant (int64 in-sequence offsets, for tensors of 2^31 elements or more)."""
    from flashmarkov.attention import backward

    monkeypatch.setattr(forward, "large_offsets", lambda *tensors: True)
    monkeypatch.setattr(backward, "large_offsets", lambda *tensors: True)
    check_varlen(triton_backend, F32, [17, 40], [33, 5], Hq=2, Hkv=1, D=16, causal=True)


def test_kernels_bshd_strided(triton_backend, nan_alloc):
    """layout "bshd" runs on the tensors as they lie (the kernels take strides)."""
    check_attention(triton_backend, F32, B=2, Hq=4, Hkv=2, Sq=63, Sk=17, D=40, layout="bshd", causal=True)


def test_kernels_non_contiguous_views(triton_backend, nan_alloc):
    """q, k, v as slices of larger buffers (strides that no layout has) give the right answer."""
    q = rand((1, 2, 40, 64), F32, triton_backend)[..., 8:48]
    kv = rand((2, 1, 3, 33, 40), F32, triton_backend)[:, :, ::3]
    o = flash_attention(q, kv[0], kv[1], causal=True)
    expected = flash_attention(q.double(), kv[0].double(), kv[1].double(), causal=True)
    assert (o.double() - expected).norm() / expected.norm() < 2e-5


VARLEN_CASES = [
    (F32, [17, 1, 0, 63], [17, 40, 5, 0], dict(causal=True)),  # empty query and key sequences
    (F16, [30, 9], [9, 30], dict(window=(4, 2), softcap=4.0)),
]


@pytest.mark.parametrize("dtype,lens_q,lens_k,opts", VARLEN_CASES)
def test_kernels_varlen(dtype, lens_q, lens_k, opts, triton_backend, nan_alloc):
    check_varlen(triton_backend, dtype, lens_q, lens_k, Hq=4, Hkv=2, D=40, **opts)


def test_kernels_deterministic(triton_backend):
    """Two backward passes give bitwise-identical gradients (no atomics anywhere)."""
    q = rand((1, 4, 63, 16), F16, triton_backend).requires_grad_()
    k, v = (rand((1, 1, 63, 16), F16, triton_backend).requires_grad_() for _ in range(2))
    do = rand((1, 4, 63, 16), F16, triton_backend)
    runs = []
    for _ in range(2):
        o = flash_attention(q, k, v, causal=True, deterministic=True)
        runs.append(torch.autograd.grad(o, (q, k, v), do))
    for a, b in zip(*runs, strict=True):
        assert torch.equal(a, b)


# ---- the public API on the reference path ----


@pytest.mark.parametrize("varlen", [False, True])
def test_gradcheck_float64(varlen):
    """Through the custom op and its registered backward (float64 runs the reference)."""
    kw = dict(causal=True, window=(4, -1), softcap=2.0, return_lse=True)
    if varlen:
        cu = torch.tensor([0, 3, 9], dtype=torch.int32)
        cu_k = torch.tensor([0, 6, 14], dtype=torch.int32)  # every row sees a key (finite lse)
        q = torch.randn(9, 2, 3, dtype=torch.float64, requires_grad=True)
        k, v = (torch.randn(14, 1, 3, dtype=torch.float64, requires_grad=True) for _ in range(2))
        fn = lambda q, k, v: flash_attention_varlen(q, k, v, cu, cu_k, 6, 8, **kw)  # noqa: E731
    else:
        q = torch.randn(1, 2, 5, 3, dtype=torch.float64, requires_grad=True)
        k, v = (torch.randn(1, 1, 7, 3, dtype=torch.float64, requires_grad=True) for _ in range(2))
        fn = lambda q, k, v: flash_attention(q, k, v, **kw)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (q, k, v))


@pytest.mark.parametrize("dtype", [F16, F32])
def test_reference_path_matches(dtype):
    """CPU tensors without the interpreter forced: the reference, through the same op."""
    check_attention("cpu", dtype, B=2, Hq=4, Hkv=2, Sq=9, Sk=13, D=8, causal=True, window=(5, -1))


def test_torch_compile_fullgraph():
    def model(q, k, v):
        o, lse = flash_attention(q.tanh(), k, v, causal=True, return_lse=True, layout="bshd")
        return (o * o).sum() + torch.where(torch.isfinite(lse), lse, 0).sum()

    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    q = torch.randn(2, 9, 4, 8, requires_grad=True)
    k, v = (torch.randn(2, 6, 2, 8, requires_grad=True) for _ in range(2))
    out = compiled(q, k, v)
    out.backward()
    grads = [t.grad.clone() for t in (q, k, v)]
    for t in (q, k, v):
        t.grad = None
    expected = model(q, k, v)
    expected.backward()
    torch.testing.assert_close(out, expected)
    for got, t in zip(grads, (q, k, v), strict=True):
        torch.testing.assert_close(got, t.grad)


def test_torch_compile_varlen_fullgraph():
    cu = torch.tensor([0, 4, 11], dtype=torch.int32)

    def model(q, k, v):
        return flash_attention_varlen(q, k, v, cu, cu, 7, 7, causal=True).sum()

    q, k, v = (torch.randn(11, 2, 8, requires_grad=True) for _ in range(3))
    out = torch.compile(model, fullgraph=True, backend="aot_eager")(q, k, v)
    torch.testing.assert_close(out, model(q, k, v))


@pytest.mark.parametrize("varlen", [False, True])
def test_opcheck(varlen):
    if varlen:
        cu = torch.tensor([0, 3, 3, 9], dtype=torch.int32)
        q = torch.randn(9, 4, 8, requires_grad=True)
        k, v = (torch.randn(9, 2, 8, requires_grad=True) for _ in range(2))
        args = (q, k, v, cu, cu, 6, 6, True, 0.5, 3, -1, 2.0)
    else:
        q = torch.randn(2, 5, 4, 8).transpose(1, 2).requires_grad_()  # a "bshd" tensor as (B, H, S, D)
        k, v = (torch.randn(2, 2, 7, 8, requires_grad=True) for _ in range(2))
        args = (q, k, v, None, None, 5, 7, True, 0.5, -1, -1, 0.0)
    torch.library.opcheck(attention_op, args)
    with torch.no_grad():
        o, lse = attention_op(*args)
    qkv = [x.detach() for x in args[:3]]
    torch.library.opcheck(attention_bwd_op, (torch.randn_like(o), *qkv, o, lse, torch.randn_like(lse), *args[3:]))


def test_package_exports():
    import flashmarkov.attention as attention

    assert set(attention.__all__) >= {"flash_attention", "flash_attention_varlen"}


# ---- bad input: a clear error naming the argument, before any launch ----

Q = torch.randn(1, 4, 5, 8)
K = torch.randn(1, 2, 6, 8)
CU = torch.tensor([0, 2, 5], dtype=torch.int32)

BAD = [
    (dict(q=[1.0]), TypeError, "q must be a torch.Tensor"),
    (dict(q=Q.long()), TypeError, "q has dtype torch.int64"),
    (dict(k=K.double(), v=K.double()), TypeError, "k has dtype torch.float64 but q has torch.float32"),
    (dict(q=Q[0]), ValueError, "q must have at least 4"),
    (dict(v=K[..., :4]), ValueError, "v has shape"),
    (dict(k=K[..., :4], v=K[..., :4]), ValueError, "head dims differ"),
    (dict(q=torch.randn(1, 4, 5, 264), k=torch.randn(1, 2, 6, 264), v=torch.randn(1, 2, 6, 264)), ValueError, "D=264"),
    (dict(k=torch.randn(1, 3, 6, 8), v=torch.randn(1, 3, 6, 8)), ValueError, "Hkv=3 must divide"),
    (dict(k=torch.randn(2, 2, 6, 8), v=torch.randn(2, 2, 6, 8)), ValueError, "batch sizes differ"),
    (dict(causal=1), TypeError, "causal must be a bool"),
    (dict(window=(-2, 3)), ValueError, "window"),
    (dict(window=(1,)), TypeError, "window must be a pair"),
    (dict(window=(1.0, 2)), TypeError, "window left must be an int"),
    (dict(softcap=-1.0), ValueError, "softcap=-1.0"),
    (dict(softmax_scale=math.inf), ValueError, "softmax_scale=inf"),
    (dict(softmax_scale="1"), TypeError, "softmax_scale must be"),
    (dict(layout="bsdh"), ValueError, "layout='bsdh'"),
    (dict(return_lse=None), TypeError, "return_lse must be a bool"),
    # next to the common case that __init__ checks in one expression
    (dict(window=(-1.0, -1)), TypeError, "window left must be an int"),
    (dict(window=(True, -1)), TypeError, "window left must be an int"),
    (dict(window=[0, -2]), ValueError, "window"),
    (dict(softcap=math.nan), ValueError, "softcap=nan"),
    (dict(softcap=math.inf), ValueError, "softcap=inf"),
    (dict(softmax_scale=math.nan), ValueError, "softmax_scale=nan"),
    (dict(softmax_scale=-math.inf), ValueError, "softmax_scale=-inf"),
    (dict(deterministic=0), TypeError, "deterministic must be a bool"),
    (dict(q=Q.half()), TypeError, "k has dtype torch.float32 but q has torch.float16"),
    (dict(q=Q.unsqueeze(0)), ValueError, "q must have 4 dimensions"),
    (dict(v=K.to(torch.float16)), TypeError, "v has dtype"),
    (dict(v=torch.randn(1, 2, 8, 6, requires_grad=True)), ValueError, "v has shape"),
]


@pytest.mark.parametrize("change,error,match", BAD)
def test_bad_input(change, error, match, monkeypatch):
    def no_launch(*args, **kwargs):
        raise AssertionError("launched on bad input")

    monkeypatch.setattr("flashmarkov.attention.op.attention_fwd", no_launch)
    monkeypatch.setattr("flashmarkov.attention.AttentionFunction.apply", no_launch)
    args = dict(q=Q, k=K, v=K)
    args.update(change)
    q, k, v = args.pop("q"), args.pop("k"), args.pop("v")
    with pytest.raises(error, match=match):
        flash_attention(q, k, v, **args)


QV = torch.randn(5, 4, 8)
KV = torch.randn(5, 2, 8)

BAD_VARLEN = [
    (dict(cu_q=CU.long()), TypeError, "cu_seqlens_q has dtype torch.int64"),
    (dict(cu_k=torch.tensor([0, 3, 2, 5], dtype=torch.int32)), ValueError, "non-decreasing"),
    (dict(cu_k=torch.tensor([0, 1, 2, 5], dtype=torch.int32)), ValueError, "2 sequences but cu_seqlens_k has 3"),
    (dict(cu_q=torch.tensor([0, 2, 4], dtype=torch.int32)), ValueError, "end at 5"),
    (dict(max_q=2), ValueError, "max_seqlen_q=2 is smaller than the longest sequence"),
    (dict(max_k=2.5), TypeError, "max_seqlen_k must be an int"),
    (dict(q=torch.randn(1, 5, 4, 8)), ValueError, "q must have 3 dimensions"),
    (dict(k=torch.randn(5, 3, 8), v=torch.randn(5, 3, 8)), ValueError, "Hkv=3 must divide"),
]


@pytest.mark.parametrize("change,error,match", BAD_VARLEN)
def test_bad_input_varlen(change, error, match):
    args = dict(q=QV, k=KV, v=KV, cu_q=CU, cu_k=CU, max_q=3, max_k=3)
    args.update(change)
    with pytest.raises(error, match=match):
        flash_attention_varlen(args["q"], args["k"], args["v"], args["cu_q"], args["cu_k"], args["max_q"], args["max_k"])


def test_gluon_forward_causal_groups():
    """The causal Gluon forward's grouping of (batch, head) pairs (``gluon_forward.causal_groups``,
    host only): a size from 1 to n_bh; with K/V beyond ``CAUSAL_L2_BYTES`` at most n_sm /
    ``CAUSAL_MIN_REUSE`` pairs per group (L2 reuse); with small K/V the best-balanced walk, which
    for the benchmark's 4×8×2048×64 is one group of all 32 pairs (measured 13 % faster than the
    per-item grid)."""
    from flashmarkov.attention import gluon_forward as gf

    mib = 1 << 20
    assert gf.causal_groups(32, 2048, 192, 16 * mib, 132) == 32
    assert gf.causal_groups(128, 512, 192, 16 * mib, 132) == 128
    for n_bh, sq, rows, kv in ((32, 16384, 128, 256 * mib), (128, 2048, 192, 64 * mib), (32, 8192, 192, 64 * mib),
                               (7, 1000, 128, 1 * mib), (1, 5, 192, 1024), (300, 700, 128, 40 * mib)):
        g = gf.causal_groups(n_bh, sq, rows, kv, 132)
        assert 1 <= g <= n_bh, (n_bh, sq, g)
        if kv > gf.CAUSAL_L2_BYTES:
            assert g <= 132 // gf.CAUSAL_MIN_REUSE, (n_bh, sq, g)
    # the snake makespan: two rounds of three programs pair the longest item with the shortest
    assert gf._snake_makespan([6.0, 5.0, 4.0, 3.0, 2.0, 1.0], 3) == 7.0


@pytest.mark.parametrize("backend", ["reference", "triton"])
def test_double_backward(backend, monkeypatch):
    """Second derivatives (a gradient penalty, GQA, causal, Sq < Sk): under ``create_graph`` the
    backward runs the reference's torch ops on either path; against autograd through the float64
    reference forward. (The kernels' backward returned gradients without a graph.)"""
    device = "cpu"
    if backend == "triton":  # compiled on a GPU, interpreted on CPU tensors
        monkeypatch.setenv("FLASHMARKOV_BACKEND", "triton")
        device = DEVICE
    gen = torch.Generator().manual_seed(0)
    base = [torch.randn(*shape, generator=gen, dtype=torch.float64) for shape in ((2, 4, 33, 16), (2, 2, 40, 16), (2, 2, 40, 16))]
    w = torch.randn(2, 4, 33, 16, generator=gen, dtype=torch.float64)

    def second_order(attn, dtype):
        xs = [x.to(device=device, dtype=dtype).requires_grad_() for x in base]
        o = attn(*xs, causal=True)
        firsts = torch.autograd.grad((o * w.to(o)).sum(), xs, create_graph=True)
        penalty = sum((g.double() ** 2).sum() for g in firsts)
        return torch.autograd.grad(penalty, xs)

    got = second_order(flash_attention, torch.float32)
    expected = second_order(flash_attention_ref, torch.float64)
    for name, g, e in zip(("q", "k", "v"), got, expected, strict=True):
        assert rel_err(g, e) <= TOLERANCE[torch.float32], f"d2/d{name}: {rel_err(g, e):.3g}"


def test_gluon_width():
    """Head dims the Gluon kernels take, and the width they run at (TMA pads the rest with zeros)."""
    from flashmarkov.attention import gluon_forward

    dims = (48, 64, 72, 96, 100, 120, 128, 136, 192, 250, 256, 264)
    assert [gluon_forward.width(d) for d in dims] == [None, 64, 128, 128, None, 128, 128, 256, 256, None, 256, None]


def test_gluon_forward_plan():
    """The non-causal Gluon forward's programs per (batch, head) (``gluon_forward.plan``, host only):
    big ones of NUM_WG · 64 rows and small ones of (NUM_WG − 1) · 64 cover every row with no empty
    program; the benchmark's 4×8×2048×64 on 132 SMs takes 8 + 4 (measured 4 % faster than 10 + 1);
    at D = 128, where a lone warpgroup is no faster than two, and in many waves all-big."""
    from flashmarkov.attention import gluon_forward

    assert gluon_forward.plan(2048, 32, 132, 3) == (8, 4)
    assert gluon_forward.plan(2048, 4, 132, 3) == (11, 0)  # one wave: nothing to balance
    assert gluon_forward.plan(2048, 32, 132, 2) == (16, 0)
    assert gluon_forward.plan(8192, 32, 132, 3) == (43, 0)
    for sq in (1, 63, 64, 65, 127, 128, 191, 192, 193, 1000, 2047, 2048, 2049, 8192):
        for n_bh in (1, 7, 32, 300):
            for n_wg in (2, 3):
                n_big, n_small = gluon_forward.plan(sq, n_bh, 132, n_wg)
                big, small = n_wg * 64, (n_wg - 1) * 64
                assert n_big * big + n_small * small >= sq, (sq, n_bh, n_wg)
                if n_small:
                    assert n_big * big + (n_small - 1) * small < sq, (sq, n_bh, n_wg)
                else:
                    assert (n_big - 1) * big < sq, (sq, n_bh, n_wg)
