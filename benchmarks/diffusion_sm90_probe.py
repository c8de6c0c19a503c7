"""The folded M·V product (k = 16) through tiles_sm90's Gluon kernel against tiles.py's Triton kernel
on the same inputs: max relative difference, error against a float64 reference on the first rows,
and times, for Gluon configurations BLOCK_M,NUM_WARPS,STAGES,BLOCK_N (a development tool; Hopper only).

    python benchmarks/diffusion_sm90_probe.py [--cfg BM,W,S,BN ...] [N,d ...]
"""

from __future__ import annotations

import sys

import torch
import triton.testing

from flashmarkov.bench.diffusion import _flashmarkov, make_inputs, reference
from flashmarkov.bench.registry import Case
from flashmarkov.diffusion import tiles, tiles_sm90


def main() -> None:
    args = sys.argv[1:]
    cfgs = []
    while args[:1] == ["--cfg"]:
        cfgs.append(tuple(int(v) for v in args[1].split(",")))
        args = args[2:]
    default = (tiles_sm90.BLOCK_M, tiles_sm90.NUM_WARPS, tiles_sm90.STAGES, tiles_sm90.BLOCK_N)
    cfgs = cfgs or [default]
    shapes = [tuple(int(v) for v in a.split(",")) for a in args] or [(65536, 16), (65536, 3), (262144, 16), (20000, 5)]
    for n, d in shapes:
        case = Case("diffusion", "MV", "fwd", "float32", (n, d, 16), n, False)
        x = make_inputs(case, torch.device("cuda"), 0)
        (ref,) = reference(case, x)
        for sm90, cfg in [(False, default)] + [(True, c) for c in cfgs]:
            tiles.SM90 = sm90
            tiles_sm90.BLOCK_M, tiles_sm90.NUM_WARPS, tiles_sm90.STAGES, tiles_sm90.BLOCK_N = cfg
            try:
                out = _flashmarkov(x.X, x.V, x.r, x.beta)
                base = out if not sm90 else base
                err = ((out[: ref.shape[0]].double() - ref).norm() / ref.norm()).item()
                diff = ((out - base).abs().max() / base.abs().max()).item()
                ms = triton.testing.do_bench(lambda: _flashmarkov(x.X, x.V, x.r, x.beta), warmup=10, rep=50)
            except Exception as exc:  # a configuration that does not fit
                print(f"N={n} d={d} {'gluon ' + str(cfg) if sm90 else 'triton'}: failed {type(exc).__name__}: {str(exc)[:150]}")
                continue
            print(f"N={n} d={d} {'gluon ' + str(cfg) if sm90 else 'triton':24s} {ms:8.3f} ms {n * n / ms / 1e6:6.0f} G pairs/s"
                  f"  err {err:.2e}  vs triton {diff:.1e}", flush=True)
    tiles.SM90 = True
    tiles_sm90.BLOCK_M, tiles_sm90.NUM_WARPS, tiles_sm90.STAGES, tiles_sm90.BLOCK_N = default


if __name__ == "__main__":
    main()
