import math, os, sys, torch
from flashmarkov.diffusion import tiles
gen = torch.Generator().manual_seed(0)
Q, K = (torch.randn(n, 3, generator=gen, dtype=torch.float64) for n in (9, 11))
rs, sq = (torch.rand(9, generator=gen, dtype=torch.float64) + 0.5 for _ in range(2))
cs, sk = (torch.rand(11, generator=gen, dtype=torch.float64) + 0.5 for _ in range(2))
V = torch.randn(11, 2, generator=gen, dtype=torch.float64)
bias = torch.randn(11, generator=gen, dtype=torch.float64); bias[3] = -math.inf
L = lambda *t: [x.clone().requires_grad_() for x in t]
gc = torch.autograd.gradcheck
print("matmat", gc(lambda q, k, v, r, c: tiles.gaussian_matmat(q, k, v, 0.7, row_scale=r, col_scale=c), L(Q, K, V, rs, cs)))
print("matmat sigma", gc(lambda q, k, v, r, c: tiles.gaussian_matmat(q, k, v, 0.7, row_scale=r, col_scale=c, sigma_q=sq, sigma_k=sk), L(Q, K, V, rs, cs)))
print("matmat same", gc(lambda k, v, c: tiles.gaussian_matmat(k, k, v, 0.7, row_scale=c, col_scale=c), L(K, V, cs)))
print("rowsum", gc(lambda q, k, c: tiles.gaussian_rowsum(q, k, 0.7, col_scale=c, sigma_q=sq, sigma_k=sk), L(Q, K, cs)))
print("rowsum same", gc(lambda k: tiles.gaussian_rowsum(k, k, 0.7), L(K)))
b2 = bias.clone(); b2[3] = 0.3
print("softmax", gc(lambda q, k, v, b: tiles.gaussian_softmax_apply(q, k, v, 0.7, log_bias=b), L(Q, K, V, b2)))
print("softmax masked", gc(lambda q, k, v: tiles.gaussian_softmax_apply(q, k, v, 0.7, log_bias=bias), L(Q, K, V)))
print("softmax same", gc(lambda k, v: tiles.gaussian_softmax_apply(k, k, v, 0.7), L(K, V)))
from flashmarkov.diffusion import FlashDiffusion
print("FlashDiffusion", gc(lambda q, k, v: FlashDiffusion(q, k, v, beta=0.7, alpha=0.5), L(Q, K, V)))
print("FlashDiffusion same", gc(lambda k, v: FlashDiffusion(k, k, v, beta=0.7, alpha=1.0), L(K, V)))
