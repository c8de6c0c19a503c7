import os, time, torch
os.environ["FLASHMARKOV_BACKEND"] = "triton"; os.environ["TRITON_INTERPRET"] = "1"
from flashmarkov.diffusion import tiles
for name in ("_PACK_POINTS", "_PACK_VALUES", "_TILES", "_STATS", "_CENTRE"):
    if hasattr(tiles, name): setattr(tiles, name, lambda *a, **k: None)
for name in ("_pack_points_kernel", "_pack_values_kernel", "_gaussian_tiles_kernel"):
    class Stub:
        def __getitem__(self, grid): return lambda *a, **k: None
    setattr(tiles, name, Stub())
N, d, m = 256, 16, 16
X = torch.randn(N, d); V = torch.randn(N, m); r = torch.rand(N) + 0.5
def bench(fn, n=3000):
    for _ in range(200): fn()
    t = time.perf_counter()
    for _ in range(n): fn()
    return (time.perf_counter() - t) / n * 1e6
print("gaussian_matmat us", round(bench(lambda: tiles.gaussian_matmat(X, X, V, 2.0, row_scale=r, col_scale=r)), 1))
P = tiles.PackedProduct(X, X, 2.0)
print("PackedProduct us", round(bench(lambda: P(V, row_scale=r, col_scale=r)), 1))
