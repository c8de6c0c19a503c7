"""flashmarkov._launch.LeanKernel as the scan (and the diffusion products) use it, on CPU: the scan kernel's parameter order,
the static key of ``scan_launch`` (it must determine every constexpr, launch option and pointer
dtype), and the kernel LeanKernel hands back. The compiled launches themselves only run on a GPU
(tests/scan/test_scan_gpu.py); LeanKernel's bookkeeping is tested in tests/attention/test_launch.py."""

from __future__ import annotations

import inspect

import pytest
import torch
from triton.runtime.jit import JITFunction

from flashmarkov import _launch
from flashmarkov.scan import kernels, linear_scan

from .attention.test_launch import _Compiled, _Driver  # the fake launcher and driver of the LeanKernel tests
from .conftest import DEVICE, GPU_DTYPES, HAS_CUDA
from .scan.helpers import check_scan


def _raw(fn):
    """The Python function under a JITFunction or an InterpretedFunction."""
    return getattr(fn, "fn", fn)


def test_every_lean_launcher_is_the_shared_one():
    """Attention, diffmax attention and scan launch through flashmarkov._launch.LeanKernel, so
    patching ``_launch._hooks_idle`` (as the GPU comparison of bound and plain launches does)
    governs every one of them."""
    from flashmarkov.attention import backward, forward
    from flashmarkov.diffmax import attention as diffmax_attention
    from flashmarkov.diffusion import tiles

    launchers = [forward._FWD, backward._PRE, backward._DKDV, backward._DQ, kernels._SCAN,
                 diffmax_attention._FWD, diffmax_attention._LISTS, diffmax_attention._DQ, diffmax_attention._DKDV,
                 tiles._PACK_POINTS, tiles._PACK_VALUES, tiles._TILES, tiles._STATS, tiles._CENTRE]
    assert all(type(k) is _launch.LeanKernel for k in launchers)


def _record_launches(monkeypatch, module, names: tuple[str, ...]) -> list[tuple]:
    """Wrap the LeanKernels ``module.<name>``: each launch is checked for LeanKernel's parameter order
    (pointers, ints, floats, then constexprs) and recorded as (name, static key, options, pointer
    dtypes) before it runs."""
    calls: list[tuple] = []
    for name in names:
        lean = getattr(module, name)
        flags = [p.is_constexpr for p in JITFunction(_raw(lean.fn)).params]
        n_args = flags.index(True)
        assert not any(flags[:n_args]) and all(flags[n_args:])

        def record(grid, static, ptrs, ints, floats, options, lean=lean, name=name, n_args=n_args):
            hash(static)
            assert len(ptrs) + len(ints) + len(floats) == n_args
            assert all(isinstance(i, int) and not isinstance(i, bool) for i in ints)
            calls.append((name, static, options(), tuple(None if p is None else p.dtype for p in ptrs)))
            return lean(grid, static, ptrs, ints, floats, options)

        monkeypatch.setattr(module, name, record)
    return calls


def _assert_one_setting_per_key(calls: list[tuple], names: tuple[str, ...], min_keys: int) -> None:
    """Each (launcher, static key) of ``calls`` came with one set of options and pointer dtypes; every
    launcher ran, under more than ``min_keys`` keys in all."""
    by_key: dict = {}
    for name, static, opts, dtypes in calls:
        assert by_key.setdefault((name, static), (opts, dtypes)) == (opts, dtypes), (name, static)
    assert {name for name, _ in by_key} == set(names)
    assert len(by_key) > min_keys


