import sys, re
sys.path.insert(0, "benchmarks")
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
import overlap_probe as op
sig = {"out_ptr": "*fp32", "counter_ptr": "*i32", "n_a": "i32", "n_b": "i32", "ROLE_A": "constexpr", "ROLE_B": "constexpr", "SMID": "constexpr"}
for a, b in ((0, 0), (2, 2), (3, 3), (0, 2), (1, 2), (3, 2), (0, 3)):
    src = ASTSource(op._overlap_kernel, sig, constexprs={"ROLE_A": a, "ROLE_B": b, "SMID": True})
    k = triton.compile(src, target=GPUTarget("cuda", 90, 32), options={"num_warps": 4})
    ptx = k.asm["ptx"]
    print(a, b, "wgmma", len(re.findall(r"wgmma.mma_async", ptx)), "ex2", len(re.findall(r"ex2.approx", ptx)), "fma", len(re.findall(r"fma.rn.f32", ptx)), "smid", "%smid" in ptx)
