"""Gluon dK/dV kernel: lse/Δ loaded once per thread and converted (new) against loaded in the scores' layout (old):
dk/dv bitwise, kernel ms, interleaved."""
import json, math, os, torch, triton.testing as tt
from flashmarkov.attention import _merged_gluon_backward as new, gluon_backward as old
from flashmarkov.attention.forward import make_problem
res = []
for B, Hq, Hkv, S, D, causal in ((2, 16, 16, 8192, 128, False),
                                 (2, 16, 16, 8192, 64, False), (2, 16, 16, 8192, 64, True),
                                 (2, 5, 5, 700, 128, True), (1, 6, 2, 1000, 64, False), (3, 4, 4, 333, 128, False)):
    torch.manual_seed(0)
    q = torch.randn(B, Hq, S, D, device="cuda", dtype=torch.bfloat16)
    k, v = (torch.randn(B, Hkv, S, D, device="cuda", dtype=torch.bfloat16) for _ in range(2))
    do = torch.randn_like(q)
    lse = torch.randn(B, Hq, S, device="cuda").abs() + math.log(S)
    delta = torch.randn(B, Hq, S, device="cuda") * 0.1
    prob = make_problem(q, k, None, None, S, S, 1 / math.sqrt(D), causal, -1, -1, 0.0)
    outs, fns = {}, {}
    for name, mod in (("new", new), ("old", old)):
        dk, dv = torch.full_like(k, float("nan")), torch.full_like(v, float("nan"))
        mod.attention_dkdv(q, k, v, do, dk, dv, lse, delta, prob)
        outs[name] = (dk, dv)
        fns[name] = lambda mod=mod, dk=dk, dv=dv: mod.attention_dkdv(q, k, v, do, dk, dv, lse, delta, prob)
    torch.cuda.synchronize()
    rec = dict(shape=[B, Hq, Hkv, S, D], causal=causal, equal=all(torch.equal(a, b) for a, b in zip(outs["new"], outs["old"])),
               nan=bool(outs["new"][0].isnan().any() or outs["new"][1].isnan().any()))
    if S >= 8192:
        t = {}
        for _ in range(3):
            for n, f in fns.items():
                t.setdefault(n, []).append(tt.do_bench(f, warmup=50, rep=200))
        rec.update({f"{n}_ms": sorted(x)[1] for n, x in t.items()})
        rec["speedup"] = rec["old_ms"] / rec["new_ms"]
    res.append(rec)
    print(rec, flush=True)
json.dump(res, open(os.path.join(os.environ.get("OUT", "."), "dkdv_merged4_ab.json"), "w"), indent=1)
