"""Compile the Gluon attention kernels for sm_90a without a GPU: registers, spill bytes and shared memory
per variant (kernel x head dim x causal), from Triton's own ptxas.

    PYTHONPATH=src python scripts/gluon_offline.py [--dims 64,128] [--kernels fwd,dq,dkdv]

The descriptor arguments' signatures come from host-side TensorDescriptors over CPU tensors
(``mangle_type``), which is all the compiler needs; the kernel is not run (the Triton interpreter
cannot run Gluon). Session 15: the shared memory matches the H100's compiled kernels (147 960 and
197 024 bytes).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import tempfile

import torch
import triton
from triton.backends.compiler import GPUTarget
from triton.experimental.gluon._runtime import GluonASTSource
from triton.experimental.gluon.nvidia.hopper import TensorDescriptor
from triton.runtime.jit import mangle_type

from flashmarkov.attention import gluon_forward as gf

PTXAS = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "ptxas")


def _descriptor(rows: int, d: int, cols: int | None = None) -> TensorDescriptor:
    """Blocks of ``rows`` × ``cols`` (default d) over a (2, 4, 1024, d) bfloat16 tensor."""
    x = torch.empty(2, 4, 1024, d, dtype=torch.bfloat16)
    cols = cols or d
    return TensorDescriptor.from_tensor(x, [1, 1, rows, cols], gf._smem_layout(cols, rows, torch.bfloat16))


def _compile(kernel, d: int, descs: dict[str, int], consts: dict, maxnreg: int):
    """A Gluon kernel compiled for sm_90a (bfloat16): ``descs`` maps its descriptor arguments to their
    block rows (or (rows, columns)), ``consts`` its constexprs; pointers are float32, scales float32, the rest int32."""
    signature, constexprs = {}, {}
    for i, name in enumerate(kernel.arg_names):
        if name in descs:
            block = descs[name] if isinstance(descs[name], tuple) else (descs[name],)
            signature[name] = mangle_type(_descriptor(*block[:1], d, *block[1:]))
        elif name in consts:
            signature[name] = "constexpr"
            constexprs[(i,)] = consts[name]
        elif name.startswith("p_"):
            signature[name] = "*i32" if name == "p_next" else "*fp32"
        else:
            signature[name] = "fp32" if name in ("qk_scale", "scale") else "i32"
    source = GluonASTSource(kernel, signature, constexprs=constexprs, attrs={})
    return triton.compile(source, target=GPUTarget("cuda", 90, 32), options={"num_warps": 4, "maxnreg": maxnreg})


def compile_forward(d: int, causal: bool, persistent: bool, dynamic: bool = False):
    """The compiled ``_attn_fwd_ws_kernel`` variant."""
    descs = {"q_desc": gf.WG_M, "k_desc": gf.BLOCK_N[d], "v_desc": gf.BLOCK_N[d], "o_desc": gf.WG_M}
    consts = dict(HEAD_DIM=d, CAUSAL=causal, STAGES=gf.STAGES[d], NUM_WG=gf.NUM_WG[d], PERSISTENT=persistent,
                  DYNAMIC=dynamic)
    return _compile(gf._attn_fwd_ws_kernel, d, descs, consts, gf.MAXNREG[gf.NUM_WG[d]])


def compile_backward(kind: str, d: int, causal: bool):
    """The compiled Gluon dQ (``kind`` "dq") or dK/dV ("dkdv") kernel of ``gluon_backward``."""
    from flashmarkov.attention import gluon_backward as gb

    m, n = gf.WG_M, gb.DQ_BLOCK_N[d]
    if kind == "dq":
        descs = {"q_desc": m, "k_desc": n, "v_desc": n, "do_desc": m, "dq_desc": m}
        consts = dict(HEAD_DIM=d, CAUSAL=causal, STAGES=gb.STAGES[d], NUM_WG=gb.NUM_WG)
        return _compile(gb._attn_bwd_dq_ws_kernel, d, descs, consts, gf.MAXNREG[gb.NUM_WG])
    descs = dict.fromkeys(("q_desc", "k_desc", "v_desc", "do_desc", "dk_desc", "dv_desc"), (m, gb.KV_PART[d]))
    consts = dict(HEAD_DIM=d, CAUSAL=causal, STAGES=gb.KV_STAGES[d], NUM_WG=gb.NUM_WG)
    return _compile(gb._attn_bwd_dkdv_ws_kernel, d, descs, consts, gf.MAXNREG[gb.NUM_WG])


def ptxas_usage(compiled) -> tuple[int, int]:
    """(registers, spill-store bytes) that ptxas -v reports for the kernel (its largest function)."""
    with tempfile.NamedTemporaryFile("w", suffix=".ptx", delete=False) as f:
        f.write(compiled.asm["ptx"])
    out = subprocess.run([PTXAS, "--gpu-name", "sm_90a", "-v", f.name, "-o", os.devnull], capture_output=True, text=True).stderr
    os.unlink(f.name)
    regs = max((int(r) for r in re.findall(r"Used (\d+) registers", out)), default=-1)
    spills = max((int(s) for s in re.findall(r"(\d+) bytes spill stores", out)), default=-1)
    return regs, spills


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dims", default="64,128")
    parser.add_argument("--kernels", default="fwd,dq,dkdv", help="fwd, dq (gluon_backward.DQ_HEAD_DIMS only), dkdv")
    args = parser.parse_args()
    kernels = args.kernels.split(",")
    from flashmarkov.attention import gluon_backward as gb

    for d in (int(x) for x in args.dims.split(",")):
        for causal in (False, True):
            runs = []
            if "fwd" in kernels:
                walks = ("persistent", "per-item") + (("dynamic",) if causal else ())
                runs += [(f"fwd {walk}", lambda walk=walk: compile_forward(d, causal, walk != "per-item", walk == "dynamic"))
                         for walk in walks]
            runs += [(kind, lambda kind=kind: compile_backward(kind, d, causal)) for kind in ("dq", "dkdv")
                     if kind in kernels and (kind == "dkdv" or d in gb.DQ_HEAD_DIMS)]
            for name, build in runs:
                compiled = build()
                regs, spills = ptxas_usage(compiled)
                print(f"D={d:3d} {'causal' if causal else 'full':6s} {name:14s} "
                      f"registers {regs:3d}  spill stores {spills:4d} B  shared {compiled.metadata.shared} B", flush=True)


if __name__ == "__main__":
    main()
