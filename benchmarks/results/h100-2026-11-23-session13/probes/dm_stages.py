"""diffmax attention forward kernel time: 128-row tiles (4 warps) vs 256-row tiles (8 warps)."""
import json, os, dataclasses, torch, triton.testing as tt
from flashmarkov.diffmax import attention as A
out = os.environ.get("OUT", "/tmp")
cfgs = {"128x64w4s3": A.AttnConfig(128, 64, 4, 3, 0, 8), "128x64w4s4": A.AttnConfig(128, 64, 4, 4, 0, 8),
        "128x64w4s2": A.AttnConfig(128, 64, 4, 2, 0, 8), "128x64w4s3-again": A.AttnConfig(128, 64, 4, 3, 0, 8)}
rows = []
gen = torch.Generator(device="cuda").manual_seed(0)
for shape, causal in [((1, 16, 4096, 64), False), ((1, 16, 4096, 64), True), ((1, 8, 16384, 64), True)]:
    q, k, v = (torch.randn(shape, generator=gen, device="cuda").bfloat16() for _ in range(3))
    sc = shape[-1] ** -0.5
    ref = None
    for name, cfg in cfgs.items():
        f = lambda: A.attention_fwd_launch(q, k, v, 0.5, causal, sc, (-1, -1), 50, cfg)
        o = f()[0]
        if ref is None:
            ref = o.float()
        err = float(((o.float() - ref).norm() / ref.norm()))
        ms = tt.do_bench(f, warmup=50, rep=300, return_mode="median")
        rows.append(dict(shape=list(shape), causal=causal, config=name, fwd_kernel_ms=ms, rel_diff_vs_first=err))
        print(f"{str(shape):20s} causal={causal!s:5s} {name:12s} fwd {ms*1e3:7.1f} us  o diff {err:.2e}", flush=True)
json.dump(dict(device=torch.cuda.get_device_name(), rows=rows), open(f"{out}/diffmax-stages-probe.json", "w"), indent=1)
