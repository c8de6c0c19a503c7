import torch
from flashmarkov.attention import flash_attention_varlen, flash_attention
from flashmarkov.scan import linear_scan
import inspect
torch.manual_seed(0)
d = torch.float64
q = torch.randn(9, 2, 4, dtype=d, requires_grad=True); k = torch.randn(11, 1, 4, dtype=d, requires_grad=True); v = torch.randn(11, 1, 4, dtype=d, requires_grad=True)
cq = torch.tensor([0, 4, 9], dtype=torch.int32); ck = torch.tensor([0, 5, 11], dtype=torch.int32)
f = lambda q, k, v: flash_attention_varlen(q, k, v, cq, ck, 5, 6, causal=True, softcap=2.0, window=(3, -1))
print("varlen gradgradcheck", torch.autograd.gradgradcheck(f, (q, k, v)))
f2 = lambda q, k, v: flash_attention(q, k, v, causal=True, return_lse=True)
q4 = torch.randn(1, 2, 5, 4, dtype=d, requires_grad=True); k4 = torch.randn(1, 1, 6, 4, dtype=d, requires_grad=True); v4 = torch.randn(1, 1, 6, 4, dtype=d, requires_grad=True)
print("lse gradgradcheck", torch.autograd.gradgradcheck(f2, (q4, k4, v4)))
print(inspect.signature(linear_scan))
g = torch.rand(2, 3, 7, dtype=d).requires_grad_(); x = torch.randn(2, 3, 7, dtype=d, requires_grad=True); h0 = torch.randn(2, 3, dtype=d, requires_grad=True)
fs = lambda g, x, h0: linear_scan(g, x, reverse=True, initial_state=h0, return_final_state=True)
print("scan gradgradcheck", torch.autograd.gradgradcheck(fs, (g, x, h0)))
gv = torch.rand(10, 3, dtype=d).requires_grad_(); xv = torch.randn(10, 3, dtype=d, requires_grad=True)
cs = torch.tensor([0, 4, 10], dtype=torch.int32)
try:
    fv = lambda g, x: linear_scan(g, x, dim=0, cu_seqlens=cs, return_final_state=True)
    print("scan varlen gradgradcheck", torch.autograd.gradgradcheck(fv, (gv, xv)))
except Exception as e:
    print("scan varlen:", type(e).__name__, str(e)[:200])
from flashmarkov.diffmax import diffmax_bisect
z = torch.randn(3, 8, dtype=d, requires_grad=True)
print("diffmax row dim=0 gradgradcheck", torch.autograd.gradgradcheck(lambda z: diffmax_bisect(z, 0.4, dim=0, n_iter=80), (z,)))
