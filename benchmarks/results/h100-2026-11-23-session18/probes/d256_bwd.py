"""D = 256 backward: Gluon dQ and dK/dV (DQ_HEAD_DIMS, DKDV_HEAD_DIMS with 256) against the Triton kernels, kernel times per launch
(torch.profiler) and the whole backward (do_bench, interleaved rounds); cuDNN's fwd+bwd for scale."""
import json, math, os, sys
import torch, triton.testing
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
from flashmarkov.attention import gluon_backward as gb, op
from flashmarkov.attention import flash_attention

VARIANTS = {"triton": ((128,), (64, 128), False), "gluon_redundant": ((128, 256), (64, 128, 256), False),
            "gluon_exchange": ((128, 256), (64, 128, 256), True)}


def use(variant):
    gb.DQ_HEAD_DIMS, gb.DKDV_HEAD_DIMS, gb.KV_EXCHANGE = VARIANTS[variant]
    gb._DKDV.bound.clear()


rows = []
SHAPES = [tuple(map(int, a.split(","))) for a in sys.argv[1:]] or [(2, 16, 4096), (1, 16, 8192), (4, 16, 1024), (4, 8, 2048)]
for B, H, S in SHAPES:
    D = 256
    q, k, v, do = (torch.randn(B, H, S, D, device="cuda", dtype=torch.bfloat16) for _ in range(4))
    for causal in (False, True):
        scale = 1 / math.sqrt(D)
        o, lse = op.attention_fwd(q, k, v, None, None, S, S, causal, scale, -1, -1, 0.0)
        bwd = lambda: op.attention_bwd(do, q, k, v, o, lse, None, None, None, S, S, causal, scale, -1, -1, 0.0)
        res, grads = {}, {}
        for name in VARIANTS:
            use(name)
            grads[name] = bwd()
            prof = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA])
            with prof:
                for _ in range(5):
                    bwd()
                torch.cuda.synchronize()
            kern = {}
            for e in prof.key_averages():
                if e.device_type == torch.autograd.DeviceType.CUDA:
                    kern[e.key[:60]] = e.device_time_total / e.count if e.count else 0.0
            res[name] = dict(kernels_us=kern, us=[])
        for r in range(3):
            for name in VARIANTS:
                use(name)
                res[name]["us"].append(1e3 * triton.testing.do_bench(bwd, warmup=25, rep=100))
        qr, kr, vr = (t.clone().requires_grad_() for t in (q, k, v))
        def cudnn():
            with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
                F.scaled_dot_product_attention(qr, kr, vr, is_causal=causal).backward(do)
        res["cudnn_fwdbwd"] = dict(us=[1e3 * triton.testing.do_bench(cudnn, warmup=25, rep=100, grad_to_none=[qr, kr, vr])])
        diff = [max((a.float() - b.float()).abs().max().item() / b.float().abs().max().item() for a, b in zip(grads[n], grads["triton"])) for n in VARIANTS]
        med = {n: sorted(x["us"])[len(x["us"]) // 2] for n, x in res.items()}
        print(f"{B}x{H}x{S}x{D} causal={causal}: " + ", ".join(f"{n} {t:.1f} us" for n, t in med.items()) + f"  max rel diff vs triton {diff}", flush=True)
        for name in VARIANTS:
            print("   ", name, {k_: round(v_, 1) for k_, v_ in res[name]["kernels_us"].items()}, flush=True)
        rows.append(dict(shape=[B, H, S, D], causal=causal, res=res, median_us=med, max_grad_diff=diff))
out = os.environ.get("OUT", "/tmp")
json.dump(dict(gpu=torch.cuda.get_device_name(), torch=torch.__version__, rows=rows), open(f"{out}/d256-bwd{os.environ.get('TAG', '')}.json", "w"), indent=1)
