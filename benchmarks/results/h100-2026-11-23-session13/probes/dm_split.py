"""diffmax attention forward: fused vs split (passes kernel at several register caps), kernel-level and public fwd+bwd."""
import json, os, sys, torch, triton.testing as tt
from flashmarkov.diffmax import attention as A, diffmax_attention
from flashmarkov.bench.diffmax import _clustered
out = os.environ.get("OUT", "/tmp")
base = A.AttnConfig(128, 64, 4, 3, 0, 8)
cfgs = {"fused": base, "split": base._replace(fwd_split=True) if hasattr(base, "_replace") else None}
import dataclasses
cfgs = {"fused": base,
        "split-nocap": dataclasses.replace(base, fwd_split=True),
        "split-168": dataclasses.replace(base, fwd_split=True, pass_maxnreg=168),
        "split-128": dataclasses.replace(base, fwd_split=True, pass_maxnreg=128)}
rows = []
gen = torch.Generator(device="cuda").manual_seed(0)
for shape, causal, kind in [((1, 16, 4096, 64), False, "random"), ((1, 16, 4096, 64), True, "random"),
                            ((1, 8, 16384, 64), True, "random"), ((1, 16, 4096, 64), False, "clustered")]:
    if kind == "clustered":
        q, k = (t.bfloat16() for t in _clustered(shape, gen, torch.device("cuda")))
    else:
        q, k = (torch.randn(shape, generator=gen, device="cuda").bfloat16() for _ in range(2))
    v, do = (torch.randn(shape, generator=gen, device="cuda").bfloat16() for _ in range(2))
    sc = shape[-1] ** -0.5
    ref = None
    if kind == "random":
        import torch.nn.functional as F
        lv = tuple(t.detach().requires_grad_() for t in (q, k, v))
        def sd():
            with torch.nn.attention.sdpa_kernel(torch.nn.attention.SDPBackend.CUDNN_ATTENTION):
                o = F.scaled_dot_product_attention(*lv, is_causal=causal)
            return torch.autograd.grad(o, lv, do)
        t_sd = tt.do_bench(sd, warmup=50, rep=300, return_mode="median")
        rows.append(dict(shape=list(shape), causal=causal, kind=kind, config="sdpa-cudnn", public_fwd_bwd_ms=t_sd))
        print(f"{str(shape):20s} causal={causal!s:5s} cudnn fwd+bwd {t_sd*1e3:7.1f} us", flush=True)
    for name, cfg in cfgs.items():
        f = lambda: A.attention_fwd_launch(q, k, v, 0.5, causal, sc, (-1, -1), 50, cfg)
        res = f()
        if ref is None:
            ref = res
        same = all(torch.equal(a, b) for a, b in zip(ref, res))
        fwd = tt.do_bench(f, warmup=50, rep=300, return_mode="median")
        A.pick_config = lambda d, itemsize, cfg=cfg: cfg
        leaves = tuple(t.detach().requires_grad_() for t in (q, k, v))
        def fb():
            o = diffmax_attention(*leaves, 0.5, causal=causal)
            return torch.autograd.grad(o, leaves, do)
        fbt = tt.do_bench(fb, warmup=50, rep=300, return_mode="median")
        row = dict(shape=list(shape), causal=causal, kind=kind, config=name, fwd_kernel_ms=fwd, public_fwd_bwd_ms=fbt, bitwise_equal_to_fused=same)
        rows.append(row)
        print(f"{str(shape):20s} causal={causal!s:5s} {kind:9s} {name:12s} fwd {fwd*1e3:7.1f} us  public f+b {fbt*1e3:7.1f} us  equal={same}", flush=True)
json.dump(dict(device=torch.cuda.get_device_name(), torch=torch.__version__, commit=os.environ.get("FLASHMARKOV_COMMIT"), rows=rows),
          open(f"{out}/diffmax-split-probe.json", "w"), indent=1)
