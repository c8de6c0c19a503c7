"""cProfile of the plain M·V at N = 20 000 and 20 480 (d = 5, k = 16): where the host time of small products goes (a development tool; CUDA only)."""
import cProfile, pstats, io, torch, time
from flashmarkov.diffusion.tiles import gaussian_matmat
for n in (20000, 20480):
    X = torch.randn(n, 5, device="cuda"); V = torch.randn(n, 16, device="cuda"); r = 0.5 + torch.rand(n, device="cuda")
    f = lambda: gaussian_matmat(X, X, V, 0.1, row_scale=r, col_scale=r)
    for _ in range(3): f()
    torch.cuda.synchronize()
    pr = cProfile.Profile(); pr.enable()
    for _ in range(20): f()
    torch.cuda.synchronize()
    pr.disable()
    s = io.StringIO(); pstats.Stats(pr, stream=s).sort_stats("tottime").print_stats(8); print(f"==== N={n}"); print(s.getvalue()[-2500:])
