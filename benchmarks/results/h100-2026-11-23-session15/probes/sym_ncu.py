import torch
from flashmarkov.diffusion import tiles
n, d = 65536, 16
g = torch.Generator(device="cuda").manual_seed(0)
X = torch.randn(n, d, device="cuda", generator=g); X -= X.mean(0)
V = torch.randn(n, 16, device="cuda", generator=g)
r = torch.rand(n, device="cuda", generator=g) + 0.5
for _ in range(3):
    tiles.gaussian_matmat_sym(X, V, 1 / 32, scale=r)
    tiles.gaussian_matmat(X, X, V, 1 / 32, row_scale=r, col_scale=r)
torch.cuda.synchronize()
