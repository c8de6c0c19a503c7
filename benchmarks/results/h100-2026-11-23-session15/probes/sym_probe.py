"""Symmetric M·V with FOLD: configs vs the plain default (G pairs/s = N² / ms / 1e6)."""
import sys, json, os, torch, triton.testing as tt
from flashmarkov.diffusion import tiles
orig = tiles.pick_config
CFGS = [(128, 128, 8, 3, None), (128, 128, 8, 2, None), (128, 64, 4, 3, None), (128, 64, 4, 2, 168), (128, 64, 4, 2, None), (64, 64, 4, 3, None), (64, 64, 4, 4, None), (128, 128, 8, 2, 128)]
res = []
for n in [int(a) for a in sys.argv[1:]] or [65536, 262144]:
    for d in (3, 16):
        g = torch.Generator(device="cuda").manual_seed(0)
        X = torch.randn(n, d, device="cuda", generator=g); X -= X.mean(0)
        V = torch.randn(n, 16, device="cuda", generator=g)
        r = torch.rand(n, device="cuda", generator=g) + 0.5
        beta = 1.0 / (2 * d)
        tiles.pick_config = orig
        ref = tiles.gaussian_matmat(X, X, V, beta, row_scale=r, col_scale=r)
        plain = lambda: tiles.gaussian_matmat(X, X, V, beta, row_scale=r, col_scale=r)
        for rnd in range(1):
            tiles.pick_config = orig
            ms = tt.do_bench(plain, warmup=10, rep=300)
            res.append(dict(n=n, d=d, cfg="plain-default", ms=ms, gps=n * n / ms / 1e6))
            print(f"N={n} d={d} plain default {ms:.3f} ms {n*n/ms/1e6:.0f}", flush=True)
            for bm, bn, w, st, mr in CFGS:
                c = tiles.TileConfig(bm, bn, w, st, mr)
                tiles.pick_config = lambda j, *a, c=c: c if j == "sym" else orig(j, *a)
                f = lambda: tiles.gaussian_matmat_sym(X, V, beta, scale=r)
                try:
                    out = f()
                    err = ((out - ref).norm() / ref.norm()).item()
                    ms = tt.do_bench(f, warmup=10, rep=300)
                except Exception as e:
                    print(f"N={n} d={d} sym {bm}x{bn} w{w} s{st} failed {type(e).__name__} {str(e)[:120]}", flush=True)
                    continue
                res.append(dict(n=n, d=d, cfg=f"sym {bm}x{bn} w{w} s{st} r{mr}", ms=ms, gps=n * n / ms / 1e6, err=err))
                print(f"N={n} d={d} sym {bm}x{bn} w{w} s{st} r{mr} {ms:.3f} ms {n*n/ms/1e6:.0f} G pairs/s err {err:.2e}", flush=True)
tiles.pick_config = orig
os.makedirs(os.environ.get("OUT", "."), exist_ok=True)
json.dump(res, open(os.path.join(os.environ.get("OUT", "."), "sym_probe.json"), "w"), indent=1)
