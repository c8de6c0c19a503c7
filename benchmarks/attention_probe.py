"""Forward time of ``flash_attention`` against its raw launch and SDPA (cuDNN for 16-bit types,
the memory-efficient backend for float32; a development tool, CUDA only): separates the kernel's
time from the public call's at the benchmark's shapes, and prints the tile configuration each
launch uses ("gluon": the Hopper Gluon forward, then also timed against the Triton forward as "triton").

    python benchmarks/attention_probe.py [--dtype bfloat16|float16|float32] [B,H,S,D ...]
"""

from __future__ import annotations

import math
import sys

import torch
import torch.nn.functional as F
import triton.testing
from torch.nn.attention import SDPBackend, sdpa_kernel

from flashmarkov.attention import flash_attention
from flashmarkov.attention import gluon_forward
from flashmarkov.attention.forward import attention_forward, make_problem, pick_config

SHAPES = ((4, 8, 2048, 64), (2, 16, 8192, 128), (16, 8, 512, 64), (32, 8, 128, 64))


def main() -> None:
    args = sys.argv[1:]
    dtype = torch.bfloat16
    if args[:1] == ["--dtype"]:
        dtype, args = getattr(torch, args[1]), args[2:]
    backend = SDPBackend.EFFICIENT_ATTENTION if dtype == torch.float32 else SDPBackend.CUDNN_ATTENTION
    shapes = [tuple(map(int, s.split(","))) for s in args] or SHAPES
    for B, H, S, D in shapes:
        q, k, v = (torch.randn(B, H, S, D, device="cuda", dtype=dtype) for _ in range(3))
        for causal in (False, True):
            prob = make_problem(q, k, None, None, S, S, 1 / math.sqrt(D), causal, -1, -1, 0.0)
            o, lse = torch.empty_like(q), q.new_empty(B, H, S, dtype=torch.float32)
            flop = 4 * B * H * S * S * D / (2 if causal else 1)

            def public() -> None:
                with torch.no_grad():
                    flash_attention(q, k, v, causal=causal)

            def sdpa() -> None:
                with sdpa_kernel(backend):
                    F.scaled_dot_product_attention(q, k, v, is_causal=causal)

            def triton_raw() -> None:
                gluon_forward.ENABLED = False
                try:
                    attention_forward(q, k, v, o, lse, prob)
                finally:
                    gluon_forward.ENABLED = True

            runs = [("raw", lambda: attention_forward(q, k, v, o, lse, prob)), ("public", public), (backend.name.lower(), sdpa)]
            gluon = gluon_forward.supported(q, k, v, o, prob)
            if gluon:
                runs.insert(1, ("triton", triton_raw))
            times = {name: triton.testing.do_bench(fn, warmup=25, rep=100, return_mode="median") for name, fn in runs}
            cfg = "gluon" if gluon else tuple(pick_config("fwd", D, prob.has_left or prob.has_right, q.element_size()))
            print(f"{B}x{H}x{S}x{D} causal={causal!s:5} cfg={cfg}: "
                  + ", ".join(f"{n} {t * 1e3:.1f} µs ({flop / t / 1e9:.0f} TFLOP/s)" for n, t in times.items()), flush=True)


if __name__ == "__main__":
    main()
