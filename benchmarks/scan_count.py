"""Offline sm_90 compilation of the scan kernel (no GPU needed): PTX instructions per element,
registers and spills from the ptxas in Triton's wheel, and a hash of the PTX (to check that a
change leaves other variants' code untouched). A development tool; see notes/scan.md "Tools".

    PYTHONPATH=src python benchmarks/scan_count.py [--only btd] [--configs BT,BQ,W[,K];...]

Integer arguments get ``tt.divisibility = 16`` and the arguments a launch specialises to 1 (the
unit stride, P = 1 for (B, D, T), n_seq = 1) are passed as constants, as in a real launch.
Instructions are counted statically (every PTX instruction once, the unrolled slices included)
and divided by the elements a thread owns per tile.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import subprocess
import tempfile

import triton
import triton.language as tl
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from flashmarkov.scan import kernels

PTXAS = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "ptxas")
ITEMSIZE = {"fp16": 2, "bf16": 2, "fp32": 4, "fp64": 8}


def compile_variant(layout: str, dtype: str, cfg: kernels.ScanConfig, *, backward=False, reverse=False, lookback=False,
                    varlen=False, h0=False, hin=False, hout=False):
    """The compiled kernel for one variant (``triton.compile`` of the (P, T, Q) kernel for sm_90)."""
    time_contig = layout == "bdt"
    ptr, acc = "*" + dtype, ("*fp64" if dtype == "fp64" else "*fp32")
    arg_ptr = {"p_g": ptr, "p_x": ptr, "p_y": ptr, "p_yf": ptr if backward else None, "p_dg": ptr if backward else None,
               "p_h0": ptr if h0 else None, "p_hin": ptr if hin else None, "p_hout": ptr if hout else None,
               "p_cu": "*i32" if varlen else None, "p_flag": "*i32" if lookback else None, "p_ws": acc if lookback else None}
    ints = {"T": None, "P": 1 if time_contig else None, "Q": None, "s_p": None, "s_t": 1 if time_contig else None,
            "s_q": None if time_contig else 1, "n_qblk": None, "n_seg": None, "n_seq": None if varlen else 1}
    itemsize = ITEMSIZE[dtype]
    v = kernels.vector_steps(itemsize, time_contig)
    n_seq = 4 if varlen else 1
    consts = dict(
        ACC=tl.float64 if dtype == "fp64" else tl.float32, BLOCK_T=cfg.block_t, BLOCK_Q=cfg.block_q, V=v,
        SLICE_K=getattr(cfg, "slice_k", 1), SLICE_KEEP=getattr(cfg, "slice_keep", False) and not time_contig,
        PREFETCH=getattr(cfg, "prefetch", False) and not time_contig and not lookback,
        STAGES=1 if lookback else cfg.stages, SEARCH_STEPS=2 if varlen else 0, REVERSE=reverse, BACKWARD=backward,
        SCAN_REV=reverse != backward, VARLEN=varlen, LOOKBACK=lookback,
        LB_WINDOW=lookback and cfg.window(backward), POLL_LOAD=True,
        THREADS=32 * cfg.num_warps, HAS_H0=h0, HAS_HIN=hin, HAS_HOUT=hout,
    )
    sig, constexprs = {}, {}
    for name in kernels._linear_scan_kernel.arg_names:
        if name in arg_ptr:
            sig[name] = arg_ptr[name] or "constexpr"
            if arg_ptr[name] is None:
                constexprs[name] = None
        elif name in ints:
            sig[name] = "i32" if ints[name] is None else "constexpr"
            if ints[name] is not None:
                constexprs[name] = ints[name]
        else:
            sig[name] = "constexpr"
            constexprs[name] = consts[name]
    del n_seq
    attrs = {(i,): [["tt.divisibility", 16]] for i, n in enumerate(sig) if sig[n] != "constexpr"}
    src = ASTSource(kernels._linear_scan_kernel, sig, constexprs=constexprs, attrs=attrs)
    options = {"num_warps": cfg.num_warps}
    if getattr(cfg, "maxnreg", None):
        options["maxnreg"] = cfg.maxnreg
    return triton.compile(src, target=GPUTarget("cuda", 90, 32), options=options)


def measure(ck, cfg: kernels.ScanConfig) -> dict:
    ptx = ck.asm["ptx"]
    n = sum(1 for line in ptx.splitlines() if re.match(r"^\s+[a-z@]", line) and not line.strip().startswith("//"))
    with tempfile.NamedTemporaryFile("w", suffix=".ptx", delete=False) as f:
        f.write(ptx)
    out = subprocess.run([PTXAS, "--gpu-name", "sm_90a", "-v", f.name, "-o", os.devnull], capture_output=True, text=True).stderr
    os.unlink(f.name)
    regs = int(re.search(r"Used (\d+) registers", out).group(1))
    spill = re.search(r"(\d+) bytes spill stores", out)
    per_thread = cfg.block_t * cfg.block_q / (32 * cfg.num_warps)
    code = "\n".join(line for line in ptx.splitlines() if re.match(r"^\s+[a-z@]", line) and not line.strip().startswith("//"))
    return dict(instr=n, per_elem=n / per_thread, regs=regs, spills=int(spill.group(1)) if spill else 0,
                sha=hashlib.sha1(code.encode()).hexdigest()[:10])


VARIANTS = {  # name: flags
    "fwd": {}, "fwd-lb": dict(lookback=True), "fwd-rev": dict(reverse=True), "bwd": dict(backward=True),
    "bwd-lb": dict(backward=True, lookback=True), "fwd-state": dict(h0=True, hout=True),
    "bwd-state": dict(backward=True, h0=True, hin=True, hout=True), "fwd-varlen": dict(varlen=True, h0=True, hout=True),
}


def parse_config(text: str) -> kernels.ScanConfig:
    """BT,BQ,W[,K[,KEEP[,PREFETCH]]] -> ScanConfig (KEEP 1 / 0: sliced tiles keep the slices in
    registers; PREFETCH 1 / 0: load the next segment first)."""
    v = [int(x) for x in text.split(",")]
    return kernels.ScanConfig(v[0], v[1], v[2], slice_k=v[3] if len(v) > 3 else 1, slice_keep=bool(v[4]) if len(v) > 4 else True,
                              prefetch=bool(v[5]) if len(v) > 5 else True)


def default_configs(layout: str, dtype: str) -> list[kernels.ScanConfig]:
    itemsize = ITEMSIZE[dtype]
    tc = layout == "bdt"
    return [kernels.pick_config(4096, 2048, itemsize, tc, tile3) for tile3 in ((False, True) if tc else (False,))]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", choices=["bdt", "btd"], default=None)
    ap.add_argument("--dtypes", default="fp32,bf16,fp16,fp64")
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--configs", default=None, help="BT,BQ,W[,K[,KEEP[,PREFETCH]]];... instead of pick_config's")
    args = ap.parse_args()
    for layout in ("bdt", "btd"):
        if args.only and layout != args.only:
            continue
        for dtype in args.dtypes.split(","):
            cfgs = default_configs(layout, dtype)
            if args.configs:
                cfgs = [parse_config(c) for c in args.configs.split(";")]
            for cfg in cfgs:
                for name in args.variants.split(","):
                    flags = VARIANTS[name]
                    tile3 = layout == "bdt" and (flags.get("reverse", False) or flags.get("backward", False))
                    if layout == "bdt" and not args.configs and tile3 != (cfg is cfgs[-1] and len(cfgs) > 1):
                        continue
                    try:
                        r = measure(compile_variant(layout, dtype, cfg, **flags), cfg)
                    except Exception as e:  # report, keep going
                        print(f"{layout} {dtype:4s} {name:10s} {cfg} FAILED {str(e)[:300]}", flush=True)
                        continue
                    shape = f"{cfg.block_t}x{cfg.block_q} w{cfg.num_warps} k{getattr(cfg, 'slice_k', 1)}{'r' if layout == 'btd' and getattr(cfg, 'slice_keep', False) else ''}{'p' if layout == 'btd' and getattr(cfg, 'prefetch', False) else ''}"
                    print(f"{layout} {dtype:4s} {name:10s} {shape:20s} instr {r['instr']:5d}  {r['per_elem']:5.1f}/elem  "
                          f"regs {r['regs']:3d}  spills {r['spills']:3d}  ptx {r['sha']}", flush=True)


if __name__ == "__main__":
    main()
