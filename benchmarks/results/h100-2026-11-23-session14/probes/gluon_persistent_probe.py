"""Persistent Gluon forward (PERSISTENT) against the non-persistent one of this tree and the kernel before
the split (_old_gluon_forward): o / lse equality on awkward shapes, then kernel times. Non-causal, bf16."""
import json, math, os, sys, time
import torch, triton, triton.testing
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
from flashmarkov.attention import gluon_forward as new, _old_gluon_forward as old
from flashmarkov.attention.forward import make_problem

def bench(fn):
    return float(triton.testing.do_bench(fn, warmup=25, rep=150, return_mode="median"))

def run(mod, q, k, v, prob):
    o, l = torch.empty_like(q), q.new_empty(q.shape[0], q.shape[1], q.shape[2], dtype=torch.float32)
    mod.attention_forward(q, k, v, o, l, prob)
    return o, l

def inputs(B, Hq, Hkv, Sq, Sk, D, causal=False):
    q = torch.randn(B, Hq, Sq, D, device="cuda", dtype=torch.bfloat16)
    k, v = (torch.randn(B, Hkv, Sk, D, device="cuda", dtype=torch.bfloat16) for _ in range(2))
    return q, k, v, make_problem(q, k, None, None, Sq, Sk, 1 / math.sqrt(D), causal, -1, -1, 0.0)

ok = True
for shape in [(4, 8, 8, 2048, 2048, 64), (2, 16, 8, 1950, 1950, 64), (1, 2, 2, 5000, 77, 64), (2, 4, 4, 1000, 1537, 128),
              (3, 2, 1, 4096, 4096, 64), (2, 6, 3, 1, 300, 128), (1, 3, 3, 129, 129, 64), (40, 8, 8, 300, 300, 128),
              (1, 8, 2, 129, 129, 64, True), (1, 4, 4, 2049, 2049, 128, True)]:
    q, k, v, prob = inputs(*shape)
    o0, l0 = run(old, q, k, v, prob)
    o1, l1 = run(new, q, k, v, prob)
    torch.cuda.synchronize()
    same = torch.equal(o0, o1) and torch.equal(l0, l1)
    ok &= same
    print("equal" if same else "DIFFERENT", shape, float((o0.float() - o1.float()).abs().max()), flush=True)
rows = []
for B, H, S, D, causal in [(4, 8, 2048, 64, False), (16, 8, 512, 64, False), (32, 8, 128, 64, False), (2, 16, 8192, 64, False),
                           (4, 8, 2048, 128, False), (2, 16, 8192, 128, False), (8, 8, 512, 128, False), (2, 16, 8192, 128, True),
                           (2, 16, 8192, 64, True)]:
    q, k, v, prob = inputs(B, H, H, S, S, D, causal)
    t = {"old": [], "new": [], "cudnn": []}
    for _ in range(3):
        for name, mod in (("old", old), ("new", new)):
            o, l = torch.empty_like(q), q.new_empty(B, H, S, dtype=torch.float32)
            t[name].append(bench(lambda: mod.attention_forward(q, k, v, o, l, prob)) * 1e3)
        with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
            t["cudnn"].append(bench(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=causal)) * 1e3)
    med = {n: sorted(x)[1] for n, x in t.items()}
    rows.append(dict(shape=(B, H, S, D), causal=causal, us=t))
    print(f"{B}x{H}x{S}x{D} causal={causal}: old {med['old']:.1f} new {med['new']:.1f} cuDNN {med['cudnn']:.1f} us"
          f" -> new/old {med['old'] / med['new']:.3f}x, vs cuDNN {med['cudnn'] / med['new']:.3f}x", flush=True)
json.dump(dict(gpu=torch.cuda.get_device_name(), date=time.strftime("%Y-%m-%d %H:%M:%S"), all_equal=ok, rows=rows),
          open(os.path.join(os.environ.get("OUT", "/tmp"), os.environ.get("PROBE_JSON", "gluon-persistent-probe.json")), "w"), indent=1)
