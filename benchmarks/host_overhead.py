"""Host time of the public calls (a development tool; CUDA only): how long Python takes to issue
one call of each op when the GPU work is negligible (tiny inputs), and where that time goes
(cProfile, by own time). A call whose host time exceeds its GPU time is timed at its host time by
do_bench; in forward + backward the backward's launch waits for the forward's host work too.
``--threads``: instead, the backward alone (graph kept) of Functions whose backward does fixed host
work, on autograd's device thread and on the calling thread (multithreading off), against the
work done directly.

    python benchmarks/host_overhead.py [--calls 300] [--top 14] [--only diffmax,empty] [--no-profile] [--single-thread]
    python benchmarks/host_overhead.py --threads
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import time
from collections.abc import Callable

import torch


def _function(work: Callable[[], object]) -> type[torch.autograd.Function]:
    """An autograd.Function of three tensors whose forward allocates its output and whose backward
    runs ``work()`` and passes the gradient through."""

    class Work(torch.autograd.Function):
        @staticmethod
        def forward(ctx, a, b, c):
            return a.new_empty(a.shape)

        @staticmethod
        def backward(ctx, g):
            work()
            return g, g, g

    return Work


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

    Empty = _function(lambda: None)
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


def _threads(calls: int) -> None:
    """``--threads``: µs per backward of fixed work, direct / device thread / calling thread."""
    from flashmarkov.diffmax.attention import attention_bwd_launch, attention_fwd_launch
    from flashmarkov.scan import kernels as scan_kernels

    dev = "cuda"
    q, k, v, do = (torch.randn(1, 2, 128, 64, device=dev).bfloat16().requires_grad_() for _ in range(4))
    _, tau, rn, states = attention_fwd_launch(q, k, v, 0.5, True, 0.125, (-1, -1), 50)
    xs = torch.randn(2, 256, 4096, device=dev)
    gs, ys = torch.rand_like(xs), torch.empty_like(xs)
    view = scan_kernels.view_of(xs, 2)

    def adds() -> None:
        total = 0
        for i in range(2000):
            total += i

    def repeat(fn: Callable[[], object], n: int = 20) -> Callable[[], None]:
        def run() -> None:
            for _ in range(n):
                fn()

        return run

    works = {
        "nothing": lambda: None, "python 2000 adds": adds,
        "20 torch.empty": repeat(lambda: torch.empty(1, 2, 128, 64, device=dev)),
        "diffmax bwd launch": lambda: attention_bwd_launch(q, k, v, do, tau, rn, states, 0.5, True, 0.125, (-1, -1)),
        "20 empty_like": repeat(lambda: torch.empty_like(xs)), "20 new_empty": repeat(lambda: xs.new_empty(4)),
        "20 current_device": repeat(torch.cuda.current_device), "20 current_stream": repeat(torch.cuda.current_stream),
        "20 scan launches": repeat(lambda: scan_kernels.scan_launch(gs, xs, ys, view, reverse=False, initial_state=None,
                                                                    state_out=None, cu_seqlens=None)),
        "20 x.stride()": repeat(xs.stride),
    }

    def timed(fn: Callable[[], object]) -> float:
        for _ in range(30):
            fn()
        torch.cuda.synchronize()
        best = float("inf")
        for _ in range(3):
            t0 = time.perf_counter()
            for _ in range(calls):
                fn()
            torch.cuda.synchronize()
            best = min(best, (time.perf_counter() - t0) / calls)
        return best * 1e6

    for name, work in works.items():
        direct = timed(work)
        out = _function(work).apply(q, k, v)
        backward = []
        for threads in (True, False):
            torch.autograd.set_multithreading_enabled(threads)
            backward.append(timed(lambda: torch.autograd.grad(out, (q, k, v), do, retain_graph=True)))
        torch.autograd.set_multithreading_enabled(True)
        print(f"{name:22s} direct {direct:7.1f} µs   bwd via engine: device thread {backward[0]:7.1f}, "
              f"calling thread {backward[1]:7.1f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--top", type=int, default=14)
    parser.add_argument("--only", default="", help="comma-separated substrings: time only the matching calls")
    parser.add_argument("--no-profile", action="store_true", help="timings only (no cProfile listing)")
    parser.add_argument("--single-thread", action="store_true",
                        help="torch.autograd.set_multithreading_enabled(False): backward on the calling thread")
    parser.add_argument("--threads", action="store_true", help="the device-thread comparison (see the module's docstring)")
    args = parser.parse_args()
    if args.threads:
        _threads(args.calls)
        return
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
