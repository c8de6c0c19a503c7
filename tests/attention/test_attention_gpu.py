"""flashmarkov.attention on a CUDA GPU: the compiled kernels at realistic sizes, head dims up to
256, every feature, varlen batches, bfloat16 included.

Half types follow FlashAttention's rule: the error of o, dq, dk, dv against a float64 reference
is at most twice the error of PyTorch's own attention in the same dtype (SDPA where it has the
feature, else math attention in the dtype) against the same reference. float32 runs with tf32x3
dot products (IEEE above D = 128) and the fixed tolerances of ``helpers.TOL``.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from flashmarkov.attention import flash_attention, flash_attention_varlen
from flashmarkov.attention.reference import visible_mask

from ..conftest import rel_err
from .helpers import check_attention, check_varlen, rand

pytestmark = pytest.mark.gpu

HOPPER = torch.cuda.is_available() and torch.cuda.get_device_capability() == (9, 0)
GLUON_ONLY = "the Gluon kernels run on sm_90 (Hopper) only; elsewhere the Triton kernels run (the other tests)"
requires_hopper = pytest.mark.skipif(not HOPPER, reason=GLUON_ONLY)
HALF = [torch.bfloat16, torch.float16]
RULE = 2.0
FLOOR = {torch.bfloat16: 1e-4, torch.float16: 1e-5}  # absolute slack for errors near zero

CASES = [
    # Hq, Hkv, Sq, Sk, D, options
    (8, 8, 1000, 1000, 64, dict(causal=True)),
    (16, 4, 4097, 4097, 128, dict(causal=True)),
    (4, 4, 513, 1537, 256, {}),
    (8, 2, 2048, 1000, 96, dict(causal=True, window=(256, 0))),
    (4, 4, 1000, 1000, 40, dict(softcap=30.0)),
    (4, 1, 777, 777, 192, dict(window=(100, 100))),
    (4, 4, 1, 4096, 80, dict(causal=True)),
    (4, 4, 3000, 100, 72, dict(causal=True)),  # Sq > Sk: rows without keys
    (2, 2, 16384, 16384, 128, dict(causal=True)),
]


def torch_attention(q, k, v, *, causal=False, window=(-1, -1), softcap=0.0, softmax_scale=None):
    """PyTorch's attention in the inputs' dtype: SDPA with a boolean mask, or, with softcap or rows
    that see no key (where SDPA gives NaN), math attention with scores and P rounded to the dtype."""
    B, Hq, Sq, D = q.shape
    scale = 1 / math.sqrt(D) if softmax_scale is None else softmax_scale
    mask = visible_mask(Sq, k.shape[2], causal, window, q.device)
    seen = mask.any(-1, keepdim=True)
    if softcap == 0 and bool(seen.all()):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale, enable_gqa=Hq != k.shape[1])
    group = Hq // k.shape[1]
    k, v = k.repeat_interleave(group, 1), v.repeat_interleave(group, 1)
    s = (q @ k.transpose(-1, -2)) * scale
    if softcap > 0:
        s = softcap * torch.tanh(s / softcap)
    s = torch.where(mask & seen, s, -math.inf)
    s = torch.where(seen, s, 0.0)
    p = torch.where(seen, torch.softmax(s.float(), -1), 0.0).to(q.dtype)
    return p @ v


def _outputs(fn, leaves, do):
    o = fn(*leaves)
    return [o.detach(), *torch.autograd.grad(o, leaves, do)]


def check_rule(dtype, Hq, Hkv, Sq, Sk, D, opts, B=1, layout="bhsd"):
    """o, dq, dk, dv of flash_attention within RULE × PyTorch's own error in the dtype."""
    def shape(H, S):
        return (B, H, S, D) if layout == "bhsd" else (B, S, H, D)

    def bhsd(x):
        return x if layout == "bhsd" else x.transpose(1, 2)

    q, k, v = rand(shape(Hq, Sq), dtype, "cuda"), rand(shape(Hkv, Sk), dtype, "cuda"), rand(shape(Hkv, Sk), dtype, "cuda")
    do = rand(shape(Hq, Sq), dtype, "cuda")
    ours_fn = lambda *x: flash_attention(*x, layout=layout, **opts)  # noqa: E731
    torch_fn = lambda *x: bhsd(torch_attention(*map(bhsd, x), **opts))  # noqa: E731
    ref = _outputs(ours_fn, [t.double().requires_grad_() for t in (q, k, v)], do.double())
    ours = _outputs(ours_fn, [t.clone().requires_grad_() for t in (q, k, v)], do)
    base = _outputs(torch_fn, [t.clone().requires_grad_() for t in (q, k, v)], do)
    for name, a, b, r in zip(("o", "dq", "dk", "dv"), ours, base, ref, strict=True):
        err, err_torch = rel_err(a, r), rel_err(b, r)
        assert math.isfinite(err_torch), f"{name}: PyTorch's baseline is not finite"
        assert err <= RULE * err_torch + FLOOR[dtype], f"{name}: {err:.3g} > {RULE} × PyTorch's {err_torch:.3g}"


