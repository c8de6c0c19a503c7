import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from flashmarkov.diffusion import tiles
for dt in ("fp32", "fp64"):
    src = ASTSource(tiles._stats_kernel, {"x_ptr": f"*{dt}", "part_ptr": "*fp64", "n": "i32", "d": "i32", "rows_per_prog": "i32",
                    "BLOCK": "constexpr", "BLOCK_D": "constexpr", "D_CHUNKS": "constexpr", "INTERPRET": "constexpr"},
                    constexprs={"BLOCK": 128, "BLOCK_D": 16, "D_CHUNKS": 2, "INTERPRET": False})
    k = triton.compile(src, target=GPUTarget("cuda", 90, 32), options={"num_warps": 4})
    print("stats", dt, "ok", len(k.asm["ptx"]))
    src = ASTSource(tiles._centre_kernel, {"part_ptr": "*fp64", "ctr_ptr": f"*{dt}", "top_ptr": "*fp32", "n_part": "i32", "n": "i32", "d": "i32",
                    "BLOCK_P": "constexpr", "BLOCK_D": "constexpr", "D_CHUNKS": "constexpr", "SPLIT": "constexpr", "INTERPRET": "constexpr"},
                    constexprs={"BLOCK_P": 64, "BLOCK_D": 16, "D_CHUNKS": 2, "SPLIT": dt == "fp32", "INTERPRET": False})
    k = triton.compile(src, target=GPUTarget("cuda", 90, 32), options={"num_warps": 4})
    print("centre", dt, "ok", "bar.sync" in k.asm["ptx"], "cvt.rmi" in k.asm["ptx"])
import struct
src = ASTSource(tiles._centre_kernel, {"part_ptr": "*fp64", "ctr_ptr": "*fp32", "top_ptr": "*fp32", "n_part": "i32", "n": "i32", "d": "i32",
                "BLOCK_P": "constexpr", "BLOCK_D": "constexpr", "D_CHUNKS": "constexpr", "SPLIT": "constexpr", "INTERPRET": "constexpr"},
                constexprs={"BLOCK_P": 64, "BLOCK_D": 16, "D_CHUNKS": 1, "SPLIT": True, "INTERPRET": False})
k = triton.compile(src, target=GPUTarget("cuda", 90, 32), options={"num_warps": 4})
h = "0d" + struct.pack(">d", 1e-300).hex().upper()
print("1e-300 as f64 constant in PTX:", h in k.asm["ptx"], h)
import re
print(set(re.findall(r"max\.f64[^;]*;", k.asm["ptx"])))
