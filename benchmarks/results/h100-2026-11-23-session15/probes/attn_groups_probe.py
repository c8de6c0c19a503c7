"""Causal Gluon forward: the walk's group size forced (``causal_groups`` replaced), kernel µs, against the grid kernel (old)."""
import math, json, os, torch, triton.testing as tt
from flashmarkov.attention import gluon_forward as new, _old_gluon_forward as old
from flashmarkov.attention.forward import make_problem, attention_forward as triton_forward
res = []
orig = new.causal_groups
for B, H, S, D in [(8, 16, 2048, 64), (2, 32, 8192, 128), (2, 16, 8192, 128), (4, 8, 2048, 64), (1, 32, 16384, 128)]:
    torch.manual_seed(0)
    q, k, v = (torch.randn(B, H, S, D, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    prob = make_problem(q, k, None, None, S, S, 1 / math.sqrt(D), True, -1, -1, 0.0)
    o, lse = torch.empty_like(q), torch.empty((B, H, S), device="cuda")
    gs = [g for g in (1, 2, 4, 8, 16, 32, 64, 128) if g <= B * H]
    fns = {"old": lambda: old.attention_forward(q, k, v, o, lse, prob)}
    def tri():
        new.ENABLED = False
        try:
            triton_forward(q, k, v, o, lse, prob)
        finally:
            new.ENABLED = True
    fns["triton"] = tri
    for g in gs:
        def f(g=g):
            new.causal_groups = lambda *a: g
            try:
                new.attention_forward(q, k, v, o, lse, prob)
            finally:
                new.causal_groups = orig
        fns[f"g{g}"] = f
    t = {n: [] for n in fns}
    for _ in range(2):
        for n, f in fns.items():
            t[n].append(tt.do_bench(f, warmup=5, rep=40) * 1e3)
    med = {n: min(v) for n, v in t.items()}
    res.append(dict(shape=[B, H, S, D], auto=orig(B * H, S, 64 * new.NUM_WG[D], B * H * S * D * 4, 132), **med))
    print(f"{B}x{H}x{S}x{D} auto g={res[-1]['auto']}: " + "  ".join(f"{n} {v:.1f}" for n, v in med.items()), flush=True)
json.dump(res, open(os.path.join(os.environ.get("OUT", "."), "attn_groups_probe.json"), "w"), indent=1)
