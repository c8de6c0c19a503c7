"""Tile-shape sweep for the scan kernels on the present GPU (a development tool; the benchmark
against peers is ``flashmarkov bench scan``). Times forward and backward launches directly for
several ScanConfigs per case and prints the fraction of the copy-bandwidth floor of each."""

from __future__ import annotations

import argparse
import json
import os

import torch
import triton

from flashmarkov.scan import kernels

CASES = [  # (B, D, T)
    (2, 256, 65536),
    (8, 1536, 4096),
    (16, 2048, 2048),
    (1, 64, 2**20),
]
TIME_CONTIG = {  # (BLOCK_T, BLOCK_Q, num_warps)
    4: [(1024, 2, 4), (2048, 2, 8), (2048, 2, 4), (512, 4, 4), (1024, 4, 8), (4096, 2, 8)],
    2: [(1024, 2, 4), (2048, 2, 8), (2048, 2, 4), (512, 4, 4), (1024, 4, 8), (4096, 2, 8)],
}
CHANNEL_CONTIG = {  # sliced tiles: (BLOCK_T, BLOCK_Q, num_warps, slice_k, slice_keep)
    4: [(128, 32, 4, 8, 1), (256, 32, 4, 16, 0), (64, 32, 4, 4, 1), (256, 64, 8, 8, 1)],
    2: [(128, 32, 4, 8, 1), (256, 64, 4, 16, 0), (128, 64, 4, 8, 1), (64, 64, 4, 4, 1)],
}


def parse_config(values: tuple[int, ...]) -> kernels.ScanConfig:
    """(BLOCK_T, BLOCK_Q, num_warps[, slice_k[, slice_keep[, lookback[, prefetch[, window[, stages]]]]]]) -> ScanConfig;
    lookback 1 / 0 forces the look-back / one program per chain, -1 (default) lets the launcher
    decide; prefetch 1 (default) / 0; window 1 / 0 / -1 (default: forward passes only) sets
    ScanConfig.lookback_window; stages (default 1) sets ScanConfig.stages."""
    bt, bq, w, *rest = values
    lookback = {1: True, 0: False}.get(rest[2]) if len(rest) > 2 else None
    return kernels.ScanConfig(bt, bq, w, lookback=lookback, slice_k=rest[0] if rest else 1,
                              slice_keep=bool(rest[1]) if len(rest) > 1 else True, prefetch=bool(rest[3]) if len(rest) > 3 else True,
                              lookback_window={1: True, 0: False}.get(rest[4]) if len(rest) > 4 else None,
                              stages=rest[5] if len(rest) > 5 else 1)


