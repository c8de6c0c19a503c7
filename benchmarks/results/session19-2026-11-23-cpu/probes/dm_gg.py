import torch
from flashmarkov.diffmax import diffmax_attention
torch.manual_seed(0)
q = torch.randn(1, 1, 5, 4, dtype=torch.float64, requires_grad=True)
k = torch.randn(1, 1, 6, 4, dtype=torch.float64, requires_grad=True)
v = torch.randn(1, 1, 6, 4, dtype=torch.float64, requires_grad=True)
f = lambda q, k, v: diffmax_attention(q, k, v, 0.5)
print("gradcheck", torch.autograd.gradcheck(f, (q, k, v)))
try:
    print("gradgradcheck", torch.autograd.gradgradcheck(f, (q, k, v)))
except Exception as e:
    print("gradgradcheck failed:", type(e).__name__, str(e)[:300])
