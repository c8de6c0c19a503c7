"""CUDA graphs: every public GPU op, forward and backward, captured by ``torch.cuda.graph`` and replayed
on new inputs gives what the eager call gives (bitwise: the same kernels run), and an attention training
step compiles with ``torch.compile(mode="reduce-overhead")``. This is the way around the host time of
short problems (notes/attention.md, session 17): nothing in the ops may synchronise with the host,
allocate outside the graph's pool or read a device value while capturing."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from flashmarkov.attention import flash_attention
from flashmarkov.diffmax import diffmax_attention, diffmax_bisect
from flashmarkov.diffusion.tiles import gaussian_matmat
from flashmarkov.scan import linear_scan

pytestmark = pytest.mark.gpu

Tensor = torch.Tensor
Step = Callable[..., tuple[Tensor, ...]]


def _fwd_bwd(op: Callable[..., Tensor], n_grad: int) -> Step:
    """(output, gradients of the first ``n_grad`` inputs for an output gradient of ones)."""

    def step(*xs: Tensor) -> tuple[Tensor, ...]:
        o = op(*xs)
        if not n_grad:
            return (o,)
        return (o, *torch.autograd.grad(o, xs[:n_grad], torch.ones_like(o)))

    return step


def _replay_matches_eager(step: Step, make: Callable[[int], list[Tensor]]) -> None:
    """Capture ``step`` on static inputs (after warm-up on a side stream, as PyTorch's docs prescribe),
    replay it on the values of a fresh draw and compare with the eager step on that draw."""
    static = make(0)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(2):
            step(*static)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        captured = step(*static)
    fresh = make(1)
    with torch.no_grad():
        for dst, src in zip(static, fresh, strict=True):
            dst.copy_(src)
    graph.replay()
    expected = step(*fresh)
    for i, (got, want) in enumerate(zip(captured, expected, strict=True)):
        assert torch.equal(got, want), f"output {i}: the replay differs from the eager call"


def _randn(seed: int, *shape: int, dtype: torch.dtype = torch.bfloat16, grad: bool = True) -> Tensor:
    gen = torch.Generator(device="cuda").manual_seed(seed)
    return torch.randn(*shape, device="cuda", dtype=dtype, generator=gen).requires_grad_(grad)


@pytest.mark.parametrize(
    "shape,dtype,causal",
    [((2, 4, 300, 64), torch.bfloat16, True), ((1, 2, 100, 32), torch.float32, False),
     ((2, 16, 4096, 128), torch.bfloat16, True)],  # the last runs the Hopper Gluon kernels (forward and backward)
    ids=["triton-bf16-causal", "triton-fp32", "large-causal"],
)
def test_attention(shape, dtype, causal):
    step = _fwd_bwd(lambda q, k, v: flash_attention(q, k, v, causal=causal), 3)
    _replay_matches_eager(step, lambda s: [_randn(3 * s + i, *shape, dtype=dtype) for i in range(3)])


def test_diffmax_attention():
    step = _fwd_bwd(lambda q, k, v: diffmax_attention(q, k, v, 0.5, causal=True), 3)
    _replay_matches_eager(step, lambda s: [_randn(3 * s + i, 1, 4, 512, 64) for i in range(3)])


def test_diffmax_bisect():
    step = _fwd_bwd(lambda x: diffmax_bisect(x, 0.5), 1)
    _replay_matches_eager(step, lambda s: [_randn(s, 8, 1000, dtype=torch.float32)])


def test_linear_scan():
    def make(s: int) -> list[Tensor]:
        g = 0.9 + 0.1 * torch.rand(2, 64, 3000, device="cuda", generator=torch.Generator(device="cuda").manual_seed(s))
        return [g.requires_grad_(), _randn(100 + s, 2, 64, 3000, dtype=torch.float32)]

    _replay_matches_eager(_fwd_bwd(linear_scan, 2), make)


def test_gaussian_matmat():
    step = _fwd_bwd(lambda x, w: gaussian_matmat(x, x, w, 0.5), 0)
    _replay_matches_eager(step, lambda s: [_randn(s, 3000, 3, dtype=torch.float32, grad=False),
                                           _randn(10 + s, 3000, 8, dtype=torch.float32, grad=False)])


def test_compile_reduce_overhead_attention():
    """A training step through torch.compile's CUDA graphs, on several draws: loss and gradients as eager."""

    def loss(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        return (flash_attention(q, k, v, causal=True).float() ** 2).sum()

    compiled = torch.compile(loss, mode="reduce-overhead", fullgraph=True)
    for s in range(4):
        q, k, v = (_randn(3 * s + i, 2, 4, 300, 64) for i in range(3))
        got = compiled(q, k, v)
        got_grads = torch.autograd.grad(got, (q, k, v))
        q2, k2, v2 = (x.detach().clone().requires_grad_() for x in (q, k, v))
        want = loss(q2, k2, v2)
        want_grads = torch.autograd.grad(want, (q2, k2, v2))
        torch.testing.assert_close(got, want, rtol=1e-6, atol=0)
        for g, w in zip(got_grads, want_grads, strict=True):
            assert torch.equal(g, w)
