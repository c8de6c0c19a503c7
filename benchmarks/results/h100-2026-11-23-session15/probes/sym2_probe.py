"""Symmetric M·V (relaxed atomics, FOLD): is the transposed side's atomic traffic the bound?"""
import sys, json, os, torch, triton.testing as tt
from flashmarkov.diffusion import tiles, _var_store
orig = tiles.pick_config
res = []
def bench(name, f, n, ref):
    out = f()
    err = ((out - ref).norm() / ref.norm()).item()
    ms = tt.do_bench(f, warmup=10, rep=300)
    res.append(dict(n=n, d=d, cfg=name, ms=ms, gps=n * n / ms / 1e6, err=err))
    print(f"N={n} d={d} {name:28s} {ms:8.3f} ms {n*n/ms/1e6:6.0f} G pairs/s err {err:.2e}", flush=True)
for n in (262144,):
    for d in (16, 3):
        g = torch.Generator(device="cuda").manual_seed(0)
        X = torch.randn(n, d, device="cuda", generator=g); X -= X.mean(0)
        V = torch.randn(n, 16, device="cuda", generator=g)
        r = torch.rand(n, device="cuda", generator=g) + 0.5
        beta = 1.0 / (2 * d)
        ref = tiles.gaussian_matmat(X, X, V, beta, row_scale=r, col_scale=r)
        bench("plain default", lambda: tiles.gaussian_matmat(X, X, V, beta, row_scale=r, col_scale=r), n, ref)
        bench("sym default", lambda: tiles.gaussian_matmat_sym(X, V, beta, scale=r), n, ref)
        bench("sym store (racy)", lambda: _var_store._launch_matmat_sym(X, V, beta, scale=r, sigma=None), n, ref)
        for bm, bn, w, st, mr in [(256, 64, 8, 3, None), (256, 64, 8, 2, None), (128, 32, 4, 3, None), (128, 64, 4, 4, None), (128, 64, 4, 3, 200), (128, 64, 4, 2, 168)]:
            c = tiles.TileConfig(bm, bn, w, st, mr)
            tiles.pick_config = lambda j, *a, c=c: c if j == "sym" else orig(j, *a)
            try:
                bench(f"sym {bm}x{bn} w{w} s{st} r{mr}", lambda: tiles.gaussian_matmat_sym(X, V, beta, scale=r), n, ref)
            except Exception as e:
                print("failed", bm, bn, w, st, mr, type(e).__name__, str(e)[:100])
            tiles.pick_config = orig
json.dump(res, open(os.path.join(os.environ.get("OUT", "."), "sym2_probe.json"), "w"), indent=1)
