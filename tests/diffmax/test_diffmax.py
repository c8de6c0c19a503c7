"""flashmarkov.diffmax row op on CPU: the Triton kernels through the interpreter (rows that fit
one block and rows that stream), the public API on the reference path (gradcheck in X and α,
torch.compile, opcheck, autocast), the learnable-α module, the monitored variant, bad input."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from flashmarkov.diffmax import (
    DiffmaxBisectModule,
    ExpMap,
    HillMap,
    TanhMap,
    diffmax_bisect,
    diffmax_bisect_bwd_ref,
    diffmax_bisect_monitored,
    diffmax_bisect_ref,
    rows,
)
from flashmarkov.diffmax.op import diffmax_bwd_op, diffmax_op

from ..conftest import DEVICE, INTERPRETED_DTYPES, TOLERANCE, assert_close, rel_err
from .helpers import independent_diffmax, scores


def _gen(seed: int = 0) -> torch.Generator:
    """A fresh CPU generator: tests draw their inputs from one, never from the global RNG, whose
    state depends on which tests ran before in the same process (pytest-xdist's order)."""
    return torch.Generator().manual_seed(seed)


def _check_row_op(shape, dim, dtype, device, alpha, n_iter=50, ensure_sum_one=True, seed=0):
    """diffmax_bisect forward and backward (X and, for tensor α, α) against float64 oracles:
    p against the independent bisection, gradients against the reference backward at that p.
    Scores and dp come from a CPU generator seeded ``seed``: the same inputs on every device."""
    gen = _gen(seed)
    z = scores(shape, dtype, device, gen=gen).movedim(-1, dim)
    a = alpha.clone().to(device).requires_grad_() if isinstance(alpha, torch.Tensor) else alpha
    zi = z.clone().requires_grad_()
    p = diffmax_bisect(zi, a, dim=dim, n_iter=n_iter, ensure_sum_one=ensure_sum_one)
    a64 = a.detach().double() if isinstance(a, torch.Tensor) else a
    expected = independent_diffmax(z, a64, dim)
    assert p.dtype == dtype and p.shape == z.shape
    assert_close(p, expected, dtype, "p")
    assert torch.equal(p[~torch.isfinite(z)], torch.zeros_like(p[~torch.isfinite(z)])), "masked entries must be 0"
    dp = torch.randn(p.shape, dtype=torch.float64, generator=gen).to(device=p.device, dtype=p.dtype)
    grads = torch.autograd.grad(p, (zi, a) if isinstance(a, torch.Tensor) else (zi,), dp)
    # the backward reads the p the forward wrote (rounded to the dtype), as it must: compare with
    # the float64 reference backward at that p
    p_used = expected if dtype == torch.float64 else p.double()
    dz_ref, da_ref = diffmax_bisect_bwd_ref(p_used, dp.double(), a64, dim)
    assert_close(grads[0], dz_ref, dtype, "dX")
    if isinstance(a, torch.Tensor):
        # dα sums O((1−α)²) terms scaled by 1/(1−α)²; both backwards form the terms without
        # cancellation at p / Σp (rows.py), so the error is a few ulps times the final sum's
        # condition number Σ|dp t| / |Σ dp t|, far inside this tolerance (1/(1−α) of slack)
        err = rel_err(grads[1], da_ref.sum_to_size(a.shape))
        allowed = TOLERANCE[dtype] / (1 - float(a64.max()))
        assert err <= allowed, f"d alpha: relative error {err:.3g} > {allowed:.2g} ({dtype}, seed {seed})"



ALPHAS = {
    "half": 0.5,  # the k = 2 multiplication path
    "general": 0.73,
    "per-row": torch.tensor([[[0.3]], [[0.9]], [[0.6]]], dtype=torch.float64),
}


@pytest.mark.parametrize("dtype", INTERPRETED_DTYPES)
@pytest.mark.parametrize("alpha", ALPHAS)
@pytest.mark.parametrize("n", [1, 5, 100])
def test_kernels_rows_in_one_block(n, alpha, dtype, triton_backend, nan_alloc):
    _check_row_op((3, 4, n), -1, dtype, triton_backend, ALPHAS[alpha])


@pytest.mark.parametrize("dtype", INTERPRETED_DTYPES)
@pytest.mark.parametrize("alpha", ALPHAS)
@pytest.mark.parametrize("n", [17, 70])
def test_kernels_streamed_rows(n, alpha, dtype, triton_backend, nan_alloc, small_rows):
    _check_row_op((3, 2, n), -1, dtype, triton_backend, ALPHAS[alpha])


@pytest.mark.parametrize("dim", [0, 1])
@pytest.mark.parametrize("stream", [False, True])
def test_kernels_any_dim(dim, stream, triton_backend, nan_alloc, monkeypatch):
    if stream:
        monkeypatch.setattr(rows, "pick_config", lambda n, itemsize: rows.RowConfig(16, 1))
    _check_row_op((3, 5, 23), dim, torch.float64, triton_backend, torch.tensor([[[0.35]]], dtype=torch.float64))


@pytest.mark.parametrize("backend", ["reference", "triton"])
@pytest.mark.parametrize("stream", [False, True])
def test_nan_and_inf_rows(backend, stream, monkeypatch):
    """A row holding a NaN or +inf score is NaN in the forward and the backward, as softmax propagates
    them; the other rows, an all-masked one included, are what they are alone. (The kernels ignored
    a NaN, giving a row that summed to 1.25; the reference returned zeros for a row with +inf.)"""
    device = "cpu"
    if backend == "triton":  # compiled on a GPU, interpreted on CPU tensors
        monkeypatch.setenv("FLASHMARKOV_BACKEND", "triton")
        device = DEVICE
    if stream:  # rows of 40 in blocks of 16
        monkeypatch.setattr(rows, "pick_config", lambda n, itemsize: rows.RowConfig(16, 1))
    x = torch.randn(5, 40, generator=_gen()).to(device)
    x[1, 7], x[2, 30], x[3], x[4, :20] = math.nan, math.inf, -math.inf, -math.inf
    xi = x.clone().requires_grad_()
    p = diffmax_bisect(xi, 0.5)
    bad = torch.tensor([False, True, True, False, False], device=device)
    assert p[bad].isnan().all() and not p[~bad].isnan().any()
    for i in (0, 3, 4):
        torch.testing.assert_close(p[i], diffmax_bisect(x[i : i + 1], 0.5)[0], rtol=0, atol=0)
    torch.testing.assert_close(p[[0, 4]].sum(-1), torch.ones(2, device=device))
    assert torch.equal(p[3], torch.zeros(40, device=device))
    (dx,) = torch.autograd.grad(p, xi, torch.randn(5, 40, generator=_gen(1)).to(device))
    assert dx[bad].isnan().all() and torch.isfinite(dx[~bad]).all()


def test_kernels_strided_views_take_no_copy(triton_backend, nan_alloc):
    """A transposed input is read through strides; outputs match the contiguous computation."""
    z = scores((4, 30), torch.float64, triton_backend, gen=_gen())
    zt = z.t().contiguous().t()  # same values, column-major
    assert rows.view_of(zt, 1) == ((4, 30, 1), rows.RowView(1, 4, 0))  # row stride 1, entry stride 4
    assert rows.view_of(z[:, ::2], 1) == ((4, 15, 1), rows.RowView(30, 2, 0))
    for x, dim in ((zt, 1), (zt.t(), 0), (z[:, ::2], 1)):
        torch.testing.assert_close(diffmax_bisect(x, 0.6, dim=dim), independent_diffmax(x, 0.6, dim), atol=1e-10, rtol=0)


def test_kernels_tau_and_float64_precision(triton_backend, nan_alloc):
    """Float64 rows converge to 1e-10 of an independent bisection (Newton steps, any α) and the
    kernel's τ matches the reference's."""
    z = 5 * torch.randn(6, 300, dtype=torch.float64, generator=_gen()).to(triton_backend)
    for alpha in (0.001, 0.2, 0.5, 0.95, 0.999):
        p, tau = diffmax_op(z, None, alpha, -1, 50, True)
        assert (p - independent_diffmax(z, alpha)).abs().max().item() <= 1e-10, alpha
        _, tau_ref = diffmax_bisect_ref(z, alpha, n_iter=60, return_tau=True)
        assert (tau - tau_ref).abs().max().item() <= 1e-12


def test_kernels_no_renormalisation(triton_backend, nan_alloc):
    z = scores((4, 40), torch.float64, triton_backend, gen=_gen())
    p = diffmax_bisect(z, 0.45, ensure_sum_one=False)
    assert (p - diffmax_bisect_ref(z, 0.45, n_iter=60, ensure_sum_one=False)).abs().max().item() < 1e-12


def test_kernels_ties_and_extremes(triton_backend, nan_alloc):
    """All-equal rows, one finite entry, huge and tiny scales: exact answers, never NaN."""
    z = torch.zeros(5, 12, dtype=torch.float32, device=triton_backend)
    z[1] = -math.inf
    z[1, 7] = 3.0
    z[2] = torch.linspace(-1e4, 1e4, 12)
    z[3] = 1e-6 * torch.arange(12)
    z[4] = -math.inf
    p = diffmax_bisect(z, 0.5).cpu()
    torch.testing.assert_close(p[0], torch.full((12,), 1 / 12), atol=1e-7, rtol=0)
    assert p[1, 7] == 1 and p[1].sum() == 1
    assert p[2, -1] == 1 and p[2, :-1].sum() == 0
    assert torch.equal(p[4], torch.zeros(12))
    assert_close(p, independent_diffmax(z, 0.5).cpu(), torch.float32, "extremes")


@settings(max_examples=15, deadline=None)
@given(
    n=st.integers(1, 40),
    rows_=st.integers(1, 3),
    alpha=st.sampled_from([0.05, 0.5, 2 / 3, 0.75, 0.9, 0.99]),
    scale=st.floats(0.01, 50.0),
    masked=st.floats(0.0, 0.8),
    block=st.sampled_from([16, 64]),
    seed=st.integers(0, 2**31 - 1),
)
def test_kernels_property(n, rows_, alpha, scale, masked, block, seed):
    """Random rows (masks, scales, the α with integer powers, blocks smaller than the row) give
    the independent float64 bisection's answer in float64 (rows drawn from ``seed``, which
    hypothesis reports with a failing example)."""
    gen = _gen(seed)
    z = scale * torch.randn(rows_, n, dtype=torch.float64, generator=gen).to(DEVICE)
    z = torch.where(torch.rand(rows_, n, generator=gen).to(DEVICE) < masked, torch.full_like(z, -math.inf), z)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FLASHMARKOV_BACKEND", "triton")
        patch.setattr(rows, "pick_config", lambda length, itemsize: rows.RowConfig(block, 1))
        p = diffmax_bisect(z, alpha)
    assert (p - independent_diffmax(z, alpha)).abs().max().item() <= 1e-10


# ---- the public API on the reference path ----


@pytest.mark.parametrize("dim", [-1, 1])
def test_gradcheck_x_and_alpha(dim):
    gen = _gen()
    z = torch.randn(2, 5, 7, dtype=torch.float64, generator=gen)
    z[0, 1, 2] = -math.inf
    zi = z.movedim(-1, dim).clone().requires_grad_()
    keep = [1 if i == dim % 3 else s for i, s in enumerate(zi.shape)]
    a = (0.2 + 0.6 * torch.rand(keep, dtype=torch.float64, generator=gen)).requires_grad_()

    def f(x, alpha):
        return diffmax_bisect(x, alpha, dim=dim, n_iter=80)

    assert torch.autograd.gradcheck(f, (zi, a), atol=1e-7)


@pytest.mark.parametrize("backend", ["reference", "triton"])
def test_double_backward(backend, monkeypatch):
    """Second derivatives in X and a per-row α (a gradient penalty): gradgradcheck in float64 (finite
    differences of the backward), then float32 on either path, where ``create_graph`` runs the
    reference backward, against those float64 second derivatives. (The kernels' backward returned
    gradients without a graph.)"""
    gen = _gen()
    x0 = 2 * torch.randn(4, 37, generator=gen, dtype=torch.float64)
    a0 = torch.tensor([[0.3], [0.5], [0.7], [0.9]], dtype=torch.float64)
    w = torch.randn(4, 37, generator=gen, dtype=torch.float64)

    def second_order(device, dtype):
        x, a = (t.to(device=device, dtype=dtype).requires_grad_() for t in (x0, a0))
        p = diffmax_bisect(x, a)
        gx, ga = torch.autograd.grad((p * w.to(p)).sum(), (x, a), create_graph=True)
        return torch.autograd.grad((gx.double() ** 2).sum() + (ga.double() ** 2).sum(), (x, a))

    if backend == "reference":
        args = (x0.clone().requires_grad_(), a0.clone().requires_grad_())
        assert torch.autograd.gradgradcheck(lambda x, a: diffmax_bisect(x, a, n_iter=80), args, atol=1e-6)
    expected = second_order("cpu", torch.float64)
    device = "cpu"
    if backend == "triton":  # compiled on a GPU, interpreted on CPU tensors
        monkeypatch.setenv("FLASHMARKOV_BACKEND", "triton")
        device = DEVICE
    for name, got, want in zip(("X", "alpha"), second_order(device, torch.float32), expected, strict=True):
        assert_close(got.cpu(), want, torch.float32, f"d2/d{name}")


def test_gradcheck_scalar_tensor_alpha():
    z = torch.randn(3, 6, dtype=torch.float64, generator=_gen(), requires_grad=True)
    a = torch.tensor(0.4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, al: diffmax_bisect(x, al, n_iter=80), (z, a), atol=1e-7)


def test_torch_compile_fullgraph():
    def model(x, a):
        return (diffmax_bisect(x.tanh() * 3, a, dim=1) ** 2).sum()

    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    x = torch.randn(3, 9, 4, generator=_gen(), requires_grad=True)
    a = torch.full((3, 1, 4), 0.6, requires_grad=True)
    out = compiled(x, a)
    out.backward()
    grads = [x.grad.clone(), a.grad.clone()]
    x.grad = a.grad = None
    expected = model(x, a)
    expected.backward()
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(grads[0], x.grad)
    torch.testing.assert_close(grads[1], a.grad)


@pytest.mark.parametrize("with_alpha", [False, True])
def test_opcheck(with_alpha):
    gen = _gen()
    x = torch.randn(3, 8, 5, generator=gen, requires_grad=True)
    a = torch.full((3, 1, 5), 0.7, requires_grad=True) if with_alpha else None
    torch.library.opcheck(diffmax_op, (x, a, 0.5, 1, 30, True))
    p = diffmax_op(x.detach(), a.detach() if with_alpha else None, 0.5, 1, 30, True)[0]
    torch.library.opcheck(diffmax_bwd_op, (p, torch.randn(p.shape, generator=gen), a.detach() if with_alpha else None, 0.5, 1, with_alpha))


def test_half_inputs_and_autocast():
    z = scores((4, 50), torch.float16, gen=_gen())
    p = diffmax_bisect(z, 0.6)
    assert p.dtype == torch.float16
    assert_close(p, independent_diffmax(z, 0.6), torch.float16, "fp16")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        pb = diffmax_bisect(z.float(), 0.6)
        ph = diffmax_bisect(z, 0.6)
    assert pb.dtype == torch.float32 and ph.dtype == torch.float16
    assert_close(pb, independent_diffmax(z, 0.6), torch.float32, "autocast fp32")


def test_empty_tensors():
    assert diffmax_bisect(torch.randn(0, 5)).shape == (0, 5)
    assert diffmax_bisect(torch.randn(3, 0)).shape == (3, 0)


@pytest.mark.parametrize("amap", [HillMap(c=0.3), TanhMap(c=2.0), ExpMap(c=1.0), HillMap(c=0.3, beta0=0.5)])
def test_maps_inverse_and_module_init(amap):
    m = DiffmaxBisectModule(alpha=0.8, alpha_map=amap)
    names = [n for n, _ in m.named_parameters()]
    assert names == ["log_beta"]
    expected = 0.5 / 0.8 if amap.beta0 is not None else None
    if expected is None:
        assert abs(float(m.alpha) - 0.8) < 1e-6
    else:
        assert abs(float(m.alpha) - 0.5 / (0.5 + 0.3)) < 1e-6
    for a in (1e-4, 0.3, 0.9999):
        assert 1e-3 - 1e-9 <= float(amap.alpha(torch.tensor(math.log(amap.beta_of(a)), dtype=torch.float64))) <= 1 - 1e-3 + 1e-9


def test_learnable_alpha_moves_under_adam():
    """A tiny attention-like model learns α: a target made at α = 0.3 pulls α down from 0.8."""
    layer = DiffmaxBisectModule(alpha=0.8, dim=-1, alpha_map=HillMap(c=0.3))
    opt = torch.optim.Adam(layer.parameters(), lr=0.05)
    x = 2 * torch.randn(16, 24, generator=_gen())
    target = diffmax_bisect_ref(x, 0.3)
    alphas = [float(layer.alpha)]
    for _ in range(30):
        opt.zero_grad()
        loss = ((layer(x) - target) ** 2).sum()
        loss.backward()
        opt.step()
        alphas.append(float(layer.alpha))
    assert alphas[-1] < 0.6 and alphas[-1] < alphas[0]


def test_module_fixed_alpha():
    m = DiffmaxBisectModule(alpha=0.7, dim=0)
    assert list(m.parameters()) == []
    z = torch.randn(6, 3, dtype=torch.float64, generator=_gen())
    torch.testing.assert_close(m(z), diffmax_bisect_ref(z, 0.7, dim=0))
    assert "alpha=0.7" in repr(m)


def test_monitored_sink_forward_and_backward():
    logs = []
    gen = _gen()
    z = scores((3, 20), torch.float64, gen=gen).requires_grad_()
    p = diffmax_bisect_monitored(z, 0.5, name_prefix="layer0", step=7, sink=logs.append)
    torch.testing.assert_close(p, diffmax_bisect_ref(z.detach(), 0.5))
    fwd = logs[0]
    assert fwd["step"] == 7
    assert 0 < fwd["layer0/forward/sparsity"] < 1
    assert fwd["layer0/forward/support_min"] >= 1
    assert fwd["layer0/alpha/mean"] == 0.5
    assert fwd["layer0/convergence/sum_error_max"] < 1e-12
    assert math.isfinite(fwd["layer0/convergence/tau_mean"])
    (p * torch.randn(p.shape, dtype=p.dtype, generator=gen)).sum().backward()
    keys = {k for record in logs[1:] for k in record}
    assert {"layer0/backward/grad_output_norm", "layer0/backward/grad_input_norm"} <= keys


def test_monitored_without_sink_or_swanlab_is_plain():
    z = torch.randn(2, 9, generator=_gen())
    torch.testing.assert_close(diffmax_bisect_monitored(z, 0.6), diffmax_bisect(z, 0.6))


# ---- bad input: a clear error naming the argument, before any launch ----

Z = torch.randn(3, 8, generator=torch.Generator().manual_seed(0))
BAD = [
    (dict(X=[1.0]), TypeError, "X must be a torch.Tensor"),
    (dict(X=Z.long()), TypeError, "X has dtype torch.int64"),
    (dict(X=torch.tensor(1.0)), ValueError, "X must have at least 1"),
    (dict(alpha=0.0), ValueError, "alpha=0.0 must lie in"),
    (dict(alpha=1.0), ValueError, "alpha=1.0 must lie in"),
    (dict(alpha=-0.5), ValueError, "must lie in"),
    (dict(alpha=True), TypeError, "alpha must be a float"),
    (dict(alpha="0.5"), TypeError, "alpha must be a float"),
    (dict(alpha=lambda: 1.5), ValueError, "must lie in"),
    (dict(alpha=torch.full((3, 1), 1.2)), ValueError, r"alpha must lie in \(0, 1\)"),
    (dict(alpha=torch.full((3, 8), 0.5)), ValueError, "alpha has shape"),
    (dict(alpha=torch.full((2, 1), 0.5)), ValueError, "alpha has shape"),
    (dict(alpha=torch.full((1, 3, 1), 0.5)), ValueError, "alpha has shape"),
    (dict(alpha=torch.full((3, 1), 1)), TypeError, "alpha has dtype torch.int64"),
    (dict(n_iter=0), ValueError, "n_iter=0 must be >= 1"),
    (dict(n_iter=2.0), TypeError, "n_iter must be an int"),
    (dict(dim=2), ValueError, "dim=2 is out of range"),
    (dict(ensure_sum_one=1), TypeError, "ensure_sum_one must be a bool"),
]


@pytest.mark.parametrize("kwargs,error,match", BAD)
def test_bad_input(kwargs, error, match):
    args = dict(X=Z)
    args.update(kwargs)
    with pytest.raises(error, match=match):
        diffmax_bisect(**args)


def test_bad_module_and_maps():
    with pytest.raises(ValueError, match="alpha=1.5"):
        DiffmaxBisectModule(alpha=1.5)
    with pytest.raises(ValueError, match="n_iter=0"):
        DiffmaxBisectModule(n_iter=0)
    with pytest.raises(TypeError, match="alpha_map must be"):
        DiffmaxBisectModule(alpha_map=lambda b: b)
    with pytest.raises(ValueError, match="c must be"):
        HillMap(c=0)
    with pytest.raises(ValueError, match="beta0 must be"):
        TanhMap(c=1.0, beta0=-1.0)
    with pytest.raises(TypeError, match="sink must be callable"):
        diffmax_bisect_monitored(Z, 0.5, sink="log")


def test_tolerances_are_meaningful():
    """The comparison helpers fail on a perturbed result (the tests above can fail)."""
    z = scores((3, 30), torch.float32, gen=_gen())
    p = diffmax_bisect(z, 0.5)
    wrong = p.clone()
    wrong[0, 0] += 1e-3
    assert rel_err(wrong, independent_diffmax(z, 0.5)) > TOLERANCE[torch.float32]
