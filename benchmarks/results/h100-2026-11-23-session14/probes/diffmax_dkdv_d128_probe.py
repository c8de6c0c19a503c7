"""D = 128 (bf16) diffmax dkdv: the transposed-form kernel it replaces (_old_attention) against key-major configs."""
import json, os
import torch, triton, triton.testing
from flashmarkov.diffmax import attention as new, _old_attention as old

def bench(fn):
    return float(triton.testing.do_bench(fn, warmup=25, rep=200, return_mode="median"))

gen = torch.Generator(device="cuda").manual_seed(0)
rows = []
for shape, causal in (((1, 16, 4096, 128), False), ((1, 16, 4096, 128), True)):
    q, k, v, do = (torch.randn(shape, generator=gen, device="cuda").to(torch.bfloat16) for _ in range(4))
    scale = shape[-1] ** -0.5
    ocfg = old.AttnConfig(128, 64, 8, 3)
    o, tau, rn, st = old.attention_fwd_launch(q, k, v, 0.5, causal, scale, (-1, -1), 50, ocfg)
    ref = old.attention_bwd_launch(q, k, v, do, tau, rn, st, 0.5, causal, scale, (-1, -1), ocfg)
    row = dict(shape=shape, causal=causal, old_dkdv_ms=bench(lambda: old.attention_bwd_launch(q, k, v, do, tau, rn, st, 0.5, causal, scale, (-1, -1), ocfg, kernels="dkdv")))
    for step, warps in ((128, 8), (64, 8), (32, 4), (64, 4)):
        cfg = new.AttnConfig(128, 64, 8, 3, dkdv_warps=warps, dkdv_block_m=step)
        try:
            got = new.attention_bwd_launch(q, k, v, do, tau, rn, st, 0.5, causal, scale, (-1, -1), cfg)
            err = [float(((a.float() - b.float()).norm() / b.float().norm())) for a, b in zip(got, ref)]
            row[f"{step}x{warps}"] = dict(dkdv_ms=bench(lambda: new.attention_bwd_launch(q, k, v, do, tau, rn, st, 0.5, causal, scale, (-1, -1), cfg, kernels="dkdv")), rel_diff=err)
        except Exception as e:  # noqa
            row[f"{step}x{warps}"] = repr(e)[:200]
    print(json.dumps(row), flush=True)
    rows.append(row)
json.dump(rows, open(os.path.join(os.environ.get("OUT", "/tmp"), "dkdv-d128-probe.json"), "w"), indent=1)
