import os, time, torch
os.environ["FLASHMARKOV_BACKEND"] = "triton"; os.environ["TRITON_INTERPRET"] = "1"
from flashmarkov.attention import flash_attention
import flashmarkov.attention.op as opm
B,H,S,D = 32,8,128,64
q = torch.randn(B,H,S,D, dtype=torch.float16, requires_grad=True)
k = torch.randn(B,H,S,D, dtype=torch.float16, requires_grad=True); v = torch.randn_like(k, requires_grad=True)
do = torch.randn(B,H,S,D, dtype=torch.float16)
opm.attention_fwd = lambda q, k, v, *a: (torch.empty_like(q), q.new_empty(q.shape[:3], dtype=torch.float32))
opm.attention_bwd = lambda do, q, k, v, *a: (torch.empty_like(q), torch.empty_like(k), torch.empty_like(v))
def bench(fn, n=5000):
    for _ in range(300): fn()
    t = time.perf_counter()
    for _ in range(n): fn()
    return (time.perf_counter() - t) / n * 1e6
def fb():
    o = flash_attention(q, k, v)
    return torch.autograd.grad(o, (q, k, v), do)
print("fb", bench(fb))
o = flash_attention(q, k, v)
print("grad only", bench(lambda: torch.autograd.grad(o, (q, k, v), do, retain_graph=True)))
print("fwd only (grad mode)", bench(lambda: flash_attention(q, k, v)))
from flashmarkov.attention.op import AttentionFunction
args = (q, k, v, None, None, S, S, False, 0.125, -1, -1, 0.0)
print("apply only", bench(lambda: AttentionFunction.apply(*args)))
import cProfile, pstats
pr = cProfile.Profile(); pr.enable()
for _ in range(5000): fb()
pr.disable(); pstats.Stats(pr).sort_stats("tottime").print_stats(18)
