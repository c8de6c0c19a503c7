"""Gluon warp-specialised M·V (tiles_sm90) against the Triton kernel: agreement, error vs float64 rows, time."""
import json, os, torch, triton.testing as tt
from flashmarkov.bench.diffusion import _flashmarkov, make_inputs
from flashmarkov.bench.registry import Case
from flashmarkov.diffusion import tiles, tiles_sm90
res = []
def ref_rows(X, V, beta, r, cs, rows):
    Xd = X.double()
    K = torch.exp(-beta * torch.cdist(Xd[:rows], Xd) ** 2)
    W = V.double() * (cs.double()[:, None] if cs is not None else 1.0)
    out = K @ W
    return out * (r.double()[:rows, None] if r is not None else 1.0)
# correctness on odd shapes first
g = torch.Generator(device="cuda").manual_seed(0)
for n, d, m, beta, scales in [(40000, 5, 7, 0.1, True), (33000, 16, 20, 0.03, False), (50001, 3, 1, 300.0, True), (40000, 2, 16, 1e-7, True)]:
    X = torch.randn(n, d, device="cuda", generator=g); V = torch.randn(n, m, device="cuda", generator=g)
    r = (0.5 + torch.rand(n, device="cuda", generator=g)) if scales else None
    outs = {}
    for en in (False, True):
        tiles_sm90.ENABLED = en
        outs[en] = tiles.gaussian_matmat(X, X, V, beta, row_scale=r, col_scale=r)
    ref = ref_rows(X, V, beta, r, r, 2048)
    e = {en: ((o[:2048].double() - ref).norm() / ref.norm()).item() for en, o in outs.items()}
    diff = ((outs[True] - outs[False]).norm() / outs[False].norm()).item()
    rs = {}
    for en in (False, True):
        tiles_sm90.ENABLED = en
        rs[en] = tiles.gaussian_rowsum(X, X, beta, col_scale=r)
    rdiff = ((rs[True] - rs[False]).norm() / rs[False].norm()).item()
    print(f"check n={n} d={d} m={m} beta={beta}: err triton {e[False]:.2e} gluon {e[True]:.2e}; gluon vs triton {diff:.2e}; rowsum {rdiff:.2e}", flush=True)
    res.append(("check", n, d, m, beta, e[False], e[True], diff, rdiff))
for rnd in range(2):
    for n, d in [(65536, 3), (65536, 16), (262144, 3), (262144, 16)]:
        x = make_inputs(Case("diffusion", "MV", "fwd", "float32", (n, d, 16), n, False), torch.device("cuda"), 0)
        for en in (False, True):
            tiles_sm90.ENABLED = en
            ms = tt.do_bench(lambda: _flashmarkov(x.X, x.V, x.r, x.beta), warmup=20, rep=300)
            res.append(("time", rnd, n, d, en, ms, n * n / ms / 1e6))
            print(f"r{rnd} {n}x{d} {'gluon ' if en else 'triton'}: {ms:.3f} ms {n*n/ms/1e6:.0f} G pairs/s", flush=True)
json.dump(res, open(os.path.join(os.environ.get("OUT", "/tmp"), "dmv_ws.json"), "w"))
