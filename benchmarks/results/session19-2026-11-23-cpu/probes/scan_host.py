import os, time, torch
os.environ["FLASHMARKOV_BACKEND"] = "triton"; os.environ["TRITON_INTERPRET"] = "1"
from torch.utils._python_dispatch import TorchDispatchMode
from flashmarkov import _launch
from flashmarkov.scan import linear_scan
_launch.LeanKernel.__call__ = lambda self, *a, **k: None
g = torch.rand(2, 64, 512, requires_grad=True); x = torch.randn(2, 64, 512, requires_grad=True); dy = torch.randn(2, 64, 512)
def fb():
    y = linear_scan(g, x)
    return torch.autograd.grad(y, (g, x), dy)
def bench(fn, n=3000):
    for _ in range(200): fn()
    t = time.perf_counter()
    for _ in range(n): fn()
    return (time.perf_counter() - t) / n * 1e6
print("scan fwd+bwd us", round(bench(fb), 1))
with torch.no_grad():
    print("scan fwd us", round(bench(lambda: linear_scan(g, x)), 1))
class Count(TorchDispatchMode):
    def __init__(self): super().__init__(); self.ops = []
    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.append(str(func)); return func(*args, **(kwargs or {}))
with Count() as c:
    fb()
print(len(c.ops), c.ops)
