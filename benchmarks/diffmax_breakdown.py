"""Where the public ``diffmax_attention`` forward + backward spends its GPU time (a development
tool; CUDA only): per input kind (random non-causal, random causal, clustered keys as in the
bench), the call's median time (do_bench), each kernel's mean time per call from torch.profiler,
their sum, the fraction of live tiles, and dense cuDNN SDPA on the same tensors.

    python benchmarks/diffmax_breakdown.py [--shape 1 16 4096 64] [--calls 20]
"""

from __future__ import annotations

import argparse
from collections import defaultdict

import torch
import triton.testing
from torch.profiler import ProfilerActivity, profile

from flashmarkov.bench.diffmax import _clustered
from flashmarkov.diffmax import diffmax_attention
from flashmarkov.diffmax.op import attention_fwd


def _kernels(fn, calls: int) -> dict[str, float]:
    """Mean device µs per call of each kernel name."""
    fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(calls):
            fn()
        torch.cuda.synchronize()
    total: dict[str, float] = defaultdict(float)
    for event in prof.events():
        if event.device_type == torch.autograd.DeviceType.CUDA:
            total[event.name[:60]] += event.device_time / calls
    return dict(sorted(total.items(), key=lambda kv: -kv[1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=int, nargs=4, default=(1, 16, 4096, 64))
    parser.add_argument("--calls", type=int, default=20)
    args = parser.parse_args()
    shape = tuple(args.shape)
    gen = torch.Generator(device="cuda").manual_seed(0)
    summary = []
    for kind in ("random", "causal", "clustered"):
        if kind == "clustered":
            q, k = (t.bfloat16() for t in _clustered(shape, gen, torch.device("cuda")))
        else:
            q, k = (torch.randn(shape, generator=gen, device="cuda").bfloat16() for _ in range(2))
        v, do = (torch.randn(shape, generator=gen, device="cuda").bfloat16() for _ in range(2))
        causal = kind == "causal"
        leaves = tuple(t.detach().requires_grad_() for t in (q, k, v))
        scale = shape[-1] ** -0.5
        states = attention_fwd(q, k, v, 0.5, causal, scale, -1, -1, 50)[3]
        live = float((states == 1).sum() / (states != 0).sum())

        def fwd() -> object:
            with torch.no_grad():
                return diffmax_attention(q, k, v, 0.5, causal=causal)

        def fwdbwd() -> object:
            return torch.autograd.grad(diffmax_attention(*leaves, 0.5, causal=causal), leaves, do)

        def dense() -> object:
            with torch.nn.attention.sdpa_kernel(torch.nn.attention.SDPBackend.CUDNN_ATTENTION):
                return torch.autograd.grad(torch.nn.functional.scaled_dot_product_attention(*leaves, is_causal=causal), leaves, do)

        t = {name: triton.testing.do_bench(f, warmup=25, rep=200, return_mode="median") for name, f in
             (("fwd", fwd), ("fwdbwd", fwdbwd), ("cudnn fwdbwd", dense))}
        kernels = _kernels(fwdbwd, args.calls)
        print(f"\n{kind} {shape}: live tiles {live:.1%}; " + ", ".join(f"{n} {v:.3f} ms" for n, v in t.items()), flush=True)
        for name, us in kernels.items():
            print(f"  {us:9.1f} µs  {name}")
        print(f"  {sum(kernels.values()):9.1f} µs  (sum of kernels per fwd+bwd call)")
        summary.append((kind, live, t["fwd"], t["fwdbwd"], sum(kernels.values()) / 1e3, t["cudnn fwdbwd"]))
    print("\nkind       live   fwd ms  fwd+bwd ms  kernels ms  cudnn fwd+bwd ms")
    for kind, live, f, fb, ks, cd in summary:
        print(f"{kind:9} {live:6.1%} {f:8.3f} {fb:11.3f} {ks:11.3f} {cd:17.3f}")


if __name__ == "__main__":
    main()
