"""Persistent causal Gluon forward (new) against the grid-per-item causal kernel (old, _old_gluon_forward):
bitwise o/lse equality and kernel time, interleaved; cuDNN for reference."""
import math, json, os, sys, torch, triton.testing as tt
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
from flashmarkov.attention import gluon_forward as new, _old_gluon_forward as old
from flashmarkov.attention.forward import make_problem
res = []
SHAPES = [(8, 8, 2048, 64, True), (2, 16, 8192, 128, True), (1, 32, 16384, 128, True), (2, 32, 8192, 128, True), (4, 8, 2048, 128, True), (8, 8, 512, 128, True),
          (4, 8, 2048, 64, True), (8, 16, 2048, 64, True), (2, 16, 8192, 64, True), (16, 8, 512, 64, True),
          (2, 3, 1000, 64, True), (1, 2, 333, 128, True), (3, 5, 700, 128, True), (1, 1, 1, 64, True),
          (4, 8, 2048, 64, False), (2, 16, 8192, 128, False), (16, 8, 512, 64, False), (2, 3, 1000, 64, False)]
for B, H, S, D, causal in SHAPES:
    torch.manual_seed(0)
    q, k, v = (torch.randn(B, H, S, D, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    prob = make_problem(q, k, None, None, S, S, 1 / math.sqrt(D), causal, -1, -1, 0.0)
    outs = {}
    fns = {}
    for name, mod in (("new", new), ("old", old)):
        o, lse = torch.full_like(q, float("nan")), torch.full((B, H, S), float("nan"), device="cuda")
        mod.attention_forward(q, k, v, o, lse, prob)
        torch.cuda.synchronize()
        outs[name] = (o, lse)
        fns[name] = (lambda mod=mod, o=o, lse=lse: mod.attention_forward(q, k, v, o, lse, prob))
    same = torch.equal(outs["new"][0], outs["old"][0]) and torch.equal(outs["new"][1], outs["old"][1])
    nan = bool(outs["new"][0].isnan().any() or outs["new"][1].isnan().any())
    ref = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), is_causal=causal)
    err = ((outs["new"][0].float() - ref).abs().max()).item()

    def cudnn():
        with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
            return F.scaled_dot_product_attention(q, k, v, is_causal=causal)
    try:
        cudnn()
        fns["cudnn"] = cudnn
    except RuntimeError:
        fns["cudnn"] = lambda: None
    t = {n: [] for n in fns}
    for _ in range(2 if B * H * S * S * D > 2**32 else 3):
        for n, f in fns.items():
            t[n].append(tt.do_bench(f, warmup=10, rep=60) * 1e3)
    g = new.causal_groups(B * H, S, 64 * new.NUM_WG[D], B * H * S * D * 4, 132) if causal else 0
    rec = dict(shape=[B, H, S, D], causal=causal, groups=g, bitwise_equal=same, nan=nan, max_err_vs_cudnn=err, **{f"{n}_us": sorted(v)[len(v) // 2] for n, v in t.items()})
    res.append(rec)
    print(f"{B}x{H}x{S}x{D} causal={causal!s:5s} g={g:3d} equal={same} nan={nan} err={err:.2e} new {rec['new_us']:8.1f} old {rec['old_us']:8.1f} cudnn {rec['cudnn_us']:8.1f} us  new/old {rec['old_us']/rec['new_us']:.3f}x  vs cudnn {rec['cudnn_us']/rec['new_us']:.3f}x", flush=True)
json.dump(res, open(os.path.join(os.environ.get("OUT", "."), "attn_causal_probe.json"), "w"), indent=1)
