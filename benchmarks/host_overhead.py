"""Host time of the public calls (a development tool; CUDA only): how long Python takes to issue
one call of each op when the GPU work is negligible (tiny inputs), and where that time goes
(cProfile, by own time). A call whose host time exceeds its GPU time is timed at its host time by
do_bench; in forward + backward the backward's launch waits for the forward's host work too.

    python benchmarks/host_overhead.py [--calls 300] [--top 14] [--only diffmax,empty] [--no-profile] [--single-thread]
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import time
from collections.abc import Callable

import torch


def _cases() -> dict[str, Callable[[], object]]:
    from flashmarkov.attention import flash_attention
    from flashmarkov.diffmax import diffmax_attention
    from flashmarkov.scan import linear_scan

    dev = "cuda"
    g = (0.9 + 0.1 * torch.rand(2, 8, 256, device=dev)).bfloat16().requires_grad_()
    x = torch.randn(2, 8, 256, device=dev).bfloat16().requires_grad_()
    dy = torch.randn_like(x)
    q, k, v, do = (torch.randn(1, 2, 128, 64, device=dev).bfloat16().requires_grad_() for _ in range(4))
    cases: dict[str, Callable[[], object]] = {}

    def scan_fwd_nograd() -> object:
        with torch.no_grad():
            return linear_scan(g, x)

    cases["scan fwd (no grad)"] = scan_fwd_nograd
    cases["scan fwd (grad)"] = lambda: linear_scan(g, x)
    cases["scan fwd+bwd"] = lambda: torch.autograd.grad(linear_scan(g, x), (g, x), dy)
    try:
        from accelerated_scan.scalar import scan as acc_scan

        cases["accelerated-scan fwd+bwd (peer)"] = lambda: torch.autograd.grad(acc_scan(g, x), (g, x), dy)
    except ImportError:
        pass
    cases["attention fwd (grad)"] = lambda: flash_attention(q, k, v)
    cases["attention fwd+bwd"] = lambda: torch.autograd.grad(flash_attention(q, k, v), (q, k, v), do)
    cases["diffmax_attention fwd (grad)"] = lambda: diffmax_attention(q, k, v, 0.5, causal=True)
    cases["diffmax_attention fwd+bwd"] = lambda: torch.autograd.grad(diffmax_attention(q, k, v, 0.5, causal=True), (q, k, v), do)
    # pieces of the diffmax call: the kernels' launches alone, and the autograd engine alone
    from flashmarkov.diffmax.attention import attention_bwd_launch, attention_fwd_launch

    _, tau, rn, states = attention_fwd_launch(q, k, v, 0.5, True, 0.125, (-1, -1), 50)
    cases["diffmax fwd launch (direct)"] = lambda: attention_fwd_launch(q, k, v, 0.5, True, 0.125, (-1, -1), 50)
    cases["diffmax bwd launch (direct)"] = lambda: attention_bwd_launch(q, k, v, do, tau, rn, states, 0.5, True, 0.125, (-1, -1))

    def nograd() -> object:
        with torch.no_grad():
            return diffmax_attention(q, k, v, 0.5, causal=True)

    cases["diffmax_attention fwd (no grad)"] = nograd

    class Empty(torch.autograd.Function):
        @staticmethod
        def forward(ctx, a, b, c):
            return a.new_empty(a.shape)

        @staticmethod
        def backward(ctx, g):
            return g, g, g

    # the backward alone through the engine (graph kept): engine + our backward, no forward
    o_kept = diffmax_attention(q, k, v, 0.5, causal=True)
    cases["diffmax_attention bwd only (engine)"] = lambda: torch.autograd.grad(o_kept, (q, k, v), do, retain_graph=True)
    e_kept = Empty.apply(q, k, v)
    cases["empty Function bwd only (engine)"] = lambda: torch.autograd.grad(e_kept, (q, k, v), do, retain_graph=True)
    qc, kc, vc = (t.detach().cpu().requires_grad_() for t in (q, k, v))
    cases["empty Function fwd+bwd (cuda)"] = lambda: torch.autograd.grad(Empty.apply(q, k, v), (q, k, v), do)
    cases["empty Function fwd+bwd (cpu)"] = lambda: torch.autograd.grad(Empty.apply(qc, kc, vc), (qc, kc, vc), qc)
    cases["torch.empty x10 (cuda)"] = lambda: [torch.empty(1, 2, 128, 64, device=dev) for _ in range(10)]
    cases["sdpa fwd+bwd (peer)"] = lambda: torch.autograd.grad(
        torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True), (q, k, v), do
    )
    return cases


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--top", type=int, default=14)
    parser.add_argument("--only", default="", help="comma-separated substrings: time only the matching calls")
    parser.add_argument("--no-profile", action="store_true", help="timings only (no cProfile listing)")
    parser.add_argument("--single-thread", action="store_true",
                        help="torch.autograd.set_multithreading_enabled(False): backward on the calling thread")
    args = parser.parse_args()
    if args.single_thread:
        torch.autograd.set_multithreading_enabled(False)
    rows = []
    keys = [s for s in args.only.split(",") if s]
    for name, fn in _cases().items():
        if keys and not any(key in name for key in keys):
            continue
        for _ in range(20):
            fn()
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(args.calls):
            fn()
        t_host = (time.perf_counter() - t0) / args.calls
        torch.cuda.synchronize()
        t_all = (time.perf_counter() - t0) / args.calls
        rows.append((name, t_host * 1e6))
        if args.no_profile:
            continue
        prof = cProfile.Profile()
        prof.enable()
        for _ in range(args.calls):
            fn()
        prof.disable()
        torch.cuda.synchronize()
        out = io.StringIO()
        pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(args.top)
        text = out.getvalue()
        print(f"==== {name}: host {t_host * 1e6:.1f} µs per call (with the GPU's tail {t_all * 1e6:.1f})")
        print("\n".join(line for line in text.splitlines()[6:] if line.strip()), flush=True)
    print(f"{'call':40s} host µs")
    for name, t in rows:
        print(f"{name:40s} {t:8.1f}")


if __name__ == "__main__":
    main()
