"""Plain M·V (k = 16) with 0, 1, 2 of every 4 exponentials on the FMA pipes; error vs float64 rows."""
import json, os, torch, triton.testing as tt
from flashmarkov.bench.diffusion import _flashmarkov, make_inputs
from flashmarkov.bench.registry import Case
from flashmarkov.diffusion import tiles
orig = tiles.pick_config
res = []
for rnd in range(2):
    for n, d in [(65536, 3), (65536, 16), (262144, 3), (262144, 16)]:
        x = make_inputs(Case("diffusion", "MV", "fwd", "float32", (n, d, 16), n, False), torch.device("cuda"), 0)
        rows = 2048
        Xd = x.X.double(); rd = x.r.double()
        K = torch.exp(-x.beta * torch.cdist(Xd[:rows], Xd) ** 2)
        ref = rd[:rows, None] * (K @ (rd[:, None] * x.V.double()))
        for fma, cap in [(0, 128), (1, 128), (1, None), (2, 128)]:
            cfg = tiles.TileConfig(128, 64, 4, 3, cap, fma)
            tiles.pick_config = lambda j, *a, c=cfg: c if j == "matmat" else orig(j, *a)
            out = _flashmarkov(x.X, x.V, x.r, x.beta)
            err = ((out[:rows].double() - ref).norm() / ref.norm()).item()
            ms = tt.do_bench(lambda: _flashmarkov(x.X, x.V, x.r, x.beta), warmup=30, rep=400)
            res.append((rnd, n, d, fma, cap, ms, n * n / ms / 1e6, err))
            print(f"r{rnd} {n}x{d} fma{fma} cap{cap}: {ms:.3f} ms {n*n/ms/1e6:.0f} G pairs/s err {err:.2e}", flush=True)
        tiles.pick_config = orig
json.dump(res, open(os.path.join(os.environ.get("OUT", "/tmp"), "dmv_fma.json"), "w"))
