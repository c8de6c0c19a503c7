"""Where a public attention fwd+bwd spends its wall time on the GPU host (development probe).

Per iteration (do_bench's protocol: a 256 MB L2 clear before each call, no sync between calls):
host stamps (perf_counter_ns) at call start, forward enter/exit, backward enter/exit (autograd's
device thread), each kernel launch, and autograd.grad's return; CUDA events at the same points give
where the GPU was. Prints medians per interval, do_bench medians of ours / ours single-thread /
cuDNN, and a cProfile of our backward on the device thread.

    python tmp_probe/host_timeline.py [B,H,S,D ...]
"""
from __future__ import annotations

import cProfile
import io
import json
import os
import pstats
import statistics
import sys
import threading
import time

import torch
import torch.nn.functional as F
import triton.testing
from torch.nn.attention import SDPBackend, sdpa_kernel

from flashmarkov import _launch
from flashmarkov.attention import flash_attention
from flashmarkov.attention import op as aop

STAMPS: list[tuple[str, int, int]] = []
EVENTS: list[tuple[str, torch.cuda.Event]] = []
ON = {"stamps": False, "events": False, "profile": None}


def stamp(label: str) -> None:
    if ON["stamps"]:
        STAMPS.append((label, time.perf_counter_ns(), threading.get_ident()))
    if ON["events"]:
        e = torch.cuda.Event(enable_timing=True)
        e.record()
        EVENTS.append((label, e))


_orig_fwd = aop.AttentionFunction.forward
_orig_bwd = aop.AttentionFunction.backward


def fwd(ctx, *args):
    stamp("fwd_in")
    out = _orig_fwd(ctx, *args)
    stamp("fwd_out")
    return out


def bwd(ctx, do, dlse):
    stamp("bwd_in")
    prof = ON["profile"]
    if prof is not None:
        prof.enable()
    out = _orig_bwd(ctx, do, dlse)
    if prof is not None:
        prof.disable()
    stamp("bwd_out")
    return out


aop.AttentionFunction.forward = staticmethod(fwd)
aop.AttentionFunction.backward = staticmethod(bwd)
_orig_call = _launch.LeanKernel.__call__


def call(self, *a, **kw):
    name = getattr(self.fn, "__name__", None) or getattr(getattr(self.fn, "fn", None), "__name__", "k")
    stamp("L:" + name.replace("_attn_", "").replace("_kernel", ""))
    return _orig_call(self, *a, **kw)


_launch.LeanKernel.__call__ = call


def main() -> None:
    shapes = [tuple(map(int, s.split(","))) for s in sys.argv[1:]] or [(4, 8, 2048, 64), (16, 8, 512, 64), (32, 8, 128, 64)]
    cache = torch.empty(256 << 20, dtype=torch.int8, device="cuda")
    out = {}
    for B, H, S, D in shapes:
        for causal in (False, True):
            q, k, v, do = (torch.randn(B, H, S, D, device="cuda", dtype=torch.bfloat16, requires_grad=i < 3)
                           for i in range(4))

            def ours() -> None:
                stamp("start")
                o = flash_attention(q, k, v, causal=causal)
                stamp("grad_call")
                torch.autograd.grad(o, (q, k, v), do)
                stamp("end")

            def cudnn() -> None:
                stamp("start")
                with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
                    o = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
                stamp("grad_call")
                torch.autograd.grad(o, (q, k, v), do)
                stamp("end")

            def single() -> None:
                torch.autograd.set_multithreading_enabled(False)
                try:
                    ours()
                finally:
                    torch.autograd.set_multithreading_enabled(True)

            row = {}
            for name, fn in (("ours", ours), ("cudnn", cudnn), ("ours_1thread", single)):
                row[name + "_bench_ms"] = [triton.testing.do_bench(fn, warmup=100, rep=100, return_mode="median") for _ in range(2)]
            for name, fn in (("ours", ours), ("cudnn", cudnn)):
                for _ in range(20):
                    fn()
                torch.cuda.synchronize()
                STAMPS.clear()
                EVENTS.clear()
                ON["stamps"] = ON["events"] = True
                n = 60
                for _ in range(n):
                    cache.zero_()
                    fn()
                torch.cuda.synchronize()
                ON["stamps"] = ON["events"] = False
                # split into iterations at "start"
                its, cur = [], None
                for lab, t, tid in STAMPS:
                    if lab == "start":
                        cur = []
                        its.append(cur)
                    cur.append((lab, t, tid))
                host = {}
                for it in its[5:]:
                    t0 = it[0][1]
                    for i, (lab, t, _) in enumerate(it):
                        host.setdefault(f"{i:02d} {lab}", []).append((t - t0) / 1e3)
                gev, cur = [], None
                for lab, e in EVENTS:
                    if lab == "start":
                        cur = []
                        gev.append(cur)
                    cur.append((lab, e))
                gpu = {}
                for it in gev[5:]:
                    e0 = it[0][1]
                    for i, (lab, e) in enumerate(it):
                        gpu.setdefault(f"{i:02d} {lab}", []).append(e0.elapsed_time(e) * 1e3)
                row[name + "_host_us"] = {k2: round(statistics.median(v2), 1) for k2, v2 in host.items()}
                row[name + "_gpu_us"] = {k2: round(statistics.median(v2), 1) for k2, v2 in gpu.items()}
                if name == "ours":
                    tids = {tid for _, _, tid in STAMPS}
                    row["threads"] = len(tids)
            # cProfile of our backward on the device thread
            prof = cProfile.Profile()
            ON["profile"] = prof
            for _ in range(100):
                ours()
            ON["profile"] = None
            torch.cuda.synchronize()
            s = io.StringIO()
            pstats.Stats(prof, stream=s).sort_stats("tottime").print_stats(18)
            row["bwd_profile"] = s.getvalue()
            key = f"{B}x{H}x{S}x{D}{' causal' if causal else ''}"
            out[key] = row
            print("====", key, flush=True)
            for name in ("ours", "cudnn", "ours_1thread"):
                print(f"  {name:13s} do_bench ms {row[name + '_bench_ms']}")
            for name in ("ours", "cudnn"):
                print(f"  {name} host µs / gpu µs (from call start), per stamp:")
                for k2 in row[name + "_host_us"]:
                    print(f"    {k2:22s} host {row[name + '_host_us'][k2]:8.1f}   gpu {row[name + '_gpu_us'].get(k2, float('nan')):8.1f}")
            print(row["bwd_profile"][:3000])
    path = os.path.join(os.environ.get("OUT", "/tmp"), "host_timeline.json")
    with open(path, "w") as f:
        json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
