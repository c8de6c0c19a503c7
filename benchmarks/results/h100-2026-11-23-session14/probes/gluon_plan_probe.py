"""Kernel time of the non-causal Gluon forward under forced (big, small) plans (calibrates plan()'s model)."""
import json, math, os, time
import torch, triton, triton.testing
from flashmarkov.attention import gluon_forward as g
from flashmarkov.attention.forward import make_problem

def bench(fn):
    return float(triton.testing.do_bench(fn, warmup=25, rep=150, return_mode="median"))

CASES = {(4, 8, 2048, 64): [(11, 0), (10, 1), (9, 3), (8, 4), (7, 6), (6, 7)], (2, 16, 8192, 64): [(43, 0), (42, 1), (41, 3)],
         (16, 8, 512, 64): [(3, 0), (2, 1), (1, 3), (0, 4)], (4, 8, 2048, 128): [(16, 0), (15, 2), (14, 4)]}
rows = []
orig = g.plan
for (B, H, S, D), plans in CASES.items():
    q, k, v = (torch.randn(B, H, S, D, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    prob = make_problem(q, k, None, None, S, S, 1 / math.sqrt(D), False, -1, -1, 0.0)
    o, lse = torch.empty_like(q), q.new_empty(B, H, S, dtype=torch.float32)
    g.plan = orig
    g.attention_forward(q, k, v, o, lse, prob)
    ref = o.clone()
    res = {p: [] for p in plans}
    for _ in range(3):
        for p in plans:
            g.plan = lambda *a, p=p: p
            o.zero_()
            g.attention_forward(q, k, v, o, lse, prob)
            assert torch.equal(o, ref), p
            res[p].append(bench(lambda: g.attention_forward(q, k, v, o, lse, prob)) * 1e3)
    g.plan = orig
    line = " | ".join(f"{p}: {sorted(t)[1]:.1f}" for p, t in res.items())
    print(f"{B}x{H}x{S}x{D} model pick {orig(S, B * H, 132, g.NUM_WG[D])}: {line}", flush=True)
    rows.append(dict(shape=(B, H, S, D), us={str(p): t for p, t in res.items()}))
json.dump(dict(gpu=torch.cuda.get_device_name(), date=time.strftime("%Y-%m-%d %H:%M:%S"), rows=rows), open(os.path.join(os.environ.get("OUT", "/tmp"), "gluon-plan-probe.json"), "w"), indent=1)
