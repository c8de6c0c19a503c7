"""Gluon forward at D = 64: (consumer warpgroups, K/V tile) variants against cuDNN, kernel-level."""
import json, os, torch, triton.testing as tt
import torch.nn.functional as F
from torch.nn.attention import sdpa_kernel, SDPBackend
from flashmarkov.attention import gluon_forward as gf, forward as fw
VARS = [(3, 128), (4, 64), (3, 64), (2, 64)]
SHAPES = [(4, 8, 2048, False), (2, 16, 8192, False), (16, 8, 512, False), (4, 8, 2048, True), (8, 16, 2048, True), (1, 32, 16384, True)]
res = []
for b, h, s, causal in SHAPES:
    q, k, v = (torch.randn(b, h, s, 64, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
        ref = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
        t_cudnn = tt.do_bench(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=causal), warmup=25, rep=200)
    flop = 4 * b * h * s * s * 64 / (2 if causal else 1)
    print(f"{b}x{h}x{s}x64 causal={causal}: cudnn {t_cudnn*1e3:.1f} us {flop/t_cudnn/1e9:.0f} TF", flush=True)
    res.append((b, h, s, causal, "cudnn", t_cudnn))
    prob = fw.make_problem(q, k, None, None, s, s, 0.125, causal, -1, 0 if causal else -1, 0.0)
    o = torch.empty_like(q); lse = q.new_empty(b, h, s, dtype=torch.float32)
    for nwg, bn in VARS:
        gf.NUM_WG[64], gf.FWD_BLOCK_N[64] = nwg, bn
        try:
            gf.attention_forward(q, k, v, o, lse, prob)
            err = (o.float() - ref.float()).abs().max().item()
            t = tt.do_bench(lambda: gf.attention_forward(q, k, v, o, lse, prob), warmup=25, rep=200)
        except Exception as e:
            print("  ", (nwg, bn), "failed", repr(e)[:300], flush=True); continue
        print(f"   gluon wg{nwg} bn{bn}: {t*1e3:.1f} us {flop/t/1e9:.0f} TF  ({t_cudnn/t:.3f}x cudnn)  max|o - cudnn| {err:.2e}", flush=True)
        res.append((b, h, s, causal, (nwg, bn), t, err))
    gf.NUM_WG[64], gf.FWD_BLOCK_N[64] = 3, 128
json.dump(res, open(os.path.join(os.environ.get("OUT", "/tmp"), "gfwd_var.json"), "w"))