@pytest.mark.parametrize("dtype", HALF)
@pytest.mark.parametrize("Hq,Hkv,Sq,Sk,D,opts", CASES)
def test_gpu_rule(Hq, Hkv, Sq, Sk, D, opts, dtype):
    check_rule(dtype, Hq, Hkv, Sq, Sk, D, opts)


GLUON_CASES = [
    # B, Hq, Hkv, Sq, Sk, D, causal, layout
    (2, 4, 4, 1000, 1537, 128, False, "bhsd"),
    (1, 8, 2, 129, 129, 64, True, "bhsd"),
    (2, 6, 3, 1, 300, 128, False, "bshd"),
    (1, 4, 4, 2049, 2049, 128, True, "bshd"),
    (3, 2, 1, 4096, 4096, 64, False, "bhsd"),
    (1, 2, 2, 5000, 77, 64, False, "bhsd"),
    (4, 8, 4, 2048, 2048, 64, False, "bhsd"),  # gluon_forward.plan: 8 programs of 192 rows and 4 of 128 per head
    (2, 16, 8, 1950, 1950, 64, False, "bshd"),  # plan 7 + 5, the last small program's second warpgroup on 30 rows
    (2, 4, 2, 700, 700, 96, True, "bhsd"),  # head dims run at width 128 (gluon_forward.width)
    (1, 6, 6, 1000, 1537, 80, False, "bshd"),
    (1, 4, 2, 1000, 1500, 256, False, "bhsd"),  # D = 256: 64-key forward tiles, dK/dV by column parts
    (2, 2, 2, 700, 700, 256, True, "bshd"),
    (2, 4, 2, 777, 777, 192, True, "bhsd"),  # head dims 136…248 run at width 256 (gluon_forward.width)
    (1, 2, 1, 500, 1100, 160, False, "bshd"),
]


