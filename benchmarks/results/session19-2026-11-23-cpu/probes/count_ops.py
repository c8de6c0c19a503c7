import os, torch
os.environ["FLASHMARKOV_BACKEND"] = "triton"; os.environ["TRITON_INTERPRET"] = "1"
from torch.utils._python_dispatch import TorchDispatchMode
from flashmarkov.diffusion import tiles
launches = []
for name in ("_PACK_POINTS", "_PACK_VALUES", "_TILES", "_STATS", "_CENTRE"):
    setattr(tiles, name, lambda *a, n=name, **k: launches.append(n))
class Count(TorchDispatchMode):
    def __init__(self): super().__init__(); self.ops = []
    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.append(str(func)); return func(*args, **(kwargs or {}))
N, d, m = 16384, 16, 16
X = torch.randn(N, d); V = torch.randn(N, m); r = torch.rand(N) + 0.5
tiles.gaussian_matmat(X, X, V, 2.0, row_scale=r, col_scale=r)
with Count() as c:
    tiles.gaussian_matmat(X, X, V, 2.0, row_scale=r, col_scale=r)
print(len(c.ops), "aten ops +", len(launches) // 2, "launches"); print(c.ops)
P = tiles.PackedProduct(X, X, 2.0); P(V, row_scale=r, col_scale=r)
launches.clear()
with Count() as c:
    P(V, row_scale=r, col_scale=r)
print("packed:", len(c.ops), "aten ops +", len(launches), "launches"); print(c.ops)
