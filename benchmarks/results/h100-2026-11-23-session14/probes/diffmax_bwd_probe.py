"""Key-major diffmax dkdv (this tree) against the query-major TRANS kernel it replaces (_old_attention):
outputs compared, dkdv kernel times, public fwd+bwd vs dense cuDNN. bf16, D = 64, alpha = 0.5."""
import json, os, sys, time
import torch, triton, triton.testing
from flashmarkov.diffmax import attention as new, _old_attention as old
from flashmarkov.diffmax import diffmax_attention

out = os.environ.get("OUT", "/tmp")
def bench(fn, rep=200):
    return float(triton.testing.do_bench(fn, warmup=25, rep=rep, return_mode="median"))

recs = []
gen = torch.Generator(device="cuda").manual_seed(0)
SHAPES = [((1, 16, 4096, 64), False), ((1, 16, 4096, 64), True), ((1, 8, 16384, 64), True)]
NEW_CFGS = [(128, 8), (64, 4), (64, 8)]  # dq rows per program, dq warps (dkdv 64 x 4)
for shape, causal in SHAPES:
    q, k, v, do = (torch.randn(shape, generator=gen, device="cuda").to(torch.bfloat16) for _ in range(4))
    scale = shape[-1] ** -0.5
    ocfg = old.AttnConfig(128, 64, 4, 3, 0, 8)
    o, tau, rn, st = old.attention_fwd_launch(q, k, v, 0.5, causal, scale, (-1, -1), 50, ocfg)
    ref = old.attention_bwd_launch(q, k, v, do, tau, rn, st, 0.5, causal, scale, (-1, -1), ocfg)
    t_old = bench(lambda: old.attention_bwd_launch(q, k, v, do, tau, rn, st, 0.5, causal, scale, (-1, -1), ocfg, kernels="dkdv"))
    t_old_dq = bench(lambda: old.attention_bwd_launch(q, k, v, do, tau, rn, st, 0.5, causal, scale, (-1, -1), ocfg, kernels="dq"))
    row = dict(shape=shape, causal=causal, old_dkdv_ms=t_old, old_dq_ms=t_old_dq)
    for step, warps in NEW_CFGS:
        cfg = new.AttnConfig(128, 64, 4, 3, 0, warps, 64, 4, dq_block_m=step)
        try:
            got = new.attention_bwd_launch(q, k, v, do, tau, rn, st, 0.5, causal, scale, (-1, -1), cfg)
            err = [float(((a.float() - b.float()).norm() / b.float().norm())) for a, b in zip(got, ref)]
            t = bench(lambda: new.attention_bwd_launch(q, k, v, do, tau, rn, st, 0.5, causal, scale, (-1, -1), cfg, kernels="dq"))
            tb = bench(lambda: new.attention_bwd_launch(q, k, v, do, tau, rn, st, 0.5, causal, scale, (-1, -1), cfg))
            row[f"new_{step}x{warps}"] = dict(dq_ms=t, bwd_ms=tb, rel_diff_dq_dk_dv=err)
        except Exception as e:  # noqa
            row[f"new_{step}x{warps}"] = repr(e)[:300]
    # public fwd+bwd (default config of this tree) and dense cuDNN
    qg, kg, vg = (t.clone().requires_grad_() for t in (q, k, v))
    def fb():
        o = diffmax_attention(qg, kg, vg, 0.5, causal=causal)
        torch.autograd.grad(o, (qg, kg, vg), do)
    def cud():
        with torch.nn.attention.sdpa_kernel(torch.nn.attention.SDPBackend.CUDNN_ATTENTION):
            o = torch.nn.functional.scaled_dot_product_attention(qg, kg, vg, is_causal=causal)
        torch.autograd.grad(o, (qg, kg, vg), do)
    ts = []
    for _ in range(5):
        ts.append((bench(fb), bench(cud)))
    row["public_fwd_bwd_ms"] = [a for a, _ in ts]
    row["cudnn_fwd_bwd_ms"] = [b for _, b in ts]
    print(json.dumps(row), flush=True)
    recs.append(row)
json.dump(dict(gpu=torch.cuda.get_device_name(), torch=torch.__version__, triton=triton.__version__,
               date=time.strftime("%Y-%m-%d %H:%M:%S"), records=recs), open(os.path.join(out, "dq-steps-probe.json"), "w"), indent=1)
print("\nshape causal | old dq, dkdv | dq (bwd): " + " | ".join(f"{s}x{w}" for s, w in NEW_CFGS) + " | public f+b | cuDNN f+b")
for r in recs:
    cells = []
    for s, w in NEW_CFGS:
        x = r[f"new_{s}x{w}"]
        cells.append(f"{x['dq_ms']:.3f} ({x['bwd_ms']:.3f}) {max(x['rel_diff_dq_dk_dv']):.0e}" if isinstance(x, dict) else "err")
    print(r["shape"], r["causal"], f"| {r['old_dq_ms']:.3f}, {r['old_dkdv_ms']:.3f} |", " | ".join(cells), "|", " ".join(f"{t:.3f}" for t in r["public_fwd_bwd_ms"]), "|", " ".join(f"{t:.3f}" for t in r["cudnn_fwd_bwd_ms"]))
