"""Experiments that separate the costs of the scan kernels (a development tool).

Times one forward launch per variant; with --ncu, launches each once for Nsight Compute."""

from __future__ import annotations

import argparse

import torch
import triton

from flashmarkov.scan import kernels
from flashmarkov.scan.kernels import ScanConfig, View


def variants():
    B, D, T = 2, 256, 65536
    rows = B * D
    for dtype in (torch.float32, torch.bfloat16):
        yield f"lookback  2x256x65536 {dtype}", (rows * T, dtype), View(1, T, rows, 0, 1, T), ScanConfig(4096, 1, 4), False
        yield f"linear    2x256x65536 {dtype}", (rows * T, dtype), View(1, 4096, rows * 16, 0, 1, 4096), ScanConfig(4096, 1, 4), False
        yield f"segmajor  2x256x65536 {dtype}", (rows * T, dtype), View(16, 4096, rows, 4096, 1, T), ScanConfig(4096, 1, 4), False
    for bt in (2048, 4096):
        yield f"lookback  1x64x2^20 fp32 BT={bt}", (64 * 2**20, torch.float32), View(1, 2**20, 64, 0, 1, 2**20), ScanConfig(bt, 1, 4), False
    # (B, T, D) few chains: the look-back tile chained (scalar or windowed walk) against the same
    # tiles as independent sequences (no look-back: the tile's own ceiling)
    for dtype in (torch.float32, torch.bfloat16):
        for B, T, D in ((2, 65536, 256), (1, 2**20, 64)):
            n = B * T * D
            for window in (False, True):
                cfg = ScanConfig(128, 32, 4, lookback=True, slice_k=8, lookback_window=window)
                yield f"btd lookback w={int(window)} {B}x{T}x{D} {dtype}", (n, dtype), View(B, T, D, T * D, D, 1), cfg, False
            cfg = ScanConfig(128, 32, 4, lookback=False, slice_k=8)
            yield f"btd independent {B}x{T}x{D} {dtype}", (n, dtype), View(n // (128 * D), 128, D, 128 * D, D, 1), cfg, False
    yield "bwd 16x2048x2048 bf16", (2**26, torch.bfloat16), View(1, 2048, 2**15, 0, 1, 2048), ScanConfig(2048, 1, 4), True
    yield "bwd 16x2048x2048 fp32", (2**26, torch.float32), View(1, 2048, 2**15, 0, 1, 2048), ScanConfig(2048, 1, 4), True


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ncu", action="store_true", help="launch each variant once (for ncu)")
    args = ap.parse_args()
    bw = None
    if not args.ncu:
        src = torch.empty(2**28, device="cuda")
        dst = torch.empty_like(src)
        bw = 2 * src.numel() * 4 / (triton.testing.do_bench(lambda: dst.copy_(src), return_mode="median") * 1e-3)
    for name, (n, dtype), view, cfg, bwd in variants():
        g = (0.9 + 0.1 * torch.rand(n, device="cuda")).to(dtype)
        x = torch.randn(n, device="cuda").to(dtype)
        y = torch.empty_like(x)
        extra = dict(y=torch.randn_like(x), dgates=torch.empty_like(x)) if bwd else {}
        fn = lambda: kernels.scan_launch(g, x, y, view, reverse=False, initial_state=None, state_out=None, cu_seqlens=None, config=cfg, **extra)
        k = fn()
        if args.ncu:
            continue
        ms = triton.testing.do_bench(fn, warmup=10, rep=50, return_mode="median")
        streams = 5 if bwd else 3
        print(f"{name:42s} {ms:8.4f} ms  frac {streams * n * x.element_size() / bw / (ms * 1e-3):.3f}  regs {k.n_regs} spills {k.n_spills}", flush=True)


if __name__ == "__main__":
    main()
