"""Offline sm_90a compile of the plain FOLD M·V kernel (d = 16, k = 16, 128x64 w4 s3, maxnreg 128) and an opcode
histogram of its hottest loop (the basic blocks between the loop's backward branch and its target)."""
import collections, os, re, subprocess, sys, tempfile
os.environ.pop("TRITON_INTERPRET", None)
import triton, triton.language as tl
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from flashmarkov.diffusion import tiles as T

BIN = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin")
cx = dict(BLOCK_M=128, BLOCK_N=64, BLOCK_D=int(os.environ.get("BD", 64)), D_CHUNKS=1, BLOCK_V=16, ROW_SCALE=os.environ.get("RS", "1") == "1", SIGMA=False,
          SOFTMAX=False, SYMMETRIC=False, SAME=True, SPLIT=True, EXP2=True, FOLD=True, MASK_SPLIT=True, INTERPRET=False)
ptr = dict(qh_ptr="*fp16", ql_ptr="*fp16", kh_ptr="*fp16", kl_ptr="*fp16", wh_ptr="*fp16", wl_ptr="*fp16", out_ptr="*fp32",
           c_ptr="*fp32", topq_ptr="*fp32", topk_ptr="*fp32", qt_ptr="*fp32", kt_ptr="*fp32", rs_ptr="*fp32", vtop_ptr="*fp32")
none = {"lse_ptr", "isq_ptr", "isk_ptr"}
sig, consts = {}, dict(cx)
for n in T._gaussian_tiles_kernel.arg_names:
    if n in cx or n in none:
        sig[n] = "constexpr"
        if n in none:
            consts[n] = None
    elif n in ptr:
        sig[n] = ptr[n]
    else:
        sig[n] = "i32"
attrs = {(i,): [["tt.divisibility", 16]] for i, n in enumerate(sig) if sig[n] != "constexpr" and n not in os.environ.get("NODIV", "").split(",")}
opts = dict(num_warps=4, num_stages=int(os.environ.get("ST", 3)))
if os.environ.get("MAXNREG", "128") != "0":
    opts["maxnreg"] = int(os.environ.get("MAXNREG", "128"))
fn = T._gaussian_tiles_kernel.fn if hasattr(T._gaussian_tiles_kernel, "fn") and not hasattr(T._gaussian_tiles_kernel, "arg_names") else T._gaussian_tiles_kernel
c = triton.compile(ASTSource(T._gaussian_tiles_kernel, sig, constexprs=consts, attrs=attrs), target=GPUTarget("cuda", 90, 32), options=opts)
with tempfile.NamedTemporaryFile(suffix=".cubin", delete=False) as f:
    f.write(c.asm["cubin"])
sass = subprocess.run([os.path.join(BIN, "nvdisasm"), "-c", f.name], capture_output=True, text=True).stdout
open(os.environ.get("SASS_OUT", "/tmp/dsass.txt"), "w").write(sass)
ptx = tempfile.NamedTemporaryFile("w", suffix=".ptx", delete=False); ptx.write(c.asm["ptx"]); ptx.close()
info = subprocess.run([os.path.join(BIN, "ptxas"), "--gpu-name", "sm_90a", "-v", ptx.name, "-o", os.devnull] + (["--maxrregcount", str(opts["maxnreg"])] if "maxnreg" in opts else []), capture_output=True, text=True).stderr
print("smem", c.metadata.shared, re.findall(r"Used \d+ registers|\d+ bytes spill stores|\d+ bytes spill loads", info))
lines = [l for l in sass.splitlines() if re.match(r"\s+/\*[0-9a-f]{4}\*/", l)]
# find backward branches: BRA to an earlier address
addr = lambda l: int(re.match(r"\s+/\*([0-9a-f]{4})\*/", l).group(1), 16)
loops = []
for l in lines:
    m = re.search(r"BRA[^`]*`?\(?\.L_x_(\d+)", l)
    if m:
        label = ".L_x_" + m.group(1)
        # label address: line after label definition
        idx = sass.find(label + ":")
        if idx >= 0:
            after = sass[idx:].splitlines()[1:3]
            la = [addr(x) for x in after if re.match(r"\s+/\*[0-9a-f]{4}\*/", x)]
            if la and la[0] < addr(l):
                loops.append((addr(l) - la[0], la[0], addr(l)))
loops.sort(reverse=True)
for size, lo, hi in loops[:3]:
    body = [l for l in lines if lo <= addr(l) <= hi]
    ops = collections.Counter(re.sub(r"^\s+/\*[0-9a-f]{4}\*/\s+(@!?U?P\w+\s+)?", "", l).split()[0].rstrip(";").split(".")[0] for l in body)
    print(f"loop {lo:#x}-{hi:#x}: {len(body)} instructions;", ", ".join(f"{k} {v}" for k, v in ops.most_common()))
