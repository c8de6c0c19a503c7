"""One plain M·V product (k = 16) at N x d, after one warm-up call: a target for profilers
(``ncu -k regex:_gaussian_tiles_kernel --launch-skip 1 -c 1 python benchmarks/diffusion_mv_once.py N D``).
CUDA only."""

from __future__ import annotations

import sys

import torch

from flashmarkov.bench.diffusion import _flashmarkov, make_inputs
from flashmarkov.bench.registry import Case


def main() -> None:
    n, d = (int(a) for a in sys.argv[1:3])
    x = make_inputs(Case("diffusion", "MV", "fwd", "float32", (n, d, 16), n, False), torch.device("cuda"), 0)
    for _ in range(2):
        _flashmarkov(x.X, x.V, x.r, x.beta)
    torch.cuda.synchronize()


if __name__ == "__main__":
    main()
