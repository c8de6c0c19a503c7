"""One backward at 2x16x8192x128 (non-causal) for Nsight Compute: the Gluon dK/dV and dQ kernels."""
import math, torch
from flashmarkov.attention import gluon_backward as gb
from flashmarkov.attention.forward import make_problem
B, H, S, D = 2, 16, 8192, 128
q, k, v, do = (torch.randn(B, H, S, D, device="cuda", dtype=torch.bfloat16) for _ in range(4))
lse = torch.randn(B, H, S, device="cuda").abs() + 5
delta = torch.randn(B, H, S, device="cuda")
prob = make_problem(q, k, None, None, S, S, 1 / math.sqrt(D), False, -1, -1, 0.0)
dk, dv, dq = torch.empty_like(k), torch.empty_like(v), torch.empty_like(q)
for _ in range(2):
    gb.attention_dkdv(q, k, v, do, dk, dv, lse, delta, prob)
    gb.attention_dq(q, k, v, do, dq, lse, delta, prob)
torch.cuda.synchronize()
