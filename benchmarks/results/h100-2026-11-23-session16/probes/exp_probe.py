"""Diffusion M·V (gaussian_matmat, float32, k = 16) with FM_EXP_SPLIT=0 (every exponential on the MUFU) or 1 (half
on the FMA pipe, tiles._exp2_fma): G pairs/s = N² / s / 1e9, and the relative error against float64."""
import json, os, sys, torch, triton.testing as tt
from flashmarkov.diffusion import tiles
mode = os.environ.get("FM_EXP_SPLIT", "0")
tag = sys.argv[1] if len(sys.argv) > 1 else mode
res = []
for n in (20000, 65536, 262144):
    for d in (3, 16):
        g = torch.Generator(device="cuda").manual_seed(0)
        X = torch.randn(n, d, device="cuda", generator=g); X -= X.mean(0)
        V = torch.randn(n, 16, device="cuda", generator=g)
        r = torch.rand(n, device="cuda", generator=g) + 0.5
        for beta in ((1.0 / (2 * d), 2.0) if n == 20000 else (1.0 / (2 * d),)):
            f = lambda: tiles.gaussian_matmat(X, X, V, beta, row_scale=r, col_scale=r)
            rec = dict(mode=mode, n=n, d=d, beta=beta)
            if n == 20000:
                ref = tiles.gaussian_matmat(X.double(), X.double(), V.double(), beta, row_scale=r.double(), col_scale=r.double())
                rec["rel_err"] = ((f().double() - ref).norm() / ref.norm()).item()
                rec["max_rel_row_err"] = ((f().double() - ref).norm(dim=1) / ref.norm(dim=1)).max().item()
            else:
                ms = tt.do_bench(f, warmup=100, rep=500)
                rec.update(ms=ms, gps=n * n / ms / 1e6)
            res.append(rec)
            print(tag, rec, flush=True)
json.dump(res, open(os.path.join(os.environ.get("OUT", "."), f"exp_probe_{tag}.json"), "w"), indent=1)
