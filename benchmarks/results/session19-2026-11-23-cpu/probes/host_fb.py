import os, time, torch, sys
os.environ["FLASHMARKOV_BACKEND"] = "triton"; os.environ["TRITON_INTERPRET"] = "1"
from flashmarkov import _launch
from flashmarkov.attention import flash_attention, op
_launch.LeanKernel.__call__ = lambda self, *a, **k: None
B,H,S,D = 32,8,128,64
q = torch.randn(B,H,S,D, dtype=torch.float16, requires_grad=True)
k = torch.randn(B,H,S,D, dtype=torch.float16, requires_grad=True); v = torch.randn_like(k, requires_grad=True)
do = torch.randn(B,H,S,D, dtype=torch.float16)
def bench(fn, n=2000):
    for _ in range(200): fn()
    t = time.perf_counter()
    for _ in range(n): fn()
    return (time.perf_counter() - t) / n * 1e6
def fb():
    o = flash_attention(q, k, v)
    return torch.autograd.grad(o, (q, k, v), do)
class Empty(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v):
        return torch.empty_like(q)
    @staticmethod
    def backward(ctx, do):
        return torch.empty_like(do), torch.empty_like(do), torch.empty_like(do)
def efb():
    o = Empty.apply(q, k, v)
    return torch.autograd.grad(o, (q, k, v), do)
with torch.no_grad():
    print("fwd no grad", bench(lambda: flash_attention(q, k, v)))
print("fwd+bwd", bench(fb))
print("empty Function fwd+bwd", bench(efb))
qd, kd, vd = q.detach(), k.detach(), v.detach()
o, lse = op.attention_fwd(qd, kd, vd, None, None, S, S, False, 0.125, -1, -1, 0.0)
print("op.attention_fwd", bench(lambda: op.attention_fwd(qd, kd, vd, None, None, S, S, False, 0.125, -1, -1, 0.0)))
print("op.attention_bwd", bench(lambda: op.attention_bwd(do, qd, kd, vd, o, lse, None, None, None, S, S, False, 0.125, -1, -1, 0.0)))
import cProfile, pstats
pr = cProfile.Profile(); pr.enable()
for _ in range(2000): fb()
pr.disable(); pstats.Stats(pr).sort_stats("tottime").print_stats(25)
print("---- with op functions trivial")
import flashmarkov.attention.op as opm
real_fwd, real_bwd = opm.attention_fwd, opm.attention_bwd
opm.attention_fwd = lambda q, k, v, *a: (torch.empty_like(q), q.new_empty(q.shape[:3], dtype=torch.float32))
opm.attention_bwd = lambda do, q, k, v, *a: (torch.empty_like(q), torch.empty_like(k), torch.empty_like(v))
print("fwd+bwd trivial ops", bench(fb))
opm.attention_fwd = real_fwd
print("fwd+bwd real fwd, trivial bwd", bench(fb))
opm.attention_bwd = real_bwd
print("fwd+bwd real", bench(fb))
