"""Public fwd+bwd, this tree's Gluon-backward thresholds (new) against session 16's 2^36 (old), interleaved rounds;
with autograd's multithreading on (as the bench) and off (backward on the calling thread: less host noise)."""
import json, os, statistics, torch, triton.testing as tt
from flashmarkov.attention import flash_attention, gluon_backward as gb
NEW = dict(gb.MIN_WORK)
OLD = dict.fromkeys(NEW, 1 << 36)
res = []
for B, H, S, D in ((4, 8, 2048, 64), (4, 8, 2048, 128), (16, 8, 512, 128)):
    for causal in (False, True):
        q, k, v = (torch.randn(B, H, S, D, device="cuda", dtype=torch.bfloat16, requires_grad=True) for _ in range(3))
        do = torch.randn_like(q)
        def public():
            torch.autograd.grad(flash_attention(q, k, v, causal=causal), (q, k, v), do)
        t = {}
        for _ in range(5):
            for name, mw in (("old", OLD), ("new", NEW)):
                gb.MIN_WORK = mw
                for threads in (True, False):
                    torch.autograd.set_multithreading_enabled(threads)
                    key = f"{name}_{'mt' if threads else '1t'}"
                    t.setdefault(key, []).append(tt.do_bench(public, warmup=25, rep=100) * 1e3)
                torch.autograd.set_multithreading_enabled(True)
        gb.MIN_WORK = NEW
        rec = dict(shape=[B, H, S, D], causal=causal, **{f"{n}_us": statistics.median(x) for n, x in t.items()}, rounds=t)
        res.append(rec)
        print(f"{B}x{H}x{S}x{D} {'c' if causal else 'n'}: " + "  ".join(f"{n} {statistics.median(x):6.0f}" for n, x in t.items()), flush=True)
json.dump(res, open(os.path.join(os.environ.get("OUT", "."), "public_ab.json"), "w"), indent=1)
