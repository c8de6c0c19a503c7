import os, time, torch
os.environ["FLASHMARKOV_BACKEND"] = "triton"; os.environ["TRITON_INTERPRET"] = "1"
from flashmarkov.diffusion import tiles
class Stub:
    def __getitem__(self, grid): return lambda *a, **k: None
for name in ("_pack_points_kernel", "_pack_values_kernel", "_gaussian_tiles_kernel"):
    setattr(tiles, name, Stub())
N, d, m = 256, 16, 16
X = torch.randn(N, d); V = torch.randn(N, m); r = torch.rand(N) + 0.5
def bench(fn, n=2000):
    for _ in range(100): fn()
    t = time.perf_counter()
    for _ in range(n): fn()
    return (time.perf_counter() - t) / n * 1e6
print("gaussian_matmat us", bench(lambda: tiles.gaussian_matmat(X, X, V, 2.0, row_scale=r, col_scale=r)))
print("_launch_matmat us", bench(lambda: tiles._launch_matmat(X, X, V, 2.0, row_scale=r, col_scale=r, sigma_q=None, sigma_k=None)))
from flashmarkov.diffusion import reference
print("centre us", bench(lambda: reference.centre(X)))
import cProfile, pstats
pr = cProfile.Profile(); pr.enable()
for _ in range(2000): tiles.gaussian_matmat(X, X, V, 2.0, row_scale=r, col_scale=r)
pr.disable(); pstats.Stats(pr).sort_stats("tottime").print_stats(25)
P = tiles.PackedMatmat(X, 2.0)
print("PackedMatmat call us", bench(lambda: P(V, row_scale=r, col_scale=r)))
print("gaussian_matmat us (again)", bench(lambda: tiles.gaussian_matmat(X, X, V, 2.0, row_scale=r, col_scale=r)))
