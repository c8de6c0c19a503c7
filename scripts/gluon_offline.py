"""Compile the Gluon attention forward for sm_90a without a GPU: registers, spill bytes and shared memory
per variant (head dim x causal x persistent), from Triton's own ptxas.

    PYTHONPATH=src python scripts/gluon_offline.py [--dims 64,128]

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


def _descriptor(rows: int, d: int) -> TensorDescriptor:
    x = torch.empty(2, 4, 1024, d, dtype=torch.bfloat16)
    return TensorDescriptor.from_tensor(x, [1, 1, rows, d], gf._smem_layout(d, rows, torch.bfloat16))


def compile_forward(d: int, causal: bool, persistent: bool):
    """The compiled ``_attn_fwd_ws_kernel`` variant (bfloat16) for sm_90a."""
    kernel = gf._attn_fwd_ws_kernel
    descs = {"q_desc": gf.WG_M, "k_desc": gf.BLOCK_N, "v_desc": gf.BLOCK_N, "o_desc": gf.WG_M}
    consts = dict(HEAD_DIM=d, CAUSAL=causal, STAGES=gf.STAGES[d], NUM_WG=gf.NUM_WG[d], PERSISTENT=persistent)
    signature, constexprs = {}, {}
    for i, name in enumerate(kernel.arg_names):
        if name in descs:
            signature[name] = mangle_type(_descriptor(descs[name], d))
        elif name in consts:
            signature[name] = "constexpr"
            constexprs[(i,)] = consts[name]
        else:
            signature[name] = {"p_lse": "*fp32", "qk_scale": "fp32"}.get(name, "i32")
    source = GluonASTSource(kernel, signature, constexprs=constexprs, attrs={})
    options = {"num_warps": 4, "maxnreg": gf.MAXNREG[gf.NUM_WG[d]]}
    return triton.compile(source, target=GPUTarget("cuda", 90, 32), options=options)


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
    args = parser.parse_args()
    for d in (int(x) for x in args.dims.split(",")):
        for causal in (False, True):
            for persistent in (True, False):
                compiled = compile_forward(d, causal, persistent)
                regs, spills = ptxas_usage(compiled)
                print(f"D={d:3d} {'causal' if causal else 'full':6s} {'persistent' if persistent else 'per-item':10s} "
                      f"registers {regs:3d}  spill stores {spills:4d} B  shared {compiled.metadata.shared} B", flush=True)


if __name__ == "__main__":
    main()
