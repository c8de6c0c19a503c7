"""Why a backward costs more on autograd's device thread: time the backward alone (graph kept) of
Functions whose backward does fixed host work, with and without autograd multithreading."""
import time

import torch

from flashmarkov.diffmax.attention import attention_bwd_launch, attention_fwd_launch
dev = "cuda"
q, k, v, do = (torch.randn(1, 2, 128, 64, device=dev).bfloat16().requires_grad_() for _ in range(4))
_, tau, rn, st = attention_fwd_launch(q, k, v, 0.5, True, 0.125, (-1, -1), 50)

def make(work):
    class F(torch.autograd.Function):
        @staticmethod
        def forward(ctx, a, b, c):
            return a.new_empty(a.shape)
        @staticmethod
        def backward(ctx, g):
            work()
            return g, g, g
    return F

def py():
    s = 0
    for i in range(2000):
        s += i
def empties():
    for _ in range(20):
        torch.empty(1, 2, 128, 64, device=dev)
def bwd():
    attention_bwd_launch(q, k, v, do, tau, rn, st, 0.5, True, 0.125, (-1, -1))
from flashmarkov.scan import kernels as scan_kernels

xs = torch.randn(2, 256, 4096, device=dev)
gs, ys = torch.rand_like(xs), torch.empty_like(xs)
view = scan_kernels.view_of(xs, 2)


def scan_launch():
    scan_kernels.scan_launch(gs, xs, ys, view, reverse=False, initial_state=None, state_out=None, cu_seqlens=None)


def repeat(fn, n=20):
    def run():
        for _ in range(n):
            fn()
    return run


works = {
    "nothing": lambda: None, "python 2000 adds": py, "20 torch.empty": empties, "diffmax bwd launch": bwd,
    "20 empty_like": repeat(lambda: torch.empty_like(xs)), "20 new_empty": repeat(lambda: xs.new_empty(4)),
    "20 current_device": repeat(torch.cuda.current_device), "20 current_stream": repeat(torch.cuda.current_stream),
    "20 scan launches": repeat(scan_launch), "20 x.stride()": repeat(xs.stride),
}
def timeit(fn, n=400):
    for _ in range(30): fn()
    torch.cuda.synchronize()
    best = 1e9
    for r in range(3):
        t0 = time.perf_counter()
        for _ in range(n): fn()
        torch.cuda.synchronize()
        best = min(best, (time.perf_counter() - t0) / n)
    return best * 1e6
for name, w in works.items():
    direct = timeit(w)
    out = make(w).apply(q, k, v)
    res = []
    for mt in (True, False):
        torch.autograd.set_multithreading_enabled(mt)
        res.append(timeit(lambda: torch.autograd.grad(out, (q, k, v), do, retain_graph=True)))
    torch.autograd.set_multithreading_enabled(True)
    print(f"{name:22s} direct {direct:7.1f} µs   bwd via engine: device thread {res[0]:7.1f}, calling thread {res[1]:7.1f}", flush=True)