@requires_hopper
@pytest.mark.parametrize("dtype", HALF)
@pytest.mark.parametrize("B,Hq,Hkv,Sq,Sk,D,causal,layout", GLUON_CASES)
def test_gpu_gluon_forward(B, Hq, Hkv, Sq, Sk, D, causal, layout, dtype, nan_alloc, monkeypatch):
    """The Gluon forward, dQ and dK/dV kernels (Hopper, 16-bit, D 64/128 and 80/96 at width 128, dense, causal or not, GQA,
    "bshd" views): all launched (the backward ones at gluon_backward.DQ_HEAD_DIMS / DKDV_HEAD_DIMS); o, dq, dk, dv within FlashAttention's rule; o and lse against the Triton forward
    (same inputs, same dtype: o to two units of the dtype's rounding in relative norm, lse to 1e-4)."""
    from flashmarkov.attention import gluon_backward, gluon_forward

    calls, dq_calls, dkdv_calls = [], [], []
    launch, launch_dq, launch_dkdv = gluon_forward.attention_forward, gluon_backward.attention_dq, gluon_backward.attention_dkdv
    monkeypatch.setattr(gluon_forward, "attention_forward", lambda *a: calls.append(1) or launch(*a))
    monkeypatch.setattr(gluon_backward, "attention_dq", lambda *a: dq_calls.append(1) or launch_dq(*a))
    monkeypatch.setattr(gluon_backward, "attention_dkdv", lambda *a: dkdv_calls.append(1) or launch_dkdv(*a))
    monkeypatch.setattr(gluon_forward, "MIN_WORK", dict.fromkeys(gluon_forward.MIN_WORK, 0))  # else the Triton kernels
    monkeypatch.setattr(gluon_backward, "MIN_WORK", dict.fromkeys(gluon_backward.MIN_WORK, 0))
    check_rule(dtype, Hq, Hkv, Sq, Sk, D, dict(causal=causal), B=B, layout=layout)
    assert calls, "the Gluon forward was not launched"
    width = gluon_forward.width(D)
    assert bool(dq_calls) == (width in gluon_backward.DQ_HEAD_DIMS), "the Gluon dQ kernel launched (or not) against DQ_HEAD_DIMS"
    assert bool(dkdv_calls) == (width in gluon_backward.DKDV_HEAD_DIMS), "the Gluon dK/dV launched (or not) against DKDV_HEAD_DIMS"
    shape = (lambda H, S: (B, H, S, D)) if layout == "bhsd" else (lambda H, S: (B, S, H, D))
    q, k, v = rand(shape(Hq, Sq), dtype, "cuda"), rand(shape(Hkv, Sk), dtype, "cuda"), rand(shape(Hkv, Sk), dtype, "cuda")
    o, lse = flash_attention(q, k, v, causal=causal, layout=layout, return_lse=True)
    monkeypatch.setattr(gluon_forward, "ENABLED", False)
    o_t, lse_t = flash_attention(q, k, v, causal=causal, layout=layout, return_lse=True)
    assert torch.isfinite(o).all() and torch.isfinite(lse).all()
    assert (lse - lse_t).abs().max().item() < 1e-4
    assert rel_err(o, o_t) <= 2 * torch.finfo(dtype).eps


@requires_hopper
@pytest.mark.parametrize("B,Hq,Hkv,S,D", [(2, 5, 5, 700, 64), (1, 6, 2, 1000, 128)])
def test_gpu_gluon_forward_causal_walks(B, Hq, Hkv, S, D, monkeypatch):
    """The causal Gluon forward's walks give bitwise the same o and lse: one program per item and
    items from a global counter (``CAUSAL_PERSISTENT_ROUNDS`` = 0) and static rounds over groups of 1, 3 and 4 (batch,
    head) pairs (a smaller last group: 10 pairs in 3 + 3 + 3 + 1, 6 in 4 + 2) and the chosen one;
    and the Triton forward's o within two units of rounding."""
    from flashmarkov.attention import gluon_forward

    monkeypatch.setattr(gluon_forward, "MIN_WORK", dict.fromkeys(gluon_forward.MIN_WORK, 0))
    calls = []
    launch = gluon_forward.attention_forward
    monkeypatch.setattr(gluon_forward, "attention_forward", lambda *a: calls.append(1) or launch(*a))
    q, k, v = rand((B, Hq, S, D), torch.bfloat16, "cuda"), rand((B, Hkv, S, D), torch.bfloat16, "cuda"), rand((B, Hkv, S, D), torch.bfloat16, "cuda")
    chosen = gluon_forward.causal_groups
    runs = {}
    for name, rounds, dyn, groups in (("grid", 0, (), chosen), ("dynamic", 0, (D,), chosen), ("g1", 4, (), lambda *a: 1),
                                      ("g3", 4, (), lambda *a: 3), ("g4", 4, (), lambda *a: 4), ("chosen", 4, (), chosen)):
        monkeypatch.setattr(gluon_forward, "CAUSAL_PERSISTENT_ROUNDS", rounds)
        monkeypatch.setattr(gluon_forward, "DYNAMIC_HEAD_DIMS", dyn)
        monkeypatch.setattr(gluon_forward, "causal_groups", groups)
        runs[name] = flash_attention(q, k, v, causal=True, return_lse=True)
    assert len(calls) == len(runs), "the Gluon forward did not run every walk"
    for name, (o, lse) in runs.items():
        assert torch.equal(o, runs["grid"][0]) and torch.equal(lse, runs["grid"][1]), name
    monkeypatch.setattr(gluon_forward, "ENABLED", False)
    o_t = flash_attention(q, k, v, causal=True)
    assert rel_err(runs["grid"][0], o_t) <= 2 * torch.finfo(torch.bfloat16).eps


