"""CUDA-graph capture of the public ops (fwd+bwd), replayed on new inputs against eager; and timing of a graphed
fwd+bwd against eager, for ours and cuDNN."""
import json, os, traceback, torch, triton.testing as tt
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
from flashmarkov.attention import flash_attention
from flashmarkov.diffmax import diffmax_attention, diffmax_bisect
from flashmarkov.scan import linear_scan

def graphed(fn, inputs):
    """Capture fn(*inputs) -> (out, grads) with static inputs; return replay(new_inputs)."""
    static = [x.detach().clone().requires_grad_(x.requires_grad) for x in inputs]
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for _ in range(3):
            fn(*static)
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        out = fn(*static)
    def replay(new):
        with torch.no_grad():
            for a, b in zip(static, new):
                a.copy_(b)
        g.replay()
        return out
    return replay

def fwd_bwd(op, n_grad):
    def fn(*xs):
        o = op(*xs)
        gs = torch.autograd.grad(o, xs[:n_grad], torch.ones_like(o))
        return (o, *gs)
    return fn

res = {}
def check(name, fn, make, n_grad):
    try:
        replay = graphed(fn, make())
        new = make()
        got = [t.clone() for t in replay(new)]
        want = fn(*[x.detach().clone().requires_grad_(x.requires_grad) for x in new])
        err = max(float((a.float() - b.float()).abs().max()) for a, b in zip(got, want))
        res[name] = dict(ok=True, max_abs_diff=err)
    except Exception as e:
        res[name] = dict(ok=False, error=f"{type(e).__name__}: {str(e)[:300]}")
        traceback.print_exc()
    print(name, res[name], flush=True)

bf = torch.bfloat16
def qkv(B, H, S, D, dtype=bf):
    return lambda: [torch.randn(B, H, S, D, device="cuda", dtype=dtype, requires_grad=True) for _ in range(3)]
check("attention triton 2x4x300x64", fwd_bwd(lambda q, k, v: flash_attention(q, k, v, causal=True), 3), qkv(2, 4, 300, 64), 3)
check("attention gluon 2x16x4096x128", fwd_bwd(lambda q, k, v: flash_attention(q, k, v, causal=True), 3), qkv(2, 16, 4096, 128), 3)
check("attention fp32 1x2x100x32", fwd_bwd(lambda q, k, v: flash_attention(q, k, v), 3), qkv(1, 2, 100, 32, torch.float32), 3)
check("diffmax_attention 1x4x512x64", fwd_bwd(lambda q, k, v: diffmax_attention(q, k, v, 0.5, causal=True), 3), qkv(1, 4, 512, 64), 3)
check("diffmax_bisect 8x1000", fwd_bwd(lambda x: diffmax_bisect(x, 0.5), 1), lambda: [torch.randn(8, 1000, device="cuda", requires_grad=True)], 1)
check("linear_scan 2x64x3000", fwd_bwd(linear_scan, 2),
      lambda: [(0.9 + 0.1 * torch.rand(2, 64, 3000, device="cuda")).requires_grad_(), torch.randn(2, 64, 3000, device="cuda", requires_grad=True)], 2)

# torch.compile(mode="reduce-overhead") of an attention fwd+bwd
try:
    def step(q, k, v):
        return (flash_attention(q, k, v, causal=True).float() ** 2).sum()
    cstep = torch.compile(step, mode="reduce-overhead", fullgraph=True)
    errs = []
    for i in range(5):
        q, k, v = qkv(2, 4, 300, 64)()
        l1 = cstep(q, k, v); g1 = torch.autograd.grad(l1, (q, k, v))
        q2, k2, v2 = (x.detach().clone().requires_grad_() for x in (q, k, v))
        l2 = step(q2, k2, v2); g2 = torch.autograd.grad(l2, (q2, k2, v2))
        errs.append(max(float((a.float() - b.float()).abs().max()) for a, b in zip(g1, g2)))
    res["compile reduce-overhead attention"] = dict(ok=True, max_abs_diff=max(errs))
except Exception as e:
    res["compile reduce-overhead attention"] = dict(ok=False, error=f"{type(e).__name__}: {str(e)[:300]}")
    traceback.print_exc()
print("compile reduce-overhead attention", res["compile reduce-overhead attention"], flush=True)

# timing: graphed fwd+bwd vs eager, ours and cuDNN
def cudnn(q, k, v, causal):
    with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
        return F.scaled_dot_product_attention(q, k, v, is_causal=causal)
tim = {}
for B, H, S, D in ((4, 8, 2048, 64), (16, 8, 512, 64), (32, 8, 128, 64)):
    for causal in (False, True):
        make = qkv(B, H, S, D)
        row = {}
        for name, op in (("ours", lambda q, k, v: flash_attention(q, k, v, causal=causal)), ("cudnn", lambda q, k, v: cudnn(q, k, v, causal))):
            fn = fwd_bwd(op, 3)
            xs = make()
            eager = lambda: fn(*xs)
            replay = graphed(fn, xs)
            gr = lambda: replay(xs)
            t = {"eager": [], "graph": []}
            for _ in range(3):
                t["eager"].append(tt.do_bench(eager, warmup=25, rep=100) * 1e3)
                t["graph"].append(tt.do_bench(gr, warmup=25, rep=100) * 1e3)
            row[name] = {k2: sorted(v2)[1] for k2, v2 in t.items()}
        key = f"{B}x{H}x{S}x{D}{' causal' if causal else ''}"
        tim[key] = row
        print(key, {n: {k2: round(v2, 1) for k2, v2 in r.items()} for n, r in row.items()}, flush=True)
res["timing_us"] = tim
json.dump(res, open(os.path.join(os.environ.get("OUT", "."), "graphs.json"), "w"), indent=1)
