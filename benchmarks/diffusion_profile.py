"""Where the time of one small M·V goes on the GPU (host vs kernels): torch.profiler over a few
calls of ``gaussian_matmat(X, X, V, beta, row_scale=r, col_scale=r)``, kernel times and the
CPU-side total per call. ``python benchmarks/diffusion_profile.py [N] [d]`` (CUDA only)."""

from __future__ import annotations

import sys
import time

import torch
from torch.profiler import ProfilerActivity, profile

from flashmarkov.diffusion import tiles


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 16384
    d = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    X = torch.randn(n, d, device="cuda")
    V = torch.randn(n, 16, device="cuda")
    r = torch.rand(n, device="cuda") + 0.5
    beta = 1.0 / (2 * d)

    def f() -> torch.Tensor:
        return tiles.gaussian_matmat(X, X, V, beta, row_scale=r, col_scale=r)

    for _ in range(5):
        f()
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(50):
        f()
    host = (time.perf_counter() - t) / 50
    torch.cuda.synchronize()
    wall = (time.perf_counter() - t) / 50
    print(f"N={n} d={d}: host {host * 1e6:.0f} us per call (launches only), wall {wall * 1e6:.0f} us per call (50 back to back)")
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(10):
            f()
        torch.cuda.synchronize()
    print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=14, max_name_column_width=60))


if __name__ == "__main__":
    main()
