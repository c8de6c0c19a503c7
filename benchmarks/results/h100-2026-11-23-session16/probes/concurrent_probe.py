"""Public fwd+bwd with the Gluon dQ on a side stream (backward.CONCURRENT_DQ) or after dK/dV, against cuDNN,
interleaved; gradients bitwise equal between the two."""
import json, os, torch, triton.testing as tt
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
from flashmarkov.attention import flash_attention, backward

res = []
for B, Hq, Hkv, S, D, causal in ((2, 16, 16, 8192, 128, False), (2, 16, 16, 8192, 128, True), (1, 32, 32, 16384, 128, True),
                                 (2, 32, 8, 8192, 128, True), (2, 32, 32, 8192, 128, True)):
    torch.manual_seed(0)
    q = torch.randn(B, Hq, S, D, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    k, v = (torch.randn(B, Hkv, S, D, device="cuda", dtype=torch.bfloat16, requires_grad=True) for _ in range(2))
    do = torch.randn(B, Hq, S, D, device="cuda", dtype=torch.bfloat16)

    def ours():
        o = flash_attention(q, k, v, causal=causal)
        return torch.autograd.grad(o, (q, k, v), do)

    def cudnn():
        with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
            o = F.scaled_dot_product_attention(q, k, v, is_causal=causal, enable_gqa=Hq != Hkv)
        return torch.autograd.grad(o, (q, k, v), do)

    grads = {}
    t = {}
    for conc in (True, False):
        backward.CONCURRENT_DQ = conc
        grads[conc] = ours()
    same = all(torch.equal(a, b) for a, b in zip(grads[True], grads[False]))
    for _ in range(3):
        for name, conc in (("concurrent", True), ("serial", False), ("cudnn", None)):
            if conc is not None:
                backward.CONCURRENT_DQ = conc
            t.setdefault(name, []).append(tt.do_bench(ours if conc is not None else cudnn, warmup=100, rep=300))
    backward.CONCURRENT_DQ = True
    rec = dict(shape=[B, Hq, Hkv, S, D], causal=causal, grads_bitwise_equal=same, **{f"{n}_ms": sorted(x)[1] for n, x in t.items()})
    rec["concurrent_vs_cudnn"] = rec["cudnn_ms"] / rec["concurrent_ms"]
    rec["serial_vs_cudnn"] = rec["cudnn_ms"] / rec["serial_ms"]
    res.append(rec)
    print(rec, flush=True)
json.dump(res, open(os.path.join(os.environ.get("OUT", "."), "concurrent_probe.json"), "w"), indent=1)
