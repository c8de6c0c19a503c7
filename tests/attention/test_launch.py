"""flashmarkov._launch.LeanKernel's bookkeeping on CPU, with a stand-in driver and compiled kernel (the real
launches are compared on the GPU in test_attention_gpu.py), and the eager paths' agreement."""

from __future__ import annotations

import pytest
import torch
from triton import knobs
from triton.runtime.jit import JITFunction

from flashmarkov import _launch
from flashmarkov.attention import flash_attention

from .helpers import rand


def _toy(p_x, p_y, n, scale, BLOCK: "tl.constexpr", FLAG: "tl.constexpr"):  # noqa: F821 - parsed, never run
    pass


class _Compiled:
    """What ``kernel[grid](...)`` returns: a bound launcher that records its launches."""

    function = 7
    packed_metadata = (4, 1, 0)

    def __init__(self) -> None:
        self.launches: list[tuple] = []

    def run(self, *args) -> None:
        self.launches.append(args)


class _Driver:
    def get_current_device(self) -> int:
        return 0

    def get_current_stream(self, device: int) -> int:
        return 1234


@pytest.fixture
def toy(monkeypatch):
    """A LeanKernel over a real JITFunction whose ``[grid](...)`` is recorded instead of compiled."""
    from triton.runtime.driver import driver

    fn = JITFunction(_toy)
    slow: list[tuple] = []
    compiled = _Compiled()

    def getitem(self, grid):
        def run(*args, **kwargs):
            slow.append((grid, args, kwargs))
            return compiled

        return run

    monkeypatch.setattr(JITFunction, "__getitem__", getitem)
    monkeypatch.setattr(driver, "_active", _Driver())
    return _launch.LeanKernel(fn), slow, compiled


def test_lean_kernel_binds_once_per_specialisation(toy):
    lean, slow, compiled = toy
    x = torch.zeros(64)
    y = torch.zeros(64)
    opts = lambda: dict(BLOCK=16, FLAG=True, num_warps=4, num_stages=2)  # noqa: E731

    lean((2, 1, 1), "s", (x, y), (5,), (0.5,), opts)
    assert slow == [((2, 1, 1), (x, y, 5, 0.5), opts())] and compiled.launches == []
    lean((3, 1, 1), "s", (x, y), (5,), (0.25,), opts)  # bound: the compiled launcher, pointers as ints
    assert len(slow) == 1
    assert compiled.launches == [(3, 1, 1, 1234, 7, (4, 1, 0), None, None, None, x.data_ptr(), y.data_ptr(), 5, 0.25, None, None)]
    lean((3, 1, 1), "s", (x, y[1:]), (5,), (0.25,), opts)  # y not 16-byte aligned: Triton specialises on it
    lean((3, 1, 1), "s", (x, y), (16,), (0.25,), opts)  # another integer value
    lean((3, 1, 1), "t", (x, y), (5,), (0.25,), opts)  # another static key (constexprs, dtypes, options)
    assert len(slow) == 4 and len(compiled.launches) == 1
    lean((3, 1, 1), "s", (x, None), (5,), (0.25,), opts)  # None pointers launch as None
    assert len(slow) == 5


def test_lean_kernel_yields_to_launch_hooks(toy, monkeypatch):
    """With a launch hook installed (profilers), every launch goes through kernel[grid](...)."""
    lean, slow, compiled = toy
    x = torch.zeros(64)
    opts = lambda: dict(BLOCK=16, FLAG=False, num_warps=4, num_stages=2)  # noqa: E731
    lean((1, 1, 1), "s", (x, x), (5,), (1.0,), opts)
    hook = knobs.runtime.launch_enter_hook
    if hasattr(hook, "add"):
        monkeypatch.setattr(hook, "calls", [lambda metadata: None])
    else:
        monkeypatch.setattr(knobs.runtime, "launch_enter_hook", lambda metadata: None)
    lean((1, 1, 1), "s", (x, x), (5,), (1.0,), opts)
    assert len(slow) == 2 and compiled.launches == []


def test_lean_kernel_interpreted_calls_through():
    """Under the interpreter (CPU CI) the kernels are not JITFunctions: no binding."""
    from flashmarkov.attention import forward

    assert forward._FWD.compiled == isinstance(forward._attn_fwd_kernel, JITFunction)


@pytest.mark.parametrize("causal", [False, True])
def test_no_grad_path_matches_autograd_path(causal, triton_backend):
    """Without a gradient to record the forward skips the autograd.Function: same bits."""
    q, k, v = (rand((1, 2, 33, 16), torch.float32, triton_backend) for _ in range(3))
    with torch.no_grad():
        o_plain, lse_plain = flash_attention(q, k, v, causal=causal, return_lse=True)
    o_fn, lse_fn = flash_attention(q.requires_grad_(), k, v, causal=causal, return_lse=True)
    assert o_fn.requires_grad and not o_plain.requires_grad
    assert torch.equal(o_plain, o_fn.detach()) and torch.equal(lse_plain, lse_fn.detach())
