"""Time the fused dK/dV+dQ kernel in one FM_DQ_PROBE mode (0 full, 1 atomics masked off, 2 no dQ product)."""
import json, math, os, torch, triton.testing as tt
from flashmarkov.attention import gluon_backward as gb
from flashmarkov.attention.forward import make_problem
mode = int(os.environ.get("FM_DQ_PROBE", "0"))
res = []
for B, H, S, D, causal in ((2, 16, 8192, 128, False), (2, 16, 8192, 128, True)):
    torch.manual_seed(0)
    q, k, v, do = (torch.randn(B, H, S, D, device="cuda", dtype=torch.bfloat16) for _ in range(4))
    lse = torch.randn(B, H, S, device="cuda").abs() + 5
    delta = torch.randn(B, H, S, device="cuda")
    prob = make_problem(q, k, None, None, S, S, 1 / math.sqrt(D), causal, -1, -1, 0.0)
    dk, dv, dq = torch.empty_like(k), torch.empty_like(v), torch.empty_like(q)
    acc = torch.zeros(B, H, S, D, device="cuda")
    fns = {"dkdv": lambda: gb.attention_dkdv(q, k, v, do, dk, dv, lse, delta, prob),
           "fused": lambda: gb.attention_dkdv(q, k, v, do, dk, dv, lse, delta, prob, dq=dq),
           "zeros_mul": lambda: torch.mul(acc.zero_(), 0.5, out=dq)}
    t = {n: tt.do_bench(f, warmup=20, rep=100) for n, f in fns.items()}
    rec = dict(mode=mode, shape=[B, H, S, D], causal=causal, **{f"{n}_ms": x for n, x in t.items()})
    res.append(rec)
    print(rec, flush=True)
json.dump(res, open(os.path.join(os.environ.get("OUT", "."), f"fused_modes_{mode}.json"), "w"), indent=1)
