"""Backward kernels (pre + dK/dV + dQ, raw launches) with each dK/dV / dQ path, at small D = 64 shapes."""
import json, math, os, sys, torch, triton.testing as tt
from flashmarkov.attention import flash_attention
from flashmarkov.attention import backward as bw, gluon_backward as gb
from flashmarkov.attention.forward import make_problem, attention_forward
res = []
orig_plan = gb.plan
SHAPES = [tuple(map(int, a.split(","))) for a in sys.argv[1:]] or ((4, 8, 2048, 64), (16, 8, 512, 64), (8, 16, 2048, 64), (4, 8, 2048, 128))
OLD = dict(gb.MIN_WORK)
for B, H, S, D in SHAPES:
    for causal in (False, True):
        torch.manual_seed(0)
        q, k, v, do = (torch.randn(B, H, S, D, device="cuda", dtype=torch.bfloat16) for _ in range(4))
        prob = make_problem(q, k, None, None, S, S, 1 / math.sqrt(D), causal, -1, -1, 0.0)
        o, lse = torch.empty_like(q), q.new_empty(B, H, S, dtype=torch.float32)
        attention_forward(q, k, v, o, lse, prob)
        rec = dict(shape=[B, H, S, D], causal=causal)
        outs = {}
        fns = {}
        for name, flags in (("triton", (False, False)), ("gluon_dkdv", (True, False)), ("gluon_both", (True, True))):
            dq, dk, dv = (torch.full_like(x, float("nan")) for x in (q, k, v))
            def run(flags=flags, dq=dq, dk=dk, dv=dv):
                gb.plan = lambda *a, flags=flags: flags
                try:
                    bw.attention_backward(do, q, k, v, o, lse, None, dq, dk, dv, prob)
                finally:
                    gb.plan = orig_plan
            run()
            outs[name] = (dq, dk, dv)
            fns[name] = run
        torch.cuda.synchronize()
        ref = outs["triton"]
        for name, o3 in outs.items():
            rec[name + "_maxdiff"] = max(float((a.float() - b.float()).abs().max()) for a, b in zip(o3, ref))
        t = {}
        for _ in range(3):
            for n, f in fns.items():
                t.setdefault(n, []).append(tt.do_bench(f, warmup=50, rep=200) * 1e3)
        rec.update({f"{n}_us": sorted(x)[1] for n, x in t.items()})
        # public fwd+bwd with the Gluon backward from any size (MIN_WORK 0) against the tree's thresholds
        qg, kg, vg = (x.clone().requires_grad_() for x in (q, k, v))
        def public():
            torch.autograd.grad(flash_attention(qg, kg, vg, causal=causal), (qg, kg, vg), do)
        t = {}
        for _ in range(3):
            for n, mw in (("public_tree", OLD), ("public_gluon", {key: 0 for key in OLD})):
                gb.MIN_WORK = mw
                try:
                    t.setdefault(n, []).append(tt.do_bench(public, warmup=50, rep=200) * 1e3)
                finally:
                    gb.MIN_WORK = OLD
        rec.update({f"{n}_us": sorted(x)[1] for n, x in t.items()})
        res.append(rec)
        print(rec, flush=True)
json.dump(res, open(os.path.join(os.environ.get("OUT", "."), "bwd_paths.json"), "w"), indent=1)
