"""diffusion M·V, k = 16: tile shapes beyond TUNE_CONFIGS. python dmv_tiles.py {first|second}: "first" (256-row tiles on
8 warps, 128 x 128 on 4 and 8, 4 stages; d = 16) writes diffusion-tiles-d16-probe.json, "second" (128 x 128 on 4 warps at
register caps, 64 x 128; d = 16, 3, 8; prints each compiled kernel's registers) diffusion-tiles-d16-probe2.json."""
import json, os, sys, torch, triton.testing as tt
from flashmarkov.bench.diffusion import Case, make_inputs, _flashmarkov
from flashmarkov.diffusion import tiles
out = os.environ.get("OUT", "/tmp")
orig = tiles.pick_config
C = tiles.TileConfig
SETS = {  # name: (configs, (N, d) cases, output file)
    "first": ([("default", None), ("256x64w8s3r128", C(256, 64, 8, 3, 128)), ("256x64w8s2r128", C(256, 64, 8, 2, 128)),
               ("256x64w8s3", C(256, 64, 8, 3)), ("128x128w4s3", C(128, 128, 4, 3)), ("128x128w4s2", C(128, 128, 4, 2)),
               ("128x64w4s4r128", C(128, 64, 4, 4, 128)), ("128x128w8s3", C(128, 128, 8, 3)), ("default-again", None)],
              ((262144, 16), (65536, 16)), "diffusion-tiles-d16-probe.json"),
    "second": ([("default", None), ("128x128w4s3", C(128, 128, 4, 3)), ("128x128w4s3r168", C(128, 128, 4, 3, 168)),
                ("128x128w4s4", C(128, 128, 4, 4)), ("128x128w4s3r128", C(128, 128, 4, 3, 128)), ("64x128w4s3r128", C(64, 128, 4, 3, 128)),
                ("128x128w4s3-again", C(128, 128, 4, 3)), ("default-again", None)],
               ((262144, 16), (65536, 16), (262144, 3), (65536, 3), (65536, 8)), "diffusion-tiles-d16-probe2.json"),
}
cfgs, cases, out_name = SETS[sys.argv[1] if len(sys.argv) > 1 else "second"]
rows = []
for n, d in cases:
    x = make_inputs(Case("diffusion", "MV", "fwd", "float32", (n, d, 16), n, False), torch.device("cuda"), 0)
    ref = None
    for name, cfg in cfgs:
        tiles.pick_config = orig if cfg is None else (lambda j, *a, c=cfg: c if j == "matmat" else orig(j, *a))
        try:
            y = _flashmarkov(x.X, x.V, x.r, x.beta)
            if ref is None:
                ref = y
            err = float((y - ref).norm() / ref.norm())
            ms = tt.do_bench(lambda: _flashmarkov(x.X, x.V, x.r, x.beta), warmup=10, rep=100, return_mode="median")
        except Exception as exc:
            print(f"N={n} {name}: failed {type(exc).__name__}: {str(exc)[:100]}", flush=True)
            continue
        rows.append(dict(n=n, d=d, k=16, config=name, ms=ms, gpairs=n * n / ms / 1e6, rel_diff=err))
        print(f"N={n:>7d} d={d:>2d} {name:18s} {ms:8.3f} ms {n * n / ms / 1e6:7.0f} G pairs/s diff {err:.1e}", flush=True)
tiles.pick_config = orig
try:
    for ck in list(tiles._gaussian_tiles_kernel.device_caches[0][0].values()):
        md = ck.metadata
        consts = getattr(ck.src, "constants", {}) or {}
        names = tiles._gaussian_tiles_kernel.arg_names
        cv = {names[k[0]] if isinstance(k, tuple) else k: v for k, v in consts.items()}
        keep = {k: cv[k] for k in ("BLOCK_M", "BLOCK_N", "BLOCK_D", "BLOCK_V", "MASK_SPLIT", "FOLD", "SAME") if k in cv}
        print("kernel warps", md.num_warps, "stages", md.num_stages, "regs", ck.n_regs, "spills", ck.n_spills, "smem", md.shared, keep)
except Exception as exc:
    print("no kernel list:", type(exc).__name__, exc)
json.dump(dict(device=torch.cuda.get_device_name(), rows=rows), open(f"{out}/{out_name}", "w"), indent=1)