def test_diffusion_static_keys_determine_every_constexpr_option_and_dtype(triton_backend, monkeypatch):
    """The diffusion products' lean launches (centring, points and values packing, the tile kernel): parameters
    in LeanKernel's order (pointers, ints, then constexprs), and each static key maps to one set of
    kernel[grid] options and pointer dtypes over every job, dtype and option, so a bound compiled
    kernel is never reused for a launch Triton would have specialised apart."""
    from flashmarkov.diffusion import tiles

    names = ("_PACK_POINTS", "_PACK_VALUES", "_TILES", "_STATS", "_CENTRE")
    calls = _record_launches(monkeypatch, tiles, names)
    gen = torch.Generator().manual_seed(0)
    for dtype in (torch.float32, torch.float64):
        X = torch.randn(70, 3, generator=gen, dtype=torch.float64).to(device=triton_backend, dtype=dtype)
        Y = torch.randn(40, 3, generator=gen, dtype=torch.float64).to(device=triton_backend, dtype=dtype)
        V = torch.randn(70, 5, generator=gen, dtype=torch.float64).to(device=triton_backend, dtype=dtype)
        r = torch.rand(70, generator=gen, dtype=torch.float64).to(device=triton_backend, dtype=dtype) + 0.5
        tiles.gaussian_matmat(X, X, V, 0.5)
        tiles.gaussian_matmat(X, X, V, 0.5, row_scale=r, col_scale=r, sigma_q=r, sigma_k=r)
        tiles.gaussian_matmat(Y, X, V, 0.5, row_scale=r[:40])
        tiles.gaussian_rowsum(X, X, 0.5, col_scale=r)
        tiles.gaussian_matmat_sym(X, V, 0.5, scale=r)
        tiles.gaussian_softmax_apply(Y, X, V[:, :1], 0.5, log_bias=r.log())
        tiles.PackedProduct(X, X, 0.5)(V, row_scale=r, col_scale=r)
        tiles.PackedProduct(Y, X, 0.5, softmax=True, log_bias=r.log())(V)
    _assert_one_setting_per_key(calls, names, 20)


def test_diffmax_attention_static_keys_determine_every_constexpr_option_and_dtype(triton_backend, monkeypatch):
    """diffmax attention's lean launches (forward, tile lists, dq, dkdv) over dtypes, head dims, α (integer
    and general powers), causal and windowed bands: each static key maps to one set of kernel[grid]
    options and pointer dtypes (the backward builds its options only on a miss)."""
    from flashmarkov.diffmax import attention, diffmax_attention

    names = ("_FWD", "_LISTS", "_DQ", "_DKDV")
    calls = _record_launches(monkeypatch, attention, names)
    gen = torch.Generator().manual_seed(0)
    for dtype in (torch.float32, torch.float64):
        for D, alpha, causal, window in ((16, 0.5, False, (-1, -1)), (16, 0.5, True, (-1, -1)), (16, 0.3, True, (-1, -1)),
                                         (8, 0.5, False, (5, 2))):
            q = torch.randn(1, 2, 20, D, generator=gen, dtype=torch.float64).to(device=triton_backend, dtype=dtype)
            k, v = (torch.randn(1, 1, 24, D, generator=gen, dtype=torch.float64).to(device=triton_backend, dtype=dtype)
                    for _ in range(2))
            xs = [x.requires_grad_() for x in (q, k, v)]
            o = diffmax_attention(*xs, alpha, causal=causal, window=window)
            torch.autograd.grad(o, xs, torch.ones_like(o))
    _assert_one_setting_per_key(calls, names, 15)


def test_scan_kernel_parameters_are_pointers_ints_constexprs():
    params = list(inspect.signature(_raw(kernels._linear_scan_kernel)).parameters.values())
    names = [p.name for p in params]
    n_ptr, n_int = kernels.N_POINTERS, kernels.N_INTS
    assert all(n.startswith("p_") for n in names[:n_ptr])
    assert not any(n.startswith("p_") for n in names[n_ptr:])
    assert tuple(names[n_ptr + n_int :]) == kernels.CONSTEXPRS
    jit = JITFunction(_raw(kernels._linear_scan_kernel))
    assert [p.is_constexpr for p in jit.params] == [False] * (n_ptr + n_int) + [True] * len(kernels.CONSTEXPRS)
    assert len(jit.constexprs) == len(kernels.CONSTEXPRS)


