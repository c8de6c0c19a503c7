"""The folded M·V product (k = 16) through tiles_sm90's Gluon kernel against tiles.py's Triton kernel
on the same inputs: max relative difference, error against a float64 reference on the first rows,
and times (a development tool; Hopper only).

    python benchmarks/diffusion_sm90_probe.py [N,d ...]
"""

from __future__ import annotations

import sys

import torch
import triton.testing

from flashmarkov.bench.diffusion import _flashmarkov, make_inputs, reference
from flashmarkov.bench.registry import Case
from flashmarkov.diffusion import tiles


def main() -> None:
    shapes = [tuple(int(v) for v in a.split(",")) for a in sys.argv[1:]] or [(65536, 16), (65536, 3), (262144, 16), (20000, 5)]
    for n, d in shapes:
        case = Case("diffusion", "MV", "fwd", "float32", (n, d, 16), n, False)
        x = make_inputs(case, torch.device("cuda"), 0)
        (ref,) = reference(case, x)
        row = []
        outs = {}
        for sm90 in (False, True):
            tiles.SM90 = sm90
            out = _flashmarkov(x.X, x.V, x.r, x.beta)
            outs[sm90] = out
            err = ((out[: ref.shape[0]].double() - ref).norm() / ref.norm()).item()
            ms = triton.testing.do_bench(lambda: _flashmarkov(x.X, x.V, x.r, x.beta), warmup=10, rep=50)
            row.append(f"{'gluon' if sm90 else 'triton'} {ms:8.3f} ms {n * n / ms / 1e6:6.0f} G pairs/s err {err:.2e}")
        diff = ((outs[True] - outs[False]).abs().max() / outs[False].abs().max()).item()
        print(f"N={n} d={d}: " + " | ".join(row) + f" | max rel diff {diff:.2e}", flush=True)
    tiles.SM90 = True


if __name__ == "__main__":
    main()
