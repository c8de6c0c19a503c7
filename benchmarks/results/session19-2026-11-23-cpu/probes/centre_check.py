import os, torch, math
os.environ["FLASHMARKOV_BACKEND"] = "triton"; os.environ["TRITON_INTERPRET"] = "1"
from flashmarkov.diffusion import tiles, reference
g = torch.Generator().manual_seed(0)
for n, d, dtype, shift in [(1000, 3, torch.float32, 3.0), (70, 17, torch.float64, -2.0), (300, 70, torch.float32, 100.0), (5, 1, torch.float32, 0.0)]:
    K = (torch.randn(n, d, generator=g, dtype=torch.float64) + shift).to(dtype)
    ctr, top = tiles._centre(K)
    ref = reference.centre(K)
    t_ref = None
    if dtype == torch.float32:
        lo, hi = torch.aminmax(K, dim=0); t_ref = torch.maximum(hi - ref, ref - lo).amax()
    print(n, d, dtype, "ctr equal:", torch.equal(ctr, ref), "top:", None if top is None else (top.item(), t_ref.item()))
K = torch.randint(-5, 6, (64, 4)).float()
print("grid:", tiles._centre(K)[0], reference.centre(K))
K = torch.ones(10, 3)
print("constant:", tiles._centre(K), reference.centre(K))
