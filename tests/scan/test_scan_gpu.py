"""flashmarkov.scan on a CUDA GPU: the compiled kernels against the float64 reference at lengths
up to 10^6 (many programs chaining through the look-back at once), bfloat16 included."""

from __future__ import annotations

import itertools

import pytest
import torch

from flashmarkov.scan import linear_scan, linear_scan_ref, scan_forward
from flashmarkov.scan import gluon_walk, kernels
from flashmarkov.scan.op import linear_scan_op

from ..conftest import GPU_DTYPES, assert_close
from .helpers import check_scan, make_gates

pytestmark = pytest.mark.gpu

LAYOUTS = {"bdt": lambda B, D, T: ((B, D, T), -1), "btd": lambda B, D, T: ((B, T, D), 1)}


@pytest.mark.parametrize("dtype", GPU_DTYPES)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("T", [1, 7, 1000, 65537, 10**6])
def test_gpu_lengths(T, layout, dtype, nan_alloc):
    shape, dim = LAYOUTS[layout](2, 3 if T >= 65537 else 37, T)
    check_scan(shape, dim, dtype, "cuda", with_initial=True, with_final=True)


@pytest.fixture(params=[True, False], ids=["lookback", "sequential"])
def chain_mode(monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> None:
    """Chains of several tiles walked by the look-back, or by one program per chain, whatever
    the number of chains."""
    monkeypatch.setattr(kernels, "use_lookback", lambda n_chains, n_seg, tile_elems, device: request.param and n_seg > 1)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("offsets", [None, [0, 1, 40000, 40000, 65537], [0, 65537]])
@pytest.mark.parametrize("reverse,with_initial,with_final", list(itertools.product([False, True], repeat=3)))
def test_gpu_features(reverse, with_initial, with_final, offsets, layout, nan_alloc, chain_mode):
    shape, dim = LAYOUTS[layout](2, 5, 65537)
    check_scan(
        shape, dim, torch.float32, "cuda",
        reverse=reverse, with_initial=with_initial, with_final=with_final, offsets=offsets,
    )


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("shape,dim", [((4, 64, 300), 1), ((3, 700, 2049), -1), ((1, 64, 2**18), -1), ((2, 2**16, 32), 1), ((2, 256, 70001), -1), ((8, 4099, 1536), 1)])
def test_gpu_wide(shape, dim, dtype, nan_alloc):
    """Many channels and many tiles in flight: the look-back under real concurrency."""
    check_scan(shape, dim, dtype, "cuda", with_initial=True, with_final=True)


def test_gpu_repeatable():
    """The same inputs give bitwise the same output: no race in the look-back."""
    g = make_gates((1, 8, 2**20), torch.float32, "cuda", allow_growth=False)
    x = torch.randn(1, 8, 2**20, device="cuda")
    first = linear_scan(g, x)
    for _ in range(5):
        assert torch.equal(linear_scan(g, x), first)


def test_gpu_scan_forward_out():
    g = make_gates((2, 16, 5000), torch.bfloat16, "cuda", allow_growth=False)
    x = torch.randn(2, 16, 5000, device="cuda", dtype=torch.bfloat16)
    out = torch.full_like(x, float("nan"))
    scan_forward(g, x, reverse=True, out=out)
    ref = linear_scan_ref(g.double(), x.double(), reverse=True)
    assert_close(out, ref, torch.bfloat16, "scan_forward")


def test_gpu_compile_and_opcheck():
    def model(g, x):
        return linear_scan(g.sigmoid(), x, dim=1).square().sum()

    g = torch.randn(2, 333, 48, device="cuda", requires_grad=True)
    x = torch.randn(2, 333, 48, device="cuda", requires_grad=True)
    out = torch.compile(model, fullgraph=True)(g, x)
    out.backward()
    grads = (g.grad.clone(), x.grad.clone())
    g.grad = x.grad = None
    model(g, x).backward()
    torch.testing.assert_close(grads[0], g.grad, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(grads[1], x.grad, rtol=1e-4, atol=1e-4)
    h0 = torch.randn(2, 48, device="cuda", requires_grad=True)
    torch.library.opcheck(linear_scan_op, (g.detach().requires_grad_(), x.detach().requires_grad_(), h0, None, 1, False, True))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("shape", [(3, 2, 37), (2, 129, 64), (4, 1000, 100), (1, 4097, 2050), (3, 301, 5700)])
@pytest.mark.parametrize("with_initial,with_final", [(False, False), (True, True)])
def test_gpu_gluon_walk(shape, dtype, with_initial, with_final, nan_alloc, monkeypatch):
    """The Gluon forward walk (16-bit, contiguous channels, one program per chain): partial
    segments and channel blocks, initial and final states, both tiles (3×301×5700 has enough
    64-channel chains for the wide one on a 132-SM GPU); the test fails if the walk is not taken."""
    monkeypatch.setattr(kernels, "use_lookback", lambda n_chains, n_seg, tile_elems, device: False)
    calls = []
    launch = gluon_walk.walk_fwd_launch
    monkeypatch.setattr(gluon_walk, "walk_fwd_launch", lambda *a, **k: calls.append(1) or launch(*a, **k))
    check_scan(shape, 1, dtype, "cuda", with_initial=with_initial, with_final=with_final)
    assert calls, "the Gluon walk was not launched"
