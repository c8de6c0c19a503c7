"""Cost of a Python autograd node in a host-bound fwd+bwd on the GPU host (development probe)."""
import statistics, sys, time, threading, json, os
import torch, torch.nn.functional as F, triton.testing
from torch.nn.attention import SDPBackend, sdpa_kernel
from flashmarkov.attention import flash_attention
from flashmarkov.attention import op as aop

class Ident(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x.view_as(x)
    @staticmethod
    def backward(ctx, g):
        return g

STAMPS = []
ON = [False]
def st(lab):
    if ON[0]:
        STAMPS.append((lab, time.perf_counter_ns(), threading.get_ident()))

_ob = aop.AttentionFunction.backward
_of = aop.AttentionFunction.forward
def fwd(ctx, *a):
    st("fwd_in"); r = _of(ctx, *a); st("fwd_out"); return r
def bwd(ctx, do, dlse):
    st("bwd_in"); r = _ob(ctx, do, dlse); st("bwd_out"); return r
aop.AttentionFunction.forward = staticmethod(fwd)
aop.AttentionFunction.backward = staticmethod(bwd)
class IdentS(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x.view_as(x)
    @staticmethod
    def backward(ctx, g):
        st("ident_bwd")
        return g

def main():
    B, H, S, D = map(int, (sys.argv[1] if len(sys.argv) > 1 else "4,8,2048,64").split(","))
    q, k, v, do = (torch.randn(B, H, S, D, device="cuda", dtype=torch.bfloat16, requires_grad=i < 3) for i in range(4))
    def ours():
        st("start"); o = flash_attention(q, k, v); st("grad_call"); torch.autograd.grad(o, (q, k, v), do); st("end")
    def cudnn():
        st("start")
        with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
            o = F.scaled_dot_product_attention(q, k, v)
        st("grad_call"); torch.autograd.grad(o, (q, k, v), do); st("end")
    def cudnn_ident():
        st("start")
        with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
            o = IdentS.apply(F.scaled_dot_product_attention(q, k, v))
        st("grad_call"); torch.autograd.grad(o, (q, k, v), do); st("end")
    def one(fn):
        def run():
            torch.autograd.set_multithreading_enabled(False)
            try:
                fn()
            finally:
                torch.autograd.set_multithreading_enabled(True)
        return run
    cases = {"ours": ours, "ours 1thread": one(ours), "cudnn": cudnn, "cudnn 1thread": one(cudnn),
             "cudnn+ident": cudnn_ident, "cudnn+ident 1thread": one(cudnn_ident)}
    res = {n: [] for n in cases}
    for r in range(3):
        for n, fn in cases.items():
            res[n].append(triton.testing.do_bench(fn, warmup=50, rep=100, return_mode="median") * 1e3)
    print(f"shape {B}x{H}x{S}x{D}: do_bench median µs, 3 interleaved rounds")
    for n, xs in res.items():
        print(f"  {n:22s} {' '.join(f'{x:7.1f}' for x in xs)}   median {statistics.median(xs):7.1f}")
    # host stamps only (no CUDA events), do_bench protocol
    cache = torch.empty(256 << 20, dtype=torch.int8, device="cuda")
    tl = {}
    for n in ("ours", "cudnn", "cudnn+ident"):
        fn = cases[n]
        for _ in range(20): fn()
        torch.cuda.synchronize(); STAMPS.clear(); ON[0] = True
        for _ in range(100):
            cache.zero_(); fn()
        torch.cuda.synchronize(); ON[0] = False
        its = []
        for lab, t, tid in STAMPS:
            if lab == "start": its.append([])
            its[-1].append((lab, t))
        acc = {}
        for it in its[10:]:
            for i, (lab, t) in enumerate(it):
                acc.setdefault(f"{i:02d} {lab}", []).append((t - it[0][1]) / 1e3)
        tl[n] = {key: statistics.median(xs) for key, xs in acc.items()}
        print(f"  host stamps {n}: " + ", ".join(f"{key[3:]} {x:.0f}" for key, x in tl[n].items()))
    with open(os.path.join(os.environ.get("OUT", "/tmp"), f"node_cost_{B}x{H}x{S}x{D}.json"), "w") as f:
        json.dump({"bench_us": res, "stamps_us": tl}, f, indent=1)

main()
