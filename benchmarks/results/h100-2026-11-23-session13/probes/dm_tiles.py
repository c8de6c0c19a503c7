"""diffmax attention forward kernel time for one set of tile configurations (the first of each set is the default):
python dm_tiles.py {tall|wide|stages}; writes $OUT/diffmax-tiles-probe.json, -probe2.json or diffmax-stages-probe.json."""
import json, os, sys, torch, triton.testing as tt
from flashmarkov.diffmax import attention as A
out = os.environ.get("OUT", "/tmp")
C = A.AttnConfig
SETS = {  # name: (configs, output file)
    "tall": ({"128x64w4": C(128, 64, 4, 3, 0, 8), "256x64w8": C(256, 64, 8, 3, 0, 8), "256x64w8s2": C(256, 64, 8, 2, 0, 8),
              "128x64w8": C(128, 64, 8, 3, 0, 8)}, "diffmax-tiles-probe.json"),
    "wide": ({"128x64w4": C(128, 64, 4, 3, 0, 8), "64x128w4": C(64, 128, 4, 3, 0, 8), "128x128w8": C(128, 128, 8, 3, 0, 8),
              "64x64w4": C(64, 64, 4, 3, 0, 8), "64x128w4s2": C(64, 128, 4, 2, 0, 8)}, "diffmax-tiles-probe2.json"),
    "stages": ({"128x64w4s3": C(128, 64, 4, 3, 0, 8), "128x64w4s4": C(128, 64, 4, 4, 0, 8), "128x64w4s2": C(128, 64, 4, 2, 0, 8),
                "128x64w4s3-again": C(128, 64, 4, 3, 0, 8)}, "diffmax-stages-probe.json"),
}
cfgs, out_name = SETS[sys.argv[1] if len(sys.argv) > 1 else "tall"]
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
json.dump(dict(device=torch.cuda.get_device_name(), rows=rows), open(f"{out}/{out_name}", "w"), indent=1)
