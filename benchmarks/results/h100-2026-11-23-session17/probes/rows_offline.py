"""Offline sm_90a compile of the diffmax row forward kernel in every variant the launcher uses."""
import itertools, os
os.environ.pop("TRITON_INTERPRET", None)
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from flashmarkov.diffmax import rows

k = rows._diffmax_fwd_kernel
for dtype, acc, single, has_alpha, pow_, ens in itertools.product(("fp32", "bf16", "fp64"), ("fp32", "fp64"), (True, False), (True, False), (0, 2), (True, False)):
    if (dtype == "fp64") != (acc == "fp64"):
        continue
    import triton.language as tl
    cx = dict(ACC=getattr(tl, {"fp32": "float32", "fp64": "float64"}[acc]), BLOCK_N=1024 if single else 256, SINGLE=single,
              HAS_ALPHA=has_alpha, POW=pow_, ENSURE_SUM_ONE=ens)
    sig = {}
    for name in k.arg_names:
        if name in cx:
            sig[name] = "constexpr"
        elif name == "p_x" or name == "p_y":
            sig[name] = "*" + dtype
        elif name == "p_a":
            sig[name] = ("*" + acc) if has_alpha else "constexpr"
        elif name == "p_tau":
            sig[name] = "*" + acc
        elif name in ("alpha", "tol"):
            sig[name] = "fp32" if acc == "fp32" else "fp64"
        else:
            sig[name] = "i32"
    consts = dict(cx)
    if not has_alpha:
        consts["p_a"] = None
    src = ASTSource(k, sig, constexprs=consts)
    c = triton.compile(src, target=GPUTarget("cuda", 90, 32), options={"num_warps": 4})
    print(dtype, acc, "single" if single else "stream", "alpha" if has_alpha else "-", f"POW={pow_}", "sum1" if ens else "-", "ok", c.n_regs if hasattr(c, "n_regs") else "", flush=True)
import re
for single in (True, False):
    sig2 = {n: ("constexpr" if n in cx or n == "p_a" else ("*fp32" if n.startswith("p_") else ("fp32" if n in ("alpha", "tol") else "i32"))) for n in k.arg_names}
    consts = dict(ACC=tl.float32, BLOCK_N=1024 if single else 256, SINGLE=single, HAS_ALPHA=False, POW=2, ENSURE_SUM_ONE=True, p_a=None)
    c = triton.compile(ASTSource(k, sig2, constexprs=consts), target=GPUTarget("cuda", 90, 32), options={"num_warps": 4})
    ptx = c.asm["ptx"]
    print("single" if single else "stream", sorted(set(re.findall(r"setp\.[a-z]+\.f32", ptx))), len(re.findall(r"0f7F800000", ptx)))
