"""Gluon forward with plan()'s big/small programs and idle warpgroups (this tree) against the kernel
before (_old_gluon_forward): o / lse equality and kernel times, interleaved rounds; cuDNN beside."""
import json, math, os, sys, time
import torch, triton, triton.testing
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
from flashmarkov.attention import gluon_forward as new, _old_gluon_forward as old
from flashmarkov.attention.forward import make_problem

def bench(fn):
    return float(triton.testing.do_bench(fn, warmup=25, rep=150, return_mode="median"))

SHAPES = [tuple(map(int, x.split(","))) for x in os.environ["SHAPES"].split()] if os.environ.get("SHAPES") else [(4, 8, 2048, 64), (2, 16, 8192, 64), (16, 8, 512, 64), (8, 16, 2048, 64), (4, 8, 2048, 128), (2, 16, 8192, 128), (1, 32, 16384, 128)]
rows = []
for B, H, S, D in SHAPES:
    q, k, v = (torch.randn(B, H, S, D, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    for causal in (False, True):
        if causal and D == 64 and S < 8192:
            continue
        prob = make_problem(q, k, None, None, S, S, 1 / math.sqrt(D), causal, -1, -1, 0.0)
        o1, o2 = torch.empty_like(q), torch.empty_like(q)
        l1, l2 = (q.new_empty(B, H, S, dtype=torch.float32) for _ in range(2))
        old.attention_forward(q, k, v, o1, l1, prob)
        new.attention_forward(q, k, v, o2, l2, prob)
        same = bool(torch.equal(o1, o2) and torch.equal(l1, l2))
        diff = float((o1.float() - o2.float()).abs().max())
        t_old, t_new, t_cud = [], [], []
        for _ in range(int(os.environ.get("ROUNDS", 3))):
            t_old.append(bench(lambda: old.attention_forward(q, k, v, o1, l1, prob)))
            t_new.append(bench(lambda: new.attention_forward(q, k, v, o2, l2, prob)))
            with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
                t_cud.append(bench(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=causal)))
        plan = None if causal else new.plan(S, B * H, torch.cuda.get_device_properties(0).multi_processor_count, new.NUM_WG[D])
        row = dict(shape=(B, H, S, D), causal=causal, plan=plan, bitwise_equal=same, max_abs_diff=diff, old_us=[t * 1e3 for t in t_old],
                   new_us=[t * 1e3 for t in t_new], cudnn_us=[t * 1e3 for t in t_cud])
        rows.append(row)
        med = lambda x: sorted(x)[len(x) // 2]
        print(f"{B}x{H}x{S}x{D} causal={causal} plan={plan} equal={same} ({diff:.1e}) old {med(row['old_us']):.1f} new {med(row['new_us']):.1f} us "
              f"({med(row['old_us']) / med(row['new_us']):.3f}x) cuDNN {med(row['cudnn_us']):.1f} -> new/cuDNN {med(row['cudnn_us']) / med(row['new_us']):.3f}x", flush=True)
json.dump(dict(gpu=torch.cuda.get_device_name(), torch=torch.__version__, triton=triton.__version__, date=time.strftime("%Y-%m-%d %H:%M:%S"), rows=rows),
          open(os.path.join(os.environ.get("OUT", "/tmp"), "gluon-tail-probe.json"), "w"), indent=1)
