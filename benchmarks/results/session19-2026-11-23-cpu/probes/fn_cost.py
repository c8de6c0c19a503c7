import time, torch
q = torch.randn(4, 8, 64, 64, requires_grad=True); k = torch.randn_like(q, requires_grad=True); v = torch.randn_like(q, requires_grad=True)
do = torch.randn_like(q)
def bench(fn, n=5000):
    for _ in range(300): fn()
    t = time.perf_counter()
    for _ in range(n): fn()
    return (time.perf_counter() - t) / n * 1e6
class E3(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v):
        return torch.empty_like(q)
    @staticmethod
    def backward(ctx, do):
        return torch.empty_like(do), torch.empty_like(do), torch.empty_like(do)
class E12(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, a, b, c, d, e, f, g, h, i):
        ctx.set_materialize_grads(False)
        o = torch.empty_like(q); lse = q.new_empty(q.shape[:3])
        ctx.save_for_backward(q, k, v, o, lse, a, b)
        ctx.params = (c, d, e, f, g, h, i)
        return o, lse
    @staticmethod
    def backward(ctx, do, dlse):
        q, k, v, o, lse, a, b = ctx.saved_tensors
        return (torch.empty_like(do), torch.empty_like(do), torch.empty_like(do)) + (None,) * 9
class E12b(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, a, b, c, d, e, f, g, h, i):
        ctx.set_materialize_grads(False)
        o = torch.empty_like(q); lse = q.new_empty(q.shape[:3])
        ctx.save_for_backward(q, k, v, o, lse)
        ctx.params = (a, b, c, d, e, f, g, h, i)
        return o, lse
    @staticmethod
    def backward(ctx, do, dlse):
        q, k, v, o, lse = ctx.saved_tensors
        return (torch.empty_like(do), torch.empty_like(do), torch.empty_like(do)) + (None,) * 9
class E3two(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, params):
        ctx.set_materialize_grads(False)
        o = torch.empty_like(q); lse = q.new_empty(q.shape[:3])
        ctx.save_for_backward(q, k, v, o, lse)
        ctx.params = params
        return o, lse
    @staticmethod
    def backward(ctx, do, dlse):
        q, k, v, o, lse = ctx.saved_tensors
        return torch.empty_like(do), torch.empty_like(do), torch.empty_like(do), None
P = (None, None, 64, 64, False, 0.125, -1, -1, 0.0)
print("E3", bench(lambda: torch.autograd.grad(E3.apply(q, k, v), (q, k, v), do)))
print("E12", bench(lambda: torch.autograd.grad(E12.apply(q, k, v, *P)[0], (q, k, v), do)))
print("E12b (Nones not saved)", bench(lambda: torch.autograd.grad(E12b.apply(q, k, v, *P)[0], (q, k, v), do)))
print("E3two (params tuple)", bench(lambda: torch.autograd.grad(E3two.apply(q, k, v, P)[0], (q, k, v), do)))
o = E3.apply(q, k, v)
print("apply only E3", bench(lambda: E3.apply(q, k, v)))
print("apply only E12", bench(lambda: E12.apply(q, k, v, *P)))
print("apply only E3two", bench(lambda: E3two.apply(q, k, v, P)))
print("grad only E3 (retain)", end=" ")
o = E3.apply(q, k, v)
print(bench(lambda: torch.autograd.grad(o, (q, k, v), do, retain_graph=True)))
from torch._C import _EngineBase
import torch.autograd.graph as g
print("engine direct", bench(lambda: torch.autograd.graph._engine_run_backward((o,), (do,), True, False, (q, k, v), True, False) if False else torch._C._EngineBase.run_backward(torch.autograd.Variable._execution_engine, (o,), (do,), True, False, (q, k, v), True, False)))
