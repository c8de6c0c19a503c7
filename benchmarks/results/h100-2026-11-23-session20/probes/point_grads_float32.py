import torch
from flashmarkov.diffusion import FlashDiffusion, tiles
gen = torch.Generator().manual_seed(1)
Q, K = (torch.randn(n, 3, generator=gen, dtype=torch.float64) for n in (9, 11))
V = torch.randn(11, 2, generator=gen, dtype=torch.float64)
h = torch.rand(11, generator=gen, dtype=torch.float64) + 0.5
L = lambda *t: [x.clone().requires_grad_() for x in t]
print("FD h", torch.autograd.gradcheck(lambda q, k, v, hh: FlashDiffusion(q, k, v, beta=0.7, alpha=0.5, h=hh), L(Q, K, V, h)))
# float32 kernel gradients against float64
gen = torch.Generator().manual_seed(2)
Q, K = (torch.randn(n, 5, generator=gen, dtype=torch.float64) * 0.5 + 3.0 for n in (70, 90))
V = torch.randn(90, 3, generator=gen, dtype=torch.float64)
G = torch.randn(70, 3, generator=gen, dtype=torch.float64)
def grads(dtype, fn):
    ins = [x.to(dtype).requires_grad_() for x in (Q, K, V)]
    out = fn(*ins)
    return torch.autograd.grad(out, ins, G.to(dtype))
for name, fn in {"matmat": lambda q, k, v: tiles.gaussian_matmat(q, k, v, 0.9),
                 "softmax": lambda q, k, v: tiles.gaussian_softmax_apply(q, k, v, 0.9)[0],
                 "FD": lambda q, k, v: FlashDiffusion(q, k, v, beta=0.9, alpha=0.5)}.items():
    ref, got = grads(torch.float64, fn), grads(torch.float32, fn)
    print(name, ["%.1e" % ((g.double() - r).norm() / r.norm()) for g, r in zip(got, ref)])