def test_lean_kernel_returns_the_compiled_kernel(monkeypatch):
    """scan_launch returns what LeanKernel returns: the CompiledKernel, bound or not (the scan's
    tuning scripts read n_regs / n_spills from it)."""
    from triton.runtime.driver import driver

    compiled = _Compiled()
    seen: list[tuple] = []

    def getitem(self, grid):
        def run(*args, **kwargs):
            inspect.signature(self.fn).bind(*args, **{k: v for k, v in kwargs.items() if k != "num_warps"})
            seen.append((grid, args, kwargs))
            return compiled

        return run

    monkeypatch.setattr(JITFunction, "__getitem__", getitem)
    monkeypatch.setattr(driver, "_active", _Driver())
    monkeypatch.setattr(kernels, "_SCAN", _launch.LeanKernel(JITFunction(_raw(kernels._linear_scan_kernel))))
    g, x = torch.rand(2, 3, 40), torch.randn(2, 3, 40)
    view = kernels.view_of(g, 2)
    y = torch.empty_like(x)
    launch = lambda: kernels.scan_launch(g, x, y, view, reverse=False, initial_state=None, state_out=None, cu_seqlens=None)  # noqa: E731
    assert launch() is compiled and len(seen) == 1 and compiled.launches == []
    assert launch() is compiled and len(seen) == 1 and len(compiled.launches) == 1
    run = compiled.launches[0]
    n_args = kernels.N_POINTERS + kernels.N_INTS + len(kernels.CONSTEXPRS)
    assert len(run) == 9 + n_args and run[9 + 2] == y.data_ptr() and run[9 + 3] is None
    assert run[-len(kernels.CONSTEXPRS) :] == (None,) * len(kernels.CONSTEXPRS)


def _cases():
    """(gates, tokens, dim, kwargs) covering both layouts, both directions, states and varlen."""
    for dtype in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
        for shape, dim in (((2, 3, 300), -1), ((2, 300, 3), 1), ((1, 2, 9000), -1), ((1, 9000, 40), 1)):
            for reverse in (False, True):
                yield dtype, shape, dim, dict(reverse=reverse)
            state = list(shape)
            del state[dim]
            yield dtype, shape, dim, dict(initial_state=torch.randn(state, dtype=dtype), return_final_state=True)
            T = shape[dim]
            cu = torch.tensor([0, 5, 5, T], dtype=torch.int32)
            yield dtype, shape, dim, dict(cu_seqlens=cu, initial_state=torch.randn([3, *state], dtype=dtype),
                                          return_final_state=True, reverse=True)


def test_scan_static_key_determines_every_constexpr_option_and_dtype(triton_backend, monkeypatch):
    """Every launch's static key maps to one set of kernel[grid] options and pointer dtypes, so
    a bound compiled kernel is never reused for a launch Triton would have specialised apart."""
    calls: list[tuple] = []

    def record(grid, static, ptrs, ints, floats, options):
        hash(static)
        opts = options()
        assert set(opts) == {*kernels.CONSTEXPRS, "num_warps"}
        assert len(ptrs) == kernels.N_POINTERS and len(ints) == kernels.N_INTS and floats == ()
        assert all(isinstance(i, int) and not isinstance(i, bool) for i in ints)
        calls.append((static, opts, tuple(None if p is None else p.dtype for p in ptrs)))

    monkeypatch.setattr(kernels, "_SCAN", record)
    for lookback in (False, True):
        monkeypatch.setattr(kernels, "use_lookback", lambda n_chains, n_seg, tile_elems, device, lb=lookback: lb and n_seg > 1)
        for dtype, shape, dim, kwargs in _cases():
            g = torch.rand(shape, dtype=dtype, device=triton_backend, requires_grad=True)
            x = torch.randn(shape, dtype=dtype, device=triton_backend, requires_grad=True)
            kwargs = {k: v.to(triton_backend) if isinstance(v, torch.Tensor) else v for k, v in kwargs.items()}
            out = linear_scan(g, x, dim=dim, **kwargs)
            y = out[0] if isinstance(out, tuple) else out
            torch.autograd.grad(y, (g, x), torch.randn_like(y))
    by_key: dict = {}
    for static, opts, dtypes in calls:
        assert by_key.setdefault(static, (opts, dtypes)) == (opts, dtypes), static
    assert len(by_key) > 40
    assert {opts["LOOKBACK"] for opts, _ in by_key.values()} == {False, True}
    assert {opts["VARLEN"] for opts, _ in by_key.values()} == {False, True}
    assert {opts["V"] > 1 for opts, _ in by_key.values()} == {False, True}