def copy_bandwidth() -> float:
    src = torch.empty(2**28, dtype=torch.float32, device="cuda").uniform_()
    dst = torch.empty_like(src)
    ms = triton.testing.do_bench(lambda: dst.copy_(src), return_mode="median")
    return 2 * src.numel() * 4 / (ms * 1e-3)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.environ.get("OUT", "."))
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--case", type=int, default=None, help="run only case N (0-15), for one process per case")
    ap.add_argument("--configs", default=None, help="BT,BQ,W[,K[,KEEP[,LOOKBACK[,PREFETCH[,WINDOW[,STAGES]]]]]];... instead of the built-in lists")
    ap.add_argument("--layout", choices=["bdt", "btd"], default=None, help="only this layout")
    ap.add_argument("--shapes", default=None, help="comma-separated indices into CASES")
    ap.add_argument("--sizes", default=None, help="B,D,T;... shapes of one's own instead of CASES (--case and --shapes index CASES)")
    ap.add_argument("--dtypes", default="float32,bfloat16")
    ap.add_argument("--default-only", action="store_true", help="time pick_config's tile only")
    ap.add_argument("--gluon", default=None,
                    help="BQ,VEC,K,W;... Gluon forward walk tiles (gluon_walk: channels, channels per thread, steps per row, warps) "
                         "timed on the 16-bit (B,T,D) cases after the Triton tiles")
    args = ap.parse_args()
    bw = copy_bandwidth()
    print(f"{torch.cuda.get_device_name()}: copy bandwidth {bw / 1e12:.3f} TB/s", flush=True)
    rows = []
    sizes = [tuple(int(v) for v in t.split(",")) for t in args.sizes.split(";")] if args.sizes else CASES
    cases = [(c, d, l) for c in sizes for d in (torch.float32, torch.bfloat16) for l in ("bdt", "btd")]
    if args.case is not None:
        cases = [cases[args.case]]
    shapes = [CASES[int(i)] for i in args.shapes.split(",")] if args.shapes else sizes
    dtypes = [getattr(torch, d) for d in args.dtypes.split(",")]
    cases = [(c, d, l) for c, d, l in cases if c in shapes and d in dtypes and l == (args.layout or l)]
    for (B, D, T), dtype, layout in cases:
        shape, dim = ((B, D, T), 2) if layout == "bdt" else ((B, T, D), 1)
        g = (0.9 + 0.1 * torch.rand(shape, device="cuda")).to(dtype)
        x = torch.randn(shape, device="cuda", dtype=dtype)
        dy = torch.randn_like(x)
        y, dx, dg = torch.empty_like(x), torch.empty_like(x), torch.empty_like(x)
        view = kernels.view_of(x, dim)
        itemsize = x.element_size()
        floor_ms = x.numel() * itemsize / bw * 1e3
        table = (TIME_CONTIG if view.s_t == 1 else CHANNEL_CONTIG)[itemsize]
        if args.configs:
            table = [tuple(int(v) for v in c.split(",")) for c in args.configs.split(";")]
        default = kernels.pick_config(view.T, view.Q, itemsize, view.s_t == 1, False)
        configs = [default] + [c for c in (parse_config(t) for t in table) if c != default]
        if args.default_only:
            configs = [default]
        if args.quick:
            configs = configs[:2]
        for cfg in configs:
            if cfg.block_t > 2 * T:
                continue
            run_cfg = None if cfg == default else cfg  # the default goes through the launcher's own choice (fwd / bwd / look-back tiles)
            fwd = lambda: kernels.scan_launch(g, x, y, view, reverse=False, initial_state=None, state_out=None, cu_seqlens=None, config=run_cfg)
            bwd = lambda: kernels.scan_launch(g, dy, dx, view, reverse=False, initial_state=None, state_out=None, cu_seqlens=None, y=y, dgates=dg, config=run_cfg)
            try:
                k_f, k_b = fwd(), bwd()
                t_f = triton.testing.do_bench(fwd, warmup=10, rep=50, return_mode="median")
                t_b = triton.testing.do_bench(bwd, warmup=10, rep=50, return_mode="median")
            except Exception as e:  # a config that does not compile is reported, not fatal
                print("FAILED", shape, dtype, cfg, repr(e)[:200])
                continue
            rec = dict(shape=list(shape), layout=layout, dtype=str(dtype),
                       config=[cfg.block_t, cfg.block_q, cfg.num_warps] + ([cfg.slice_k, int(cfg.slice_keep)] if view.s_t != 1 else [])
                       + [-1 if cfg.lookback is None else int(cfg.lookback), int(cfg.prefetch),
                          -1 if cfg.lookback_window is None else int(cfg.lookback_window), cfg.stages],
                       default=cfg == default, fwd_ms=t_f, bwd_ms=t_b,
                       fwd_frac=3 * floor_ms / t_f, bwd_frac=5 * floor_ms / t_b, fwdbwd_frac=8 * floor_ms / (t_f + t_b),
                       regs=[k_f.n_regs, k_b.n_regs], spills=[k_f.n_spills, k_b.n_spills])
            rows.append(rec)
            print(f"{layout} {str(shape):22s} {str(dtype)[6:]:9s} {str(rec['config']):22s} {'*' if rec['default'] else ' '} "
                  f"fwd {t_f:7.4f} ms {rec['fwd_frac']:.3f}   bwd {t_b:7.4f} ms {rec['bwd_frac']:.3f}   f+b {rec['fwdbwd_frac']:.3f}"
                  f"  regs {rec['regs']} spills {rec['spills']}", flush=True)
        if args.gluon and view.s_t != 1 and itemsize == 2:
            from flashmarkov.scan import gluon_walk

            for text in args.gluon.split(";"):
                gcfg = tuple(int(v) for v in text.split(","))
                fwd = lambda gcfg=gcfg: gluon_walk.walk_fwd_launch(g, x, y, view.P, view.T, view.Q, view.s_p, view.s_t,
                                                                   None, None, tile=gcfg)
                try:
                    k_f = fwd()
                    t_f = triton.testing.do_bench(fwd, warmup=10, rep=50, return_mode="median")
                except Exception as e:
                    print("FAILED gluon", shape, dtype, gcfg, repr(e)[:200])
                    continue
                rows.append(dict(shape=list(shape), layout=layout, dtype=str(dtype), gluon=list(gcfg), fwd_ms=t_f,
                                 fwd_frac=3 * floor_ms / t_f, regs=k_f.n_regs, spills=k_f.n_spills))
                print(f"{layout} {str(shape):22s} {str(dtype)[6:]:9s} gluon {str(list(gcfg)):14s} fwd {t_f:7.4f} ms "
                      f"{3 * floor_ms / t_f:.3f}  regs {k_f.n_regs} spills {k_f.n_spills}", flush=True)
    name = "scan_tune.json" if args.case is None else f"scan_tune_{args.case}.json"
    with open(os.path.join(args.out, name), "w") as f:
        json.dump(dict(gpu=torch.cuda.get_device_name(), copy_Bps=bw, rows=rows), f, indent=1)
    print("\nfraction of the copy floor per case: default tile fwd / bwd / fwd+bwd, then the best tile of each")
    keys = sorted({(tuple(r["shape"]), r["layout"], r["dtype"]) for r in rows})
    for k in keys:
        rs = [r for r in rows if (tuple(r["shape"]), r["layout"], r["dtype"]) == k and "gluon" not in r]
        bf = max(rs, key=lambda r: r["fwd_frac"]); bb = max(rs, key=lambda r: r["bwd_frac"])
        d = next((r for r in rs if r["default"]), None)
        dd = f"{d['fwd_frac']:.3f} / {d['bwd_frac']:.3f} / {d['fwdbwd_frac']:.3f}" if d else "failed"
        print(f"{k[1]} {str(k[0]):20s} {k[2][6:]:9s} default {dd}   best fwd {bf['fwd_frac']:.3f} {bf['config']}"
              f"  best bwd {bb['bwd_frac']:.3f} {bb['config']}")


if __name__ == "__main__":
    main()
