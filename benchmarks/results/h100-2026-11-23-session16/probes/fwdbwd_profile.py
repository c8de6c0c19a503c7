"""Public fwd+bwd of flash_attention against cuDNN: wall time (do_bench) and the kernels under torch.profiler
(device µs per call, by kernel name), to see where the time between the kernels' sum and the wall goes."""
import json, os, torch, triton.testing as tt
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.profiler import profile, ProfilerActivity
from flashmarkov.attention import flash_attention

res = []
for B, H, S, D, causal in ((2, 16, 8192, 128, False), (2, 16, 8192, 128, True), (1, 32, 16384, 128, True), (4, 8, 2048, 64, False), (4, 8, 2048, 64, True)):
    torch.manual_seed(0)
    q, k, v = (torch.randn(B, H, S, D, device="cuda", dtype=torch.bfloat16, requires_grad=True) for _ in range(3))
    do = torch.randn(B, H, S, D, device="cuda", dtype=torch.bfloat16)

    def ours():
        o = flash_attention(q, k, v, causal=causal)
        torch.autograd.grad(o, (q, k, v), do)

    def cudnn():
        with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
            o = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
        torch.autograd.grad(o, (q, k, v), do)

    t = {}
    for _ in range(2):
        for n, f in (("ours", ours), ("cudnn", cudnn)):
            t.setdefault(n, []).append(tt.do_bench(f, warmup=50, rep=200))
    rec = dict(shape=[B, H, S, D], causal=causal, **{f"{n}_ms": min(x) for n, x in t.items()})
    for n, f in (("ours", ours), ("cudnn", cudnn)):
        f(); torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            for _ in range(5):
                f()
            torch.cuda.synchronize()
        kern = {}
        for e in prof.key_averages():
            if e.device_time_total > 0:
                kern[e.key[:60]] = e.device_time_total / 5
        rec[f"{n}_kernels_us"] = dict(sorted(kern.items(), key=lambda x: -x[1]))
        rec[f"{n}_kernel_sum_ms"] = sum(kern.values()) / 1e3
    res.append(rec)
    print(json.dumps(rec, indent=1), flush=True)
json.dump(res, open(os.path.join(os.environ.get("OUT", "."), "fwdbwd_profile.json"), "w"), indent=1)
