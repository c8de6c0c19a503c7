"""Varlen attention against dense attention doing the same work (a development tool; CUDA only):
the benchmark's varlen batch (``flashmarkov.bench.attention.varlen_lengths``: 16 sequences of
100…8000 tokens, H = 16, D = 128, causal, bfloat16) as one packed launch, against the same
sequences as 16 dense (1, H, n, D) launches. Each side is captured in one CUDA graph and timed by
its replays, so host time (which the 16 short dense launches would be dominated by) stays out;
forward, and forward + backward. Also dense 2×16×8192×128 causal for scale.

    python benchmarks/attention_varlen_probe.py [--seqs 16] [--heads 16] [--dim 128]
"""

from __future__ import annotations

import argparse
import itertools
import math
from collections.abc import Callable

import torch
import triton.testing

from flashmarkov.attention.backward import attention_backward
from flashmarkov.attention.forward import attention_forward, make_problem
from flashmarkov.bench.attention import varlen_lengths


def _graphed(fn: Callable[[], None]) -> Callable[[], None]:
    """``fn``'s launches captured once (after a warm-up that compiles), replayed."""
    fn()
    torch.cuda.synchronize()
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        fn()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    return graph.replay


def _calls(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, do: torch.Tensor, cu: torch.Tensor | None,
           max_len: int, backward: bool) -> Callable[[], None]:
    """One forward (+ backward) launch on canonical tensors: dense (1, H, n, D) or varlen (total, H, D)."""
    scale = 1 / math.sqrt(q.shape[-1])
    prob = make_problem(q, k, cu, cu, max_len, max_len, scale, True, -1, -1, 0.0)
    o = torch.empty_like(q)
    lse_shape = (q.shape[1], q.shape[0]) if cu is not None else q.shape[:3]
    lse = torch.empty(lse_shape, dtype=torch.float32, device=q.device)
    dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)

    def run() -> None:
        attention_forward(q, k, v, o, lse, prob)
        if backward:
            attention_backward(do, q, k, v, o, lse, None, dq, dk, dv, prob)

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seqs", type=int, default=16)
    parser.add_argument("--heads", type=int, default=16)
    parser.add_argument("--dim", type=int, default=128)
    args = parser.parse_args()
    H, D, dtype = args.heads, args.dim, torch.bfloat16
    lengths = varlen_lengths(args.seqs)
    total = sum(lengths)
    cu_list = [0, *itertools.accumulate(lengths)]
    cu = torch.tensor(cu_list, dtype=torch.int32, device="cuda")
    q, k, v, do = (torch.randn(total, H, D, device="cuda", dtype=dtype) for _ in range(4))
    flop_fwd = 4.0 * H * D * sum(n * n for n in lengths) / 2
    dense = torch.randn(4, 2, H, 8192, D, device="cuda", dtype=dtype)
    flop_dense = 4.0 * 2 * H * D * 8192 * 8192 / 2

    def per_seq(x: torch.Tensor, a: int, b: int) -> torch.Tensor:
        return x[a:b].transpose(0, 1)[None]  # (1, H, n, D) view of the packed rows

    for backward in (False, True):
        flop = flop_fwd * (3.5 if backward else 1.0)
        varlen = _calls(q, k, v, do, cu, max(lengths), backward)
        parts = [_calls(*(per_seq(x, a, b) for x in (q, k, v, do)), None, b - a, backward)
                 for a, b in zip(cu_list[:-1], cu_list[1:], strict=True)]

        def all_dense(parts: list[Callable[[], None]] = parts) -> None:
            for part in parts:
                part()

        big = _calls(dense[0], dense[1], dense[2], dense[3], None, 8192, backward)
        times = {name: triton.testing.do_bench(_graphed(fn), warmup=25, rep=200, return_mode="median")
                 for name, fn in (("varlen", varlen), ("dense per sequence", all_dense), ("dense 2x16x8192", big))}
        label = "fwd+bwd" if backward else "fwd"
        rates = {name: (flop_dense * (3.5 if backward else 1.0) if name.startswith("dense 2x") else flop) / (t * 1e9)
                 for name, t in times.items()}
        print(f"{label}: " + ", ".join(f"{n} {t:.3f} ms ({rates[n]:.0f} TFLOP/s)" for n, t in times.items())
              + f"; varlen / dense per sequence speed {times['dense per sequence'] / times['varlen']:.3f}", flush=True)


if __name__ == "__main__":
    main()
