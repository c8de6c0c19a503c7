import os, time, torch
os.environ["FLASHMARKOV_BACKEND"] = "triton"; os.environ["TRITON_INTERPRET"] = "1"
from torch.utils._python_dispatch import TorchDispatchMode
from flashmarkov import _launch
from flashmarkov.diffmax import diffmax_attention
_launch.LeanKernel.__call__ = lambda self, *a, **k: None
q = torch.randn(1, 4, 256, 64, requires_grad=True); k = torch.randn(1, 4, 256, 64, requires_grad=True); v = torch.randn(1, 4, 256, 64, requires_grad=True)
do = torch.randn(1, 4, 256, 64)
def fb():
    o = diffmax_attention(q, k, v, 0.5)
    return torch.autograd.grad(o, (q, k, v), do)
def bench(fn, n=2000):
    for _ in range(200): fn()
    t = time.perf_counter()
    for _ in range(n): fn()
    return (time.perf_counter() - t) / n * 1e6
print("diffmax fwd+bwd us", round(bench(fb), 1))
class Count(TorchDispatchMode):
    def __init__(self): super().__init__(); self.ops = []
    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.append(str(func)); return func(*args, **(kwargs or {}))
with Count() as c:
    fb()
print(len(c.ops), c.ops)
import cProfile, pstats
pr = cProfile.Profile(); pr.enable()
for _ in range(2000): fb()
pr.disable(); pstats.Stats(pr).sort_stats("tottime").print_stats(15)
