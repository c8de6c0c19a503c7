import torch
from flashmarkov.diffusion import FlashDiffusion
torch.manual_seed(0)
X = torch.randn(30, 3, dtype=torch.float64, requires_grad=True)
V = torch.randn(30, 2, dtype=torch.float64, requires_grad=True)
out = FlashDiffusion(X, X, V, beta=1.0, alpha=0.5)
print(type(out), out.requires_grad, out.grad_fn)
try:
    out.sum().backward()
    print("X.grad", None if X.grad is None else X.grad.norm(), "V.grad", None if V.grad is None else V.grad.norm())
except Exception as e:
    print("backward error:", type(e).__name__, e)
