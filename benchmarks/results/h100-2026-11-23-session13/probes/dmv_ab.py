"""diffusion M·V d = 16, k = 16: default tile vs 128 x 128 on 4 warps (3 and 4 stages), interleaved rounds (A/B/C × R)."""
import json, os, statistics, torch, triton.testing as tt
from flashmarkov.bench.diffusion import Case, make_inputs, _flashmarkov
from flashmarkov.diffusion import tiles
out = os.environ.get("OUT", "/tmp")
orig = tiles.pick_config
C = tiles.TileConfig
cfgs = [("default", None), ("128x128w4s4", C(128, 128, 4, 4)), ("128x128w4s3", C(128, 128, 4, 3))]
rows = []
for n, rounds in ((262144, 6), (65536, 10)):
    x = make_inputs(Case("diffusion", "MV", "fwd", "float32", (n, 16, 16), n, False), torch.device("cuda"), 0)
    res = {name: [] for name, _ in cfgs}
    for r in range(rounds):
        for name, cfg in cfgs:
            tiles.pick_config = orig if cfg is None else (lambda j, *a, c=cfg: c if j == "matmat" else orig(j, *a))
            ms = tt.do_bench(lambda: _flashmarkov(x.X, x.V, x.r, x.beta), warmup=10, rep=150, return_mode="median")
            res[name].append(n * n / ms / 1e6)
            rows.append(dict(n=n, d=16, k=16, config=name, round=r, ms=ms, gpairs=n * n / ms / 1e6))
    for name, v in res.items():
        print(f"N={n:>7d} {name:12s} median {statistics.median(v):6.0f} min {min(v):6.0f} max {max(v):6.0f} G pairs/s  " + " ".join(f"{t:.0f}" for t in v), flush=True)
tiles.pick_config = orig
json.dump(dict(device=torch.cuda.get_device_name(), rows=rows), open(f"{out}/diffusion-d16-tile-ab.json", "w"), indent=1)