@pytest.mark.parametrize("value", ["reference", "triton"])
def test_backend_follows_the_environment(monkeypatch, value):
    """The cached backend choice still follows FLASHMARKOV_BACKEND set at run time."""
    from flashmarkov import _runtime

    device = torch.device(DEVICE)
    monkeypatch.setenv("FLASHMARKOV_BACKEND", value)
    assert _runtime.backend_for(device) == value
    monkeypatch.setenv("FLASHMARKOV_BACKEND", "bogus")
    with pytest.raises(ValueError):
        _runtime.backend_for(device)
    monkeypatch.delenv("FLASHMARKOV_BACKEND")
    assert _runtime.backend_for(device) == ("triton" if device.type == "cuda" else "reference")


@pytest.mark.parametrize("dim", [-1, 1])
def test_scan_no_grad_path_matches_autograd_path(triton_backend, dim):
    """Without a gradient to record, linear_scan skips the autograd.Function: same bits."""
    g = torch.rand(2, 33, 5, dtype=torch.float32, device=triton_backend)
    x = torch.randn(2, 33, 5, dtype=torch.float32, device=triton_backend)
    h0 = torch.randn(2, 5 if dim == 1 else 33, dtype=torch.float32, device=triton_backend)
    with torch.no_grad():
        y_plain, h_plain = linear_scan(g, x, dim=dim, initial_state=h0, return_final_state=True)
    y_fn, h_fn = linear_scan(g.requires_grad_(), x, dim=dim, initial_state=h0, return_final_state=True)
    assert y_fn.requires_grad and h_fn.requires_grad and not y_plain.requires_grad
    assert torch.equal(y_plain, y_fn.detach()) and torch.equal(h_plain, h_fn.detach())
    y_one = linear_scan(g, x, dim=dim)
    assert isinstance(y_one, torch.Tensor) and y_one.requires_grad


# Shapes whose chains span several tiles in both layouts (look-back or one program per chain);
# smaller under the interpreter.
BOUND_SHAPES = [((2, 3, 5000), -1), ((2, 700, 40), 1)] if HAS_CUDA else [((2, 3, 300), -1), ((2, 150, 8), 1)]
BOUND_FEATURES = {  # reverse, with_initial, with_final, offsets
    "plain": (False, False, False, None),
    "states": (False, True, True, None),
    "varlen-reverse": (True, True, True, [0, 1, 97, 97]),
}


@pytest.mark.parametrize("features", BOUND_FEATURES)
@pytest.mark.parametrize("lookback", [False, True], ids=["chain", "lookback"])
@pytest.mark.parametrize("dtype", GPU_DTYPES if HAS_CUDA else [torch.float32])
@pytest.mark.parametrize("shape,dim", BOUND_SHAPES, ids=["bdt", "btd"])
def test_scan_bound_launches_match_reference(shape, dim, dtype, lookback, features, triton_backend, monkeypatch, nan_alloc):
    """The public scan, forward and backward, twice on fresh inputs: on a GPU the first call binds
    each compiled kernel in LeanKernel and the second launches it through the bound launcher
    (other pointers, same key). Both agree with the float64 reference."""
    reverse, with_initial, with_final, offsets = BOUND_FEATURES[features]
    if offsets is not None:
        offsets = [*offsets, shape[dim]]
    monkeypatch.setattr(kernels, "use_lookback", lambda n_chains, n_seg, tile_elems, device: lookback and n_seg > 1)
    kernels._SCAN.bound.clear()
    for _ in range(2 if kernels._SCAN.compiled else 1):  # nothing is bound under the interpreter
        check_scan(shape, dim, dtype, triton_backend, reverse=reverse, with_initial=with_initial,
                   with_final=with_final, offsets=offsets)
    assert bool(kernels._SCAN.bound) == kernels._SCAN.compiled