@requires_hopper
def test_gpu_gluon_forward_broadcast_kv(monkeypatch):
    """K/V broadcast over the batch (stride 0, which a TMA descriptor cannot take) run the Triton
    forward, with the Gluon forward otherwise eligible; o matches the same K/V materialised."""
    from flashmarkov.attention import gluon_forward

    monkeypatch.setattr(gluon_forward, "MIN_WORK", dict.fromkeys(gluon_forward.MIN_WORK, 0))
    calls = []
    launch = gluon_forward.attention_forward
    monkeypatch.setattr(gluon_forward, "attention_forward", lambda *a: calls.append(1) or launch(*a))
    q = rand((2, 4, 300, 128), torch.bfloat16, "cuda")
    k, v = (rand((1, 4, 300, 128), torch.bfloat16, "cuda").expand(2, -1, -1, -1) for _ in range(2))
    o = flash_attention(q, k, v)
    assert not calls, "a stride-0 tensor reached the Gluon forward"
    o_dense = flash_attention(q, k.contiguous(), v.contiguous())
    assert calls, "the Gluon forward did not run on the materialised K/V"
    assert rel_err(o, o_dense) <= 2 * torch.finfo(torch.bfloat16).eps


@pytest.mark.parametrize("D", [16, 40, 64, 72, 80, 96, 128, 192, 256])
def test_gpu_head_dims(D, nan_alloc):
    check_rule(torch.bfloat16, 4, 2, 1000, 1000, D, dict(causal=True), B=2)


@pytest.mark.parametrize("dtype", HALF)
def test_gpu_bshd_rule(dtype, nan_alloc):
    check_rule(dtype, 8, 2, 1000, 1500, 128, dict(causal=True, window=(500, -1)), B=2, layout="bshd")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("Hq,Hkv,Sq,Sk,D,opts", CASES[:6])
def test_gpu_float32_float64(Hq, Hkv, Sq, Sk, D, opts, dtype, nan_alloc):
    """float32 on the kernels (tf32x3 dot products; IEEE above D = 128), float64 on the reference: fixed tolerances."""
    check_attention("cuda", dtype, Hq=Hq, Hkv=Hkv, Sq=min(Sq, 2048), Sk=min(Sk, 2048), D=D, **opts)


@pytest.mark.parametrize("dtype", [torch.float32])
def test_gpu_bshd_and_lse(dtype, nan_alloc):
    check_attention("cuda", dtype, B=2, Hq=8, Hkv=2, Sq=1000, Sk=1500, D=128, layout="bshd", causal=True)


