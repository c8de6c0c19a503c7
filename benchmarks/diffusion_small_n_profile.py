"""cProfile of 20 plain M·V products (d = 5, k = 16) at N = 20 000 and 20 480: where the host time
of small products goes (a development tool; CUDA only).

    python benchmarks/diffusion_small_n_profile.py [N ...]
"""

from __future__ import annotations

import cProfile
import io
import pstats
import sys

import torch

from flashmarkov.diffusion.tiles import gaussian_matmat


def main() -> None:
    for n in [int(a) for a in sys.argv[1:]] or [20000, 20480]:
        X = torch.randn(n, 5, device="cuda")
        V = torch.randn(n, 16, device="cuda")
        r = 0.5 + torch.rand(n, device="cuda")
        for _ in range(3):
            gaussian_matmat(X, X, V, 0.1, row_scale=r, col_scale=r)
        torch.cuda.synchronize()
        profile = cProfile.Profile()
        profile.enable()
        for _ in range(20):
            gaussian_matmat(X, X, V, 0.1, row_scale=r, col_scale=r)
        torch.cuda.synchronize()
        profile.disable()
        text = io.StringIO()
        pstats.Stats(profile, stream=text).sort_stats("tottime").print_stats(8)
        print(f"==== N={n}\n{text.getvalue()[-2500:]}")


if __name__ == "__main__":
    main()
