"""Offline sm_90a compile of the diffmax attention kernels at head dims D, Dv (bf16): shared memory and spills."""
import os, re, subprocess, sys, tempfile
os.environ.pop("TRITON_INTERPRET", None)
import triton, triton.language as tl
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from flashmarkov.diffmax import attention as A

PTXAS = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "ptxas")

def ptxas(c):
    with tempfile.NamedTemporaryFile("w", suffix=".ptx", delete=False) as f:
        f.write(c.asm["ptx"])
    out = subprocess.run([PTXAS, "--gpu-name", "sm_90a", "-v", f.name, "-o", os.devnull], capture_output=True, text=True).stderr
    regs = re.search(r"Used (\d+) registers", out); sp = re.search(r"(\d+) bytes spill stores", out)
    return int(regs.group(1)), int(sp.group(1)) if sp else 0

def fwd(D, DV, dtype="bf16"):
    cfg = ORIG(max(D, DV) if os.environ.get("BY_MAX") else D, 2 if dtype == "bf16" else 4)
    bd, bdv = max(16, triton.next_power_of_2(D)), max(16, triton.next_power_of_2(DV))
    cx = dict(ACC=tl.float32, PREC="tf32", POW=2, CAUSAL=False, HAS_WL=False, HAS_WR=False, BLOCK_M=cfg.block_m, BLOCK_N=cfg.block_n,
              BLOCK_D=bd, BLOCK_DV=bdv, GROUPS=A.START_GROUPS, LIST_STAGES=A._list_stages(cfg, True), COMPILED=True,
              CHUNK=A.LIST_CHUNK_FWD, PROFILE=False)
    ptr = {"p_q": dtype, "p_k": dtype, "p_v": dtype, "p_o": dtype, "p_tau": "fp32", "p_rn": "fp32", "p_st": "i8", "p_ls": "i32",
           "p_gm": "fp32", "p_prof": "i8", "p_cst": "fp32"}
    sig = {}
    for n in A._attn_fwd_kernel.arg_names:
        sig[n] = "constexpr" if n in cx else ("*" + ptr[n] if n in ptr else "i32")
    attrs = {(i,): [["tt.divisibility", 16]] for i, n in enumerate(sig) if sig[n] != "constexpr" and n not in ("Sq", "Sk", "D", "DV", "n_m", "n_n", "Hq", "G", "wl", "wr", "n_iter")}
    opts = {"num_warps": cfg.num_warps, "num_stages": cfg.num_stages}
    if cfg.fwd_maxnreg:
        opts["maxnreg"] = cfg.fwd_maxnreg
    c = triton.compile(ASTSource(A._attn_fwd_kernel, sig, constexprs=cx, attrs=attrs), target=GPUTarget("cuda", 90, 32), options=opts)
    return c.metadata.shared, *ptxas(c)

ORIG = A.pick_config
for D, DV in [(int(a), int(b)) for a, b in (x.split(",") for x in sys.argv[1:])]:
    try:
        print("fwd", D, DV, "smem %d regs %d spill %d" % fwd(D, DV), flush=True)
    except Exception as e:
        print("fwd", D, DV, "FAILED", str(e)[:300], flush=True)