@pytest.mark.parametrize("dtype", HALF)
@pytest.mark.parametrize("opts", [dict(causal=True), dict(window=(300, 20), softcap=20.0)])
def test_gpu_varlen_rule(dtype, opts, nan_alloc):
    """Mixed lengths 0…4097 in one packed batch, each sequence within RULE × PyTorch's error."""
    lens_q, lens_k = [1, 100, 1000, 4097, 0, 513, 2000], [1, 300, 1000, 4097, 7, 0, 1000]
    Hq, Hkv, D = 8, 2, 128
    cu_q = torch.tensor([0, *torch.tensor(lens_q).cumsum(0).tolist()], dtype=torch.int32, device="cuda")
    cu_k = torch.tensor([0, *torch.tensor(lens_k).cumsum(0).tolist()], dtype=torch.int32, device="cuda")
    q = rand((sum(lens_q), Hq, D), dtype, "cuda")
    k, v = (rand((sum(lens_k), Hkv, D), dtype, "cuda") for _ in range(2))
    do = rand(q.shape, dtype, "cuda")
    args = (cu_q, cu_k, max(lens_q), max(lens_k))

    def per_sequence(fn):
        def run(q, k, v):
            outs = []
            for n in range(len(lens_q)):
                qs = q[cu_q[n] : cu_q[n + 1]].transpose(0, 1)[None]
                ks, vs = (x[cu_k[n] : cu_k[n + 1]].transpose(0, 1)[None] for x in (k, v))
                if lens_q[n] == 0:
                    continue
                if lens_k[n] == 0:
                    outs.append(torch.zeros_like(qs[0].transpose(0, 1)) + 0 * qs.sum())
                    continue
                outs.append(fn(qs, ks, vs, **opts)[0].transpose(0, 1))
            return torch.cat(outs, 0)

        return run

    ref = _outputs(lambda *x: flash_attention_varlen(*x, *args, **opts), [t.double().requires_grad_() for t in (q, k, v)], do.double())
    ours = _outputs(lambda *x: flash_attention_varlen(*x, *args, **opts), [t.clone().requires_grad_() for t in (q, k, v)], do)
    base = _outputs(per_sequence(torch_attention), [t.clone().requires_grad_() for t in (q, k, v)], do)
    for name, a, b, r in zip(("o", "dq", "dk", "dv"), ours, base, ref, strict=True):
        err, err_torch = rel_err(a, r), rel_err(b, r)
        assert err <= RULE * err_torch + FLOOR[dtype], f"{name}: {err:.3g} > {RULE} × PyTorch's {err_torch:.3g}"


@pytest.mark.parametrize("dtype", [torch.float32])
def test_gpu_varlen_float(dtype, nan_alloc):
    check_varlen("cuda", dtype, [1, 100, 0, 1000, 777], [1, 300, 5, 1000, 0], Hq=8, Hkv=2, D=96, causal=True)


def test_gpu_deterministic():
    """Bitwise-identical gradients over repeated backward passes (GQA, long sequence)."""
    q = rand((2, 16, 4096, 128), torch.bfloat16, "cuda").requires_grad_()
    k, v = (rand((2, 4, 4096, 128), torch.bfloat16, "cuda").requires_grad_() for _ in range(2))
    do = rand(q.shape, torch.bfloat16, "cuda")
    runs = []
    for _ in range(3):
        o = flash_attention(q, k, v, causal=True, deterministic=True)
        runs.append(torch.autograd.grad(o, (q, k, v), do))
    for run in runs[1:]:
        for a, b in zip(runs[0], run, strict=True):
            assert torch.equal(a, b)


def test_gpu_compile_fullgraph():
    """torch.compile traces the kernels' op without graph breaks, forward and backward."""
    q = rand((2, 8, 1000, 64), torch.bfloat16, "cuda").requires_grad_()
    k, v = (rand((2, 2, 1000, 64), torch.bfloat16, "cuda").requires_grad_() for _ in range(2))

    def model(q, k, v):
        return flash_attention(q, k, v, causal=True).float().square().sum()

    out = torch.compile(model, fullgraph=True)(q, k, v)
    grads = torch.autograd.grad(out, (q, k, v))
    expected = model(q, k, v)
    expected_grads = torch.autograd.grad(expected, (q, k, v))
    assert rel_err(out, expected) < 1e-3
    for g, e in zip(grads, expected_grads, strict=True):
        assert rel_err(g, e) < 1e-2


def test_gpu_opcheck():
    from flashmarkov.attention.op import attention_op

    q = rand((1, 4, 300, 64), torch.float16, "cuda").requires_grad_()
    k, v = (rand((1, 2, 200, 64), torch.float16, "cuda").requires_grad_() for _ in range(2))
    torch.library.opcheck(attention_op, (q, k, v, None, None, 300, 200, True, 0.125, 64, -1, 0.0))


