import os, torch
os.environ["FLASHMARKOV_BACKEND"] = "triton"; os.environ["TRITON_INTERPRET"] = "1"
from torch.utils._python_dispatch import TorchDispatchMode
from flashmarkov import _launch
from flashmarkov.attention import flash_attention
_launch.LeanKernel.__call__ = lambda self, *a, **k: None
q = torch.randn(4, 8, 256, 64, dtype=torch.float16, requires_grad=True); k = torch.randn_like(q, requires_grad=True); v = torch.randn_like(q, requires_grad=True)
do = torch.randn_like(q)
class Count(TorchDispatchMode):
    def __init__(self): super().__init__(); self.ops = []
    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.append(str(func)); return func(*args, **(kwargs or {}))
o = flash_attention(q, k, v); torch.autograd.grad(o, (q, k, v), do)
with Count() as c:
    o = flash_attention(q, k, v); torch.autograd.grad(o, (q, k, v), do)
print(len(c.ops), c.ops)
