"""Symmetric M·V (relaxed atomics, FOLD): small row blocks for 4 programs per SM."""
import sys, json, os, torch, triton.testing as tt
from flashmarkov.diffusion import tiles
orig = tiles.pick_config
res = []
CFGS = [(64, 64, 4, 2, None), (64, 64, 4, 3, None), (64, 32, 4, 2, None), (64, 32, 4, 3, None), (128, 64, 4, 3, None)]
if os.environ.get("DEFAULT_ONLY"):
    CFGS = [(64, 64, 4, 2, None)]
def bench(name, f, n, d, ref):
    out = f()
    err = ((out - ref).norm() / ref.norm()).item()
    ms = tt.do_bench(f, warmup=10, rep=300)
    res.append(dict(n=n, d=d, cfg=name, ms=ms, gps=n * n / ms / 1e6, err=err))
    print(f"N={n} d={d} {name:28s} {ms:8.3f} ms {n*n/ms/1e6:6.0f} G pairs/s err {err:.2e}", flush=True)
R = int(os.environ.get("ROUNDS", "1"))
for n, d, rounds in ((262144, 16, 2 * R), (262144, 3, R), (65536, 16, R), (65536, 3, R), (16384, 16, R)):
    g = torch.Generator(device="cuda").manual_seed(0)
    X = torch.randn(n, d, device="cuda", generator=g); X -= X.mean(0)
    V = torch.randn(n, 16, device="cuda", generator=g)
    r = torch.rand(n, device="cuda", generator=g) + 0.5
    beta = 1.0 / (2 * d)
    ref = tiles.gaussian_matmat(X, X, V, beta, row_scale=r, col_scale=r)
    for _ in range(rounds):
        bench("plain default", lambda: tiles.gaussian_matmat(X, X, V, beta, row_scale=r, col_scale=r), n, d, ref)
        for bm, bn, w, st, mr in CFGS:
            c = tiles.TileConfig(bm, bn, w, st, mr)
            tiles.pick_config = lambda j, *a, c=c: c if j == "sym" else orig(j, *a)
            try:
                bench(f"sym {bm}x{bn} w{w} s{st} r{mr}", lambda: tiles.gaussian_matmat_sym(X, V, beta, scale=r), n, d, ref)
            except Exception as e:
                print("failed", bm, bn, w, st, mr, type(e).__name__, str(e)[:100])
            tiles.pick_config = orig
json.dump(res, open(os.path.join(os.environ.get("OUT", "."), "sym3_probe.json"), "w"), indent=1)
