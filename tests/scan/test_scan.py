"""flashmarkov.scan on CPU: the Triton kernels through the interpreter, the public API on the
reference path (gradcheck in float64, torch.compile, opcheck), and bad input."""

from __future__ import annotations

import itertools

import pytest
import torch

import flashmarkov
from flashmarkov.scan import kernels, linear_scan, linear_scan_bwd_ref, linear_scan_ref, pscan, scan_forward
from flashmarkov.scan.op import linear_scan_op

from ..conftest import DEVICE, INTERPRETED_DTYPES, assert_close
from .helpers import check_scan, make_gates

LAYOUTS = {"bdt": lambda T: ((2, 3, T), -1), "btd": lambda T: ((2, T, 3), 1)}


def use_config(monkeypatch: pytest.MonkeyPatch, config: kernels.ScanConfig) -> None:
    monkeypatch.setattr(kernels, "pick_config", lambda *args, **kwargs: config)


SMALL_TILES = {"lookback": (True, 2, True), "sequential": (False, 4, False)}


@pytest.fixture(params=list(SMALL_TILES))
def small_tiles(monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> None:
    """Tiles of 8 steps x 2 channels, so small T makes long chains of tiles, walked by the
    look-back (one program per tile) or by one program per chain. Channel-contiguous tiles are
    sliced: 4 rows of 2 steps kept in registers (look-back), 2 rows of 4 steps re-read (sequential)."""
    lookback, slice_k, keep = SMALL_TILES[request.param]
    use_config(monkeypatch, kernels.ScanConfig(8, 2, 1, lookback=lookback, slice_k=slice_k, slice_keep=keep))


@pytest.mark.parametrize("dtype", INTERPRETED_DTYPES)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("T", [1, 2, 31, 100, 1000, 4097])
def test_kernels_lengths(T, layout, dtype, triton_backend, nan_alloc):
    shape, dim = LAYOUTS[layout](T)
    check_scan(shape, dim, dtype, triton_backend, with_initial=True, with_final=True)


OFFSETS = [None, [0, 37], [0, 9, 9, 30, 37], [0, 1, 36, 37], [0, 0, 16, 37, 37]]
STATES = list(itertools.product([False, True], repeat=2))  # (with_initial, with_final)


def _features(layout: str) -> list:
    """(B, D, T): every combination of reverse, initial and final state and offsets (cheap under
    the interpreter). (B, T, D), whose sliced kernel costs ~10 s per case there: for each offsets
    pattern, reverse and chain mode, one (initial, final) pair, rotated so that each offsets
    pattern meets all four pairs (every triple of offsets, reverse and mode, and of offsets and
    the two states, is covered); the GPU tests run the full product at T = 65 537."""
    if layout == "bdt":
        return [(r, i, f, o, m) for r, (i, f), o, m in itertools.product([False, True], STATES, range(len(OFFSETS)), ["lookback", "sequential"])]
    return [(r, *STATES[(2 * r + mi + o) % 4], o, m)
            for o in range(len(OFFSETS)) for r in (False, True) for mi, m in enumerate(["lookback", "sequential"])]


@pytest.mark.parametrize(
    "layout,reverse,with_initial,with_final,i_offsets,small_tiles",
    [(layout, *case) for layout in LAYOUTS for case in _features(layout)],
    indirect=["small_tiles"],
)
def test_kernels_features(layout, reverse, with_initial, with_final, i_offsets, triton_backend, nan_alloc, small_tiles):
    shape, dim = LAYOUTS[layout](37)
    check_scan(
        shape, dim, torch.float32, triton_backend,
        reverse=reverse, with_initial=with_initial, with_final=with_final, offsets=OFFSETS[i_offsets],
    )


@pytest.mark.parametrize("lookback", [True, False], ids=["lookback", "sequential"])
@pytest.mark.parametrize("block_t,slice_k,keep", [(8, 1, True), (8, 8, False), (8, 8, True), (16, 4, False), (4, 2, True)])
@pytest.mark.parametrize("reverse,offsets", [(False, None), (True, [0, 9, 9, 30, 37]), (False, [0, 1, 36, 37])])
def test_kernels_sliced_tiles(reverse, offsets, block_t, slice_k, keep, lookback, triton_backend, nan_alloc, monkeypatch):
    """(B, T, D) tiles of every row count (1 to 8 rows of 1 to 8 steps, slices kept or re-read),
    T = 37 not a multiple of any, over 2 channel blocks of which one is partial."""
    use_config(monkeypatch, kernels.ScanConfig(block_t, 2, 1, lookback=lookback, slice_k=slice_k, slice_keep=keep))
    check_scan((2, 37, 3), 1, torch.float32, triton_backend, reverse=reverse, with_initial=True, with_final=True, offsets=offsets)


@pytest.mark.parametrize("lookback", [True, False], ids=["lookback", "sequential"])
@pytest.mark.parametrize("dtype", INTERPRETED_DTYPES)
@pytest.mark.parametrize("reverse,offsets", [(False, None), (True, None), (False, [0, 100, 100, 259, 260]), (True, [0, 1, 260])])
def test_kernels_btd_default_tiles(reverse, offsets, dtype, lookback, triton_backend, nan_alloc, monkeypatch):
    """(B, T, D) with the tiles pick_config chooses, T and D not multiples of them (three
    segments of 128 steps and two channel blocks of 32, the last of each partial), chained
    both ways. (2, 260, 40): half the interpreter time of (2, 300, 70), same coverage."""
    monkeypatch.setattr(kernels, "use_lookback", lambda n_chains, n_seg, tile_elems, device: lookback and n_seg > 1)
    check_scan((2, 260, 40), 1, dtype, triton_backend, reverse=reverse, with_initial=True, with_final=True, offsets=offsets)


def test_sliced_config_rejected():
    """A sliced tile whose rows are not a power of two is refused before launch."""
    g = torch.rand(1, 12, 4)
    view = kernels.view_of(g, 1)
    with pytest.raises(ValueError, match="block_t must be slice_k times a power of two"):
        kernels.scan_launch(g, g, torch.empty_like(g), view, reverse=False, initial_state=None, state_out=None,
                            cu_seqlens=None, config=kernels.ScanConfig(12, 4, 1, slice_k=4))


@pytest.mark.parametrize("backward", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_packed_sequence_plans_fit_shared_memory(dtype, backward):
    """The (B, T, D) chain walk over packed sequences with states: float32 pipelines at most 2 stages
    (3 needed 311 KB of shared memory in the backward, over sm_90's 227: OutOfResources on the
    H100, notes/scan.md session 11); 16-bit tiles stage little and keep their depth. The plan only
    (no launch): the depth the compiled kernel gets on a GPU."""
    view = kernels.View(2, 700, 40, 700 * 40, 40, 1)
    stages = kernels.CONSTEXPRS.index("STAGES")
    for varlen in (False, True):
        plan = kernels._plan(view, dtype, torch.device("cuda"), True, backward, 4 if varlen else 1,
                             (True, backward, True, varlen), None, kernels.pick_config, lambda *args: False, False)
        assert not plan.lookback_tiles and not plan.gluon
        tile = kernels.pick_config(view.T, view.Q, dtype.itemsize, False, False, "bwd" if backward else "fwd")
        want = min(tile.stages, 2) if varlen and dtype == torch.float32 else tile.stages
        assert plan.consts[stages] == want, (varlen, plan.consts[stages], want)
        if varlen and dtype == torch.float32:
            assert plan.consts[stages] <= 2


def test_lookback_rule_16bit_backward():
    """(B, T, D) chains, T = 8192, D = 2048, planned for a 132-SM GPU: the 16-bit backward (64-channel
    tiles) walks 128 chains in one program each (B = 4: 0.86 of the floor against the look-back's
    0.70 on the H100) and splits 96 (B = 3: 0.68 against 0.66); the forward (32-channel tiles) and
    float32 keep the rule of 4096 elements per SM (B = 2: 128 chains of 4096-element tiles split)."""
    def plan(batch, dtype, backward):
        view = kernels.View(batch, 8192, 2048, 8192 * 2048, 2048, 1)
        return kernels._plan(view, dtype, torch.device("cpu"), False, backward, 1, (False, False, False, False), None,
                             kernels.pick_config, kernels.use_lookback, False)

    assert not plan(4, torch.bfloat16, True).lookback_tiles
    assert plan(3, torch.bfloat16, True).lookback_tiles
    assert plan(2, torch.bfloat16, False).lookback_tiles
    assert plan(2, torch.float32, True).lookback_tiles
    assert not plan(4, torch.float32, True).lookback_tiles


@pytest.mark.parametrize("shape,dim", [((5, 3, 2, 19), 2), ((19,), 0), ((2, 19, 1), 1), ((1, 1, 19), -1)])
def test_kernels_any_rank(shape, dim, triton_backend, nan_alloc, small_tiles):
    check_scan(shape, dim, torch.float64, triton_backend, reverse=True, with_initial=True, with_final=True)


@pytest.mark.parametrize("which", ["gates", "tokens", "dy"])
def test_kernels_strides(which, triton_backend, nan_alloc):
    """A transposed (B, T, D) view scans through the time-contiguous path; mismatched strides
    between inputs are brought together; results match the reference."""
    g = make_gates((2, 3, 50), torch.float32, triton_backend, allow_growth=True)
    x = torch.randn(2, 3, 50, device=triton_backend)
    if which == "gates":
        g = g.mT.contiguous().mT
    elif which == "tokens":
        x = x.mT.contiguous().mT
    gi, xi = g.clone().requires_grad_(), x.clone().requires_grad_()
    y = linear_scan(gi.mT, xi.mT, dim=1)
    dy = torch.randn_like(y)
    if which == "dy":
        dy = dy.contiguous()
    y.backward(dy)
    y_ref = linear_scan_ref(g.double().mT, x.double().mT, dim=1)
    assert_close(y, y_ref, torch.float32, "y")
    dg_ref, dx_ref, _ = linear_scan_bwd_ref(g.double().mT, y_ref, dy.double(), dim=1)
    assert_close(gi.grad.mT, dg_ref, torch.float32, "d gates")
    assert_close(xi.grad.mT, dx_ref, torch.float32, "d tokens")


def test_scan_forward_out_and_reverse(triton_backend, nan_alloc):
    g = make_gates((3, 4, 70), torch.float32, triton_backend, allow_growth=True)
    x = torch.randn(3, 4, 70, device=triton_backend)
    out = torch.full_like(x, float("nan"))
    result = scan_forward(g, x, reverse=True, out=out)
    assert result is out
    assert_close(out, linear_scan_ref(g.double(), x.double(), reverse=True), torch.float32, "scan_forward out")
    assert_close(scan_forward(g, x), linear_scan_ref(g.double(), x.double()), torch.float32, "scan_forward")


def test_pscan_matches_reference_and_differentiates():
    g = make_gates((2, 4, 33), torch.float64, "cpu", allow_growth=True).requires_grad_()
    x = torch.randn(2, 4, 33, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(pscan, (g, x))
    torch.testing.assert_close(pscan(g, x), linear_scan_ref(g.detach(), x.detach()))


@pytest.mark.parametrize(
    "dim,reverse,offsets",
    [(-1, False, None), (1, True, None), (-1, False, [0, 4, 4, 13]), (1, True, [0, 0, 13])],
)
def test_gradcheck_float64(dim, reverse, offsets):
    shape = (2, 3, 13) if dim == -1 else (2, 13, 3)
    cu = None if offsets is None else torch.tensor(offsets, dtype=torch.int32)
    other = (2, 3)
    s_shape = other if offsets is None else (len(offsets) - 1, *other)
    g = make_gates(shape, torch.float64, "cpu", allow_growth=True).requires_grad_()
    x = torch.randn(shape, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(s_shape, dtype=torch.float64, requires_grad=True)

    def f(g, x, h0):
        return linear_scan(g, x, dim=dim, reverse=reverse, initial_state=h0, return_final_state=True, cu_seqlens=cu)

    assert torch.autograd.gradcheck(f, (g, x, h0))


@pytest.mark.parametrize("backend", ["reference", "triton"])
def test_double_backward(backend, monkeypatch):
    """Second derivatives (a gradient penalty on the gates', tokens' and initial state's gradients):
    under ``create_graph`` the backward runs the reference's torch ops on either path; against
    autograd through the float64 reference scan. (The kernels' backward returned gradients without
    a graph.)"""
    device = "cpu"
    if backend == "triton":  # compiled on a GPU, interpreted on CPU tensors
        monkeypatch.setenv("FLASHMARKOV_BACKEND", "triton")
        device = DEVICE
    gen = torch.Generator().manual_seed(0)
    base = [0.5 + 0.5 * torch.rand(2, 3, 50, generator=gen, dtype=torch.float64),
            torch.randn(2, 3, 50, generator=gen, dtype=torch.float64), torch.randn(2, 3, generator=gen, dtype=torch.float64)]
    w = torch.randn(2, 3, 50, generator=gen, dtype=torch.float64)

    def second_order(scan, dtype):
        g, x, h0 = (t.to(device=device, dtype=dtype).requires_grad_() for t in base)
        y = scan(g, x, initial_state=h0, reverse=True)
        firsts = torch.autograd.grad((y * w.to(y)).sum(), (g, x, h0), create_graph=True)
        penalty = sum((f.double() ** 2).sum() for f in firsts)
        return torch.autograd.grad(penalty, (g, x, h0))

    got, expected = second_order(linear_scan, torch.float32), second_order(linear_scan_ref, torch.float64)
    for name, a, e in zip(("gates", "tokens", "initial_state"), got, expected, strict=True):
        assert_close(a, e, torch.float32, f"d2/d{name}")


def test_torch_compile_fullgraph():
    def model(g, x, h0):
        y, final = linear_scan(g.sigmoid(), x, dim=1, initial_state=h0, return_final_state=True)
        return (y * y).sum() + final.sum()

    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    g = torch.randn(2, 21, 3, requires_grad=True)
    x = torch.randn(2, 21, 3, requires_grad=True)
    h0 = torch.randn(2, 3, requires_grad=True)
    out = compiled(g, x, h0)
    out.backward()
    grads = [t.grad.clone() for t in (g, x, h0)]
    for t in (g, x, h0):
        t.grad = None
    expected = model(g, x, h0)
    expected.backward()
    torch.testing.assert_close(out, expected)
    for got, t in zip(grads, (g, x, h0)):
        torch.testing.assert_close(got, t.grad)


@pytest.mark.parametrize("need_final,offsets", [(True, None), (False, None), (True, [0, 2, 2, 9])])
def test_opcheck(need_final, offsets):
    g = make_gates((2, 9, 3), torch.float32, "cpu", allow_growth=True).requires_grad_()
    x = torch.randn(2, 9, 3, requires_grad=True)
    cu = None if offsets is None else torch.tensor(offsets, dtype=torch.int32)
    h0 = torch.randn((2, 3) if cu is None else (3, 2, 3), requires_grad=True)
    torch.library.opcheck(linear_scan_op, (g, x, h0, cu, 1, False, need_final))


def test_package_exports():
    assert flashmarkov.linear_scan is linear_scan
    assert flashmarkov.pscan is pscan and flashmarkov.scan_forward is scan_forward


# ---- bad input: a clear error naming the argument, before any launch ----

G = torch.rand(2, 3, 8)
X = torch.randn(2, 3, 8)
CU = torch.tensor([0, 3, 8], dtype=torch.int32)

BAD = [
    (dict(gates=[1.0]), TypeError, "gates must be a torch.Tensor"),
    (dict(gates=G.long()), TypeError, "gates has dtype torch.int64"),
    (dict(tokens=X.to(torch.int32)), TypeError, "tokens has dtype torch.int32"),
    (dict(tokens=X.double()), TypeError, "tokens has dtype torch.float64 but gates has torch.float32"),
    (dict(tokens=X[..., :5]), ValueError, "tokens has shape"),
    (dict(gates=torch.tensor(1.0), tokens=torch.tensor(1.0)), ValueError, "gates must have at least 1"),
    (dict(dim=3), ValueError, "dim=3 is out of range"),
    (dict(dim=1.0), TypeError, "dim must be an int"),
    (dict(gates=G[..., :0], tokens=X[..., :0]), ValueError, "T = 0"),
    (dict(reverse=1), TypeError, "reverse must be a bool"),
    (dict(initial_state=torch.randn(2, 4)), ValueError, "initial_state has shape"),
    (dict(initial_state=torch.randn(2, 3).double()), TypeError, "initial_state has dtype"),
    (dict(initial_state=[0.0]), TypeError, "initial_state must be a torch.Tensor"),
    (dict(cu_seqlens=CU.long()), TypeError, "cu_seqlens has dtype torch.int64"),
    (dict(cu_seqlens=torch.tensor([0, 8], dtype=torch.int32).reshape(1, 2)), ValueError, "cu_seqlens must be 1-D"),
    (dict(cu_seqlens=torch.tensor([1, 8], dtype=torch.int32)), ValueError, "must start at 0 and end at 8"),
    (dict(cu_seqlens=torch.tensor([0, 7], dtype=torch.int32)), ValueError, "must start at 0 and end at 8"),
    (dict(cu_seqlens=torch.tensor([0, 5, 3, 8], dtype=torch.int32)), ValueError, "non-decreasing"),
    (dict(cu_seqlens=CU, initial_state=torch.randn(2, 3)), ValueError, r"expected \(2, 2, 3\)"),
    (dict(return_final_state="yes"), TypeError, "return_final_state must be a bool"),
]


@pytest.mark.parametrize("kwargs,error,match", BAD)
def test_bad_input(kwargs, error, match):
    args = dict(gates=G, tokens=X)
    args.update(kwargs)
    with pytest.raises(error, match=match):
        linear_scan(**args)


def test_bad_device():
    meta = torch.empty(2, 3, 8, device="meta")
    with pytest.raises(ValueError, match="tokens is on meta but gates is on cpu"):
        linear_scan(G, meta)


@pytest.mark.parametrize(
    "out,error,match",
    [
        (torch.empty(2, 3, 7), ValueError, "out has shape"),
        (torch.empty(2, 3, 8, dtype=torch.float64), TypeError, "out has dtype"),
        ("out", TypeError, "out must be a torch.Tensor"),
    ],
)
def test_scan_forward_bad_out(out, error, match):
    with pytest.raises(error, match=match):
        scan_forward(G, X, out=out)
