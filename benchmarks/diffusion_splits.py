"""Key-split sweep of the plain M·V product (k = 16): SPLIT_PROGRAMS_PER_SM in 2..12 at N = 65 536
and 262 144, d = 3 and 16 (a development tool; CUDA only)."""

from __future__ import annotations

import torch
import triton.testing

from flashmarkov.bench.diffusion import _flashmarkov, make_inputs
from flashmarkov.bench.registry import Case
from flashmarkov.diffusion import tiles


def main() -> None:
    for n in (65536, 262144):
        for d in (3, 16):
            x = make_inputs(Case("diffusion", "MV", "fwd", "float32", (n, d, 16), n, False), torch.device("cuda"), 0)
            for s in (2, 4, 6, 8, 12):
                tiles.SPLIT_PROGRAMS_PER_SM = s
                ms = triton.testing.do_bench(lambda: _flashmarkov(x.X, x.V, x.r, x.beta), warmup=10, rep=50)
                print(f"N={n} d={d} programs/SM={s}: {ms:.3f} ms {n * n / ms / 1e6:.0f} G pairs/s", flush=True)


if __name__ == "__main__":
    main()
