"""Gluon dK/dV kernel with dQ accumulated by atomic adds (FUSE_DQ) against dK/dV + the Gluon dQ kernel:
dk/dv bitwise, dq's error against a float32 reference (small shapes) or the dQ kernel's (large), kernel ms."""
import json, math, os, sys, torch, triton.testing as tt
import torch.nn.functional as F
from flashmarkov.attention import flash_attention, gluon_backward as gb
from flashmarkov.attention.forward import make_problem

res = []
SHAPES = [(1, 6, 2, 1000, 128, True), (2, 5, 5, 700, 128, False), (2, 5, 5, 700, 64, True), (1, 4, 4, 333, 64, False),
          (2, 16, 16, 8192, 128, False), (2, 16, 16, 8192, 128, True), (1, 32, 32, 16384, 128, True),
          (2, 32, 8, 8192, 128, True), (4, 8, 8, 2048, 128, False), (2, 16, 16, 8192, 64, False), (2, 16, 16, 8192, 64, True)]
for B, Hq, Hkv, S, D, causal in SHAPES:
    torch.manual_seed(0)
    q = torch.randn(B, Hq, S, D, device="cuda", dtype=torch.bfloat16)
    k, v = (torch.randn(B, Hkv, S, D, device="cuda", dtype=torch.bfloat16) for _ in range(2))
    do = torch.randn_like(q)
    o, lse = flash_attention(q, k, v, causal=causal, return_lse=True)
    lse = lse.float().contiguous()
    delta = (do.float() * o.float()).sum(-1).contiguous()
    prob = make_problem(q, k, None, None, S, S, 1 / math.sqrt(D), causal, -1, -1, 0.0)
    dk0, dv0, dk1, dv1 = (torch.full_like(k, float("nan")) for _ in range(4))
    dq0, dq1 = torch.full_like(q, float("nan")), torch.full_like(q, float("nan"))
    old = lambda: (gb.attention_dkdv(q, k, v, do, dk0, dv0, lse, delta, prob), gb.attention_dq(q, k, v, do, dq0, lse, delta, prob) if D == 128 else None)
    new = lambda: gb.attention_dkdv(q, k, v, do, dk1, dv1, lse, delta, prob, dq=dq1)
    old(); new(); torch.cuda.synchronize()
    rec = dict(shape=[B, Hq, Hkv, S, D], causal=causal, dk_diff=((dk0.float() - dk1.float()).norm() / dk0.float().norm()).item(),
               dv_diff=((dv0.float() - dv1.float()).norm() / dv0.float().norm()).item(),
               dq_nan=bool(dq1.isnan().any()))
    if B * Hq * S * S <= 2 * 6 * 1000 * 1000:
        qf, kf, vf = (x.float().requires_grad_() for x in (q, k, v))
        rep = Hq // Hkv
        of = F.scaled_dot_product_attention(qf, kf.repeat_interleave(rep, 1), vf.repeat_interleave(rep, 1), is_causal=causal)
        dqf, = torch.autograd.grad(of, (qf,), do.float())
        rec["dq_err_fused"] = ((dq1.float() - dqf).norm() / dqf.norm()).item()
        if D == 128:
            rec["dq_err_kernel"] = ((dq0.float() - dqf).norm() / dqf.norm()).item()
    elif D == 128:
        rec["dq_diff_vs_kernel"] = ((dq1.float() - dq0.float()).norm() / dq0.float().norm()).item()
    if S >= 2048:
        t = {"old": [], "new": []}
        for _ in range(3):
            for n, f in (("old", old), ("new", new)):
                t[n].append(tt.do_bench(f, warmup=20, rep=100))
        rec.update({f"{n}_ms": sorted(x)[1] for n, x in t.items()})
    res.append(rec)
    print(rec, flush=True)
json.dump(res, open(os.path.join(os.environ.get("OUT", "."), "fused_dq_probe.json"), "w"), indent=1)