@pytest.mark.bigmem
def test_gpu_long_sequence_int64_offsets():
    """A "bshd" sequence of 2^20 tokens × 16 heads × 128: element offsets pass 2^31. With a
    sliding window, the last rows depend only on the last keys, so the result on the whole
    sequence must match the kernels on the tail alone (o, dq, and dk, dv near the end)."""
    S, H, D, W, T = 2**20, 16, 128, 128, 2048
    q, k, v = (rand((1, S, H, D), torch.bfloat16, "cuda") for _ in range(3))
    do = torch.zeros_like(q)
    do[:, -T:] = rand((1, T, H, D), torch.bfloat16, "cuda")
    kw = dict(causal=True, window=(W, 0), layout="bshd")
    leaves = [x.requires_grad_() for x in (q, k, v)]
    o = flash_attention(*leaves, **kw)
    dq, dk, dv = torch.autograd.grad(o, leaves, do)
    tail = [x.detach()[:, -T - W :].clone().requires_grad_() for x in (q, k, v)]
    o_t = flash_attention(*tail, **kw)
    dq_t, dk_t, dv_t = torch.autograd.grad(o_t, tail, do[:, -T - W :])
    assert rel_err(o[:, -T:], o_t[:, -T:]) < 1e-2
    assert rel_err(dq[:, -T:], dq_t[:, -T:]) < 1e-2
    assert rel_err(dk[:, -T:], dk_t[:, -T:]) < 1e-2 and rel_err(dv[:, -T:], dv_t[:, -T:]) < 1e-2


@pytest.mark.parametrize("gluon", [False, True])
@pytest.mark.parametrize("aligned", [True, False])
@pytest.mark.parametrize("causal", [False, True])
def test_gpu_lean_launch_matches_jit_launch(aligned, causal, gluon, monkeypatch):
    """The bound launchers (flashmarkov._launch.LeanKernel) write exactly what ``kernel[grid](...)`` writes:
    o, lse, dq, dk, dv bitwise, on the call that binds, on calls that reuse the binding, and
    with tensors that are not 16-byte aligned (another specialisation). ``gluon``: D = 128 with the
    Gluon kernels' thresholds at 0 (on Hopper they take the aligned calls: TMA descriptors)."""
    from flashmarkov import _launch
    from flashmarkov.attention import gluon_backward, gluon_forward

    if gluon:
        if not HOPPER:
            pytest.skip(GLUON_ONLY)
        monkeypatch.setattr(gluon_forward, "MIN_WORK", dict.fromkeys(gluon_forward.MIN_WORK, 0))
        monkeypatch.setattr(gluon_backward, "MIN_WORK", dict.fromkeys(gluon_backward.MIN_WORK, 0))
        for kernel in (gluon_forward._FWD, gluon_backward._DKDV, gluon_backward._DQ):
            # this test's bindings only (another test's single call leaves an entry never reused)
            monkeypatch.setattr(kernel, "bound", {})
    d = 128 if gluon else 64
    shapes = [(2, 4, 300, d), (2, 2, 257, d), (2, 2, 257, d), (2, 4, 300, d)]
    base = [rand(s, torch.bfloat16, "cuda") for s in shapes]

    def leaf(x):
        t = torch.empty(x.numel() + (0 if aligned else 1), dtype=x.dtype, device=x.device)[(0 if aligned else 1):]
        t = t.view(x.shape).copy_(x)
        assert (t.data_ptr() % 16 == 0) == aligned
        return t.requires_grad_()

    def run():
        q, k, v = (leaf(x) for x in base[:3])
        o, lse = flash_attention(q, k, v, causal=causal, return_lse=True)
        return [o.detach(), lse.detach(), *torch.autograd.grad((o, lse), (q, k, v), (base[3], torch.ones_like(lse)))]

    lean = [run() for _ in range(3)]
    if gluon and aligned and not causal:  # (causal here has Sq ≠ Sk: the Triton kernels) the bound Gluon launches reused their encoded descriptors (the launcher beneath Triton's wrapper)
        for kernel in (gluon_forward._FWD, gluon_backward._DKDV, gluon_backward._DQ):
            assert kernel.bound and all(enc is not None and enc.cache for _, enc in kernel.bound.values())
    monkeypatch.setattr(_launch, "_hooks_idle", lambda: False)  # every launch through kernel[grid](...)
    jit = run()
    for outs in lean:
        for name, a, b in zip(("o", "lse", "dq", "dk", "dv"), outs, jit, strict=True):
            assert torch.equal(a, b), name
