"""Where the public forward + backward of ``linear_scan`` spends GPU time, against the two kernel
launches alone (a development tool; CUDA only): the bench's fwdbwd case (autograd.grad of gates and
tokens) under torch.profiler, kernel by kernel, and do_bench of both (and of the public call with the backward on the calling thread, and of
accelerated-scan when installed)."""

from __future__ import annotations

import argparse

import torch
import triton.testing
from torch.profiler import ProfilerActivity, profile

from flashmarkov.scan import kernels, linear_scan

CASES = {  # (shape, dtype, scanned dim)
    "bdt": (((2, 256, 65536), torch.float32, 2), ((16, 2048, 2048), torch.bfloat16, 2), ((2, 256, 65536), torch.bfloat16, 2),
            ((8, 1536, 4096), torch.bfloat16, 2)),
    "btd": (((2, 65536, 256), torch.float32, 1), ((2, 65536, 256), torch.bfloat16, 1), ((1, 2**20, 64), torch.float32, 1)),
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--layouts", default="bdt", help="comma-separated: bdt, btd")
    ap.add_argument("--no-table", action="store_true", help="times only (no torch.profiler table)")
    args = ap.parse_args()
    try:
        from accelerated_scan.scalar import scan as peer_scan  # (B, D, T) only
    except ImportError:
        peer_scan = None
    for shape, dtype, dim in [c for layout in args.layouts.split(",") for c in CASES[layout]]:
        g = (0.9 + 0.1 * torch.rand(shape, device="cuda")).to(dtype).requires_grad_()
        x = torch.randn(shape, device="cuda", dtype=dtype).requires_grad_()
        dy = torch.randn(shape, device="cuda", dtype=dtype)

        def public() -> tuple[torch.Tensor, ...]:
            y = linear_scan(g, x, dim=dim)
            return (y, *torch.autograd.grad(y, (g, x), dy))

        gd, xd = g.detach(), x.detach()
        y, dx, dg = torch.empty_like(xd), torch.empty_like(xd), torch.empty_like(xd)
        view = kernels.view_of(xd, dim)

        def launches() -> None:
            kernels.scan_launch(gd, xd, y, view, reverse=False, initial_state=None, state_out=None, cu_seqlens=None)
            kernels.scan_launch(gd, dy, dx, view, reverse=False, initial_state=None, state_out=None, cu_seqlens=None, y=y, dgates=dg)

        t_pub = triton.testing.do_bench(public, warmup=10, rep=50, return_mode="median")
        t_raw = triton.testing.do_bench(launches, warmup=10, rep=50, return_mode="median")
        torch.autograd.set_multithreading_enabled(False)
        t_one = triton.testing.do_bench(public, warmup=10, rep=50, return_mode="median")
        torch.autograd.set_multithreading_enabled(True)
        peer = ""
        if peer_scan is not None and dim == 2:
            def accelerated() -> tuple[torch.Tensor, ...]:
                y = peer_scan(g, x)
                return (y, *torch.autograd.grad(y, (g, x), dy))

            peer = f", accelerated-scan fwd+bwd {triton.testing.do_bench(accelerated, warmup=10, rep=50, return_mode='median'):.4f} ms"
        print(f"{shape} {dtype}: public fwd+bwd {t_pub:.4f} ms ({t_one:.4f} with the backward on the calling thread), "
              f"the two launches {t_raw:.4f} ms{peer}", flush=True)
        if args.no_table:
            continue
        for _ in range(3):
            public()
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            for _ in range(5):
                public()
            torch.cuda.synchronize()
        print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=8, max_name_column_width=50), flush=True)


if __name__ == "__main__":
    main()
