import os, torch, sys
os.environ["FLASHMARKOV_BACKEND"] = sys.argv[1]
if sys.argv[1] == "triton": os.environ["TRITON_INTERPRET"] = "1"
from flashmarkov.diffusion import tiles, FlashDiffusion
g = torch.Generator().manual_seed(0)
d = torch.float64
Q = torch.randn(9, 3, generator=g, dtype=d); K = torch.randn(11, 3, generator=g, dtype=d)
V = torch.randn(11, 2, generator=g, dtype=d, requires_grad=True)
rs = torch.rand(9, generator=g, dtype=d) + 0.5; cs = torch.rand(11, generator=g, dtype=d) + 0.5
sq = torch.rand(9, generator=g, dtype=d) + 0.5; sk = torch.rand(11, generator=g, dtype=d) + 0.5
print("matmat", torch.autograd.gradcheck(lambda V: tiles.gaussian_matmat(Q, K, V, 0.7, row_scale=rs, col_scale=cs, sigma_q=sq, sigma_k=sk), (V,)))
Vs = torch.randn(11, 2, generator=g, dtype=d, requires_grad=True)
print("matmat same", torch.autograd.gradcheck(lambda V: tiles.gaussian_matmat(K, K, V, 0.7, row_scale=cs, col_scale=cs), (Vs,)))
b = torch.randn(11, generator=g, dtype=d); b[3] = -torch.inf
print("softmax", torch.autograd.gradcheck(lambda V: tiles.gaussian_softmax_apply(Q, K, V, 0.7, log_bias=b)[0], (V,)))
print("FlashDiffusion", torch.autograd.gradcheck(lambda V: FlashDiffusion(Q, K, V, beta=0.7, alpha=0.5), (V,)))
print("FlashDiffusion same", torch.autograd.gradcheck(lambda V: FlashDiffusion(K, K, V, beta=0.7, alpha=1.0), (Vs,)))
Qg = Q.clone().requires_grad_()
try:
    tiles.gaussian_matmat(Qg, K, V, 0.7).sum().backward()
except NotImplementedError as e:
    print("raises:", e)
