"""Tile sweep of the plain M·V (k = 16) at d = 16 / 3 with the current kernel; error vs float64 rows."""
import json, os, torch, triton.testing as tt
from flashmarkov.bench.diffusion import _flashmarkov, make_inputs
from flashmarkov.bench.registry import Case
from flashmarkov.diffusion import tiles
orig = tiles.pick_config
CFGS = [(128, 64, 4, 3, 128), (128, 64, 4, 3, None), (128, 64, 4, 2, 128), (128, 64, 4, 4, 128), (64, 64, 4, 3, None),
        (64, 64, 4, 4, None), (128, 128, 8, 2, None), (64, 128, 4, 3, None), (128, 32, 4, 3, None)]
res = []
for n, d in [(65536, 16), (262144, 16), (262144, 3)]:
    x = make_inputs(Case("diffusion", "MV", "fwd", "float32", (n, d, 16), n, False), torch.device("cuda"), 0)
    for rnd in range(2):
        for c in CFGS:
            cfg = tiles.TileConfig(*c)
            tiles.pick_config = lambda j, *a, c=cfg: c if j == "matmat" else orig(j, *a)
            try:
                ms = tt.do_bench(lambda: _flashmarkov(x.X, x.V, x.r, x.beta), warmup=20, rep=300)
            except Exception as e:
                print(n, d, c, "failed", type(e).__name__); continue
            res.append((n, d, c, ms, n * n / ms / 1e6))
            print(f"r{rnd} {n}x{d} {c}: {ms:.3f} ms {n*n/ms/1e6:.0f} G pairs/s", flush=True)
    tiles.pick_config = orig
json.dump(res, open(os.path.join(os.environ.get("OUT", "/tmp"), "dmv_tune.json"), "w"))
