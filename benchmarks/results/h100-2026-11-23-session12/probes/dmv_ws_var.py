"""tiles_sm90 variants (consumer warpgroups, key tile, ring depth) against the Triton kernel."""
import json, os, torch, triton.testing as tt
from flashmarkov.bench.diffusion import _flashmarkov, make_inputs
from flashmarkov.bench.registry import Case
from flashmarkov.diffusion import tiles, tiles_sm90
VARS = [(2, 128, 3), (3, 64, 3), (2, 64, 4), (3, 128, 2), (2, 128, 2)]
res = []
for n, d in [(262144, 16), (262144, 3), (65536, 16)]:
    x = make_inputs(Case("diffusion", "MV", "fwd", "float32", (n, d, 16), n, False), torch.device("cuda"), 0)
    tiles_sm90.ENABLED = False
    base = _flashmarkov(x.X, x.V, x.r, x.beta)
    for rnd in range(2):
        tiles_sm90.ENABLED = False
        ms = tt.do_bench(lambda: _flashmarkov(x.X, x.V, x.r, x.beta), warmup=20, rep=300)
        print(f"r{rnd} {n}x{d} triton: {ms:.3f} ms {n*n/ms/1e6:.0f}", flush=True); res.append((n, d, "triton", ms))
        tiles_sm90.ENABLED = True
        for wg, bn, st in VARS:
            tiles_sm90.NUM_WG, tiles_sm90.BLOCK_N, tiles_sm90.STAGES = wg, bn, st
            try:
                out = _flashmarkov(x.X, x.V, x.r, x.beta)
                diff = ((out - base).norm() / base.norm()).item()
                ms = tt.do_bench(lambda: _flashmarkov(x.X, x.V, x.r, x.beta), warmup=20, rep=300)
            except Exception as e:
                print(n, d, (wg, bn, st), "failed", repr(e)[:300], flush=True); continue
            print(f"r{rnd} {n}x{d} gluon wg{wg} bn{bn} st{st}: {ms:.3f} ms {n*n/ms/1e6:.0f}  vs triton {diff:.1e}", flush=True)
            res.append((n, d, (wg, bn, st), ms, diff))
json.dump(res, open(os.path.join(os.environ.get("OUT", "/tmp"), "dmv_ws_var.json"), "w"))
