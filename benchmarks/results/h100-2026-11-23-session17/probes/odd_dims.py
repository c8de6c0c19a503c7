"""Head dims off the Gluon path (80, 96, 256): public forward and fwd+bwd against SDPA's cuDNN / flash backends."""
import json, os, torch, triton.testing as tt
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
from flashmarkov.attention import flash_attention
res = []
for D in map(int, __import__("sys").argv[1:] or ["80", "96", "256"]):
    for causal in (False, True):
        q, k, v = (torch.randn(2, 16, 4096, D, device="cuda", dtype=torch.bfloat16, requires_grad=True) for _ in range(3))
        do = torch.randn_like(q)
        rec = dict(shape=[2, 16, 4096, D], causal=causal)
        impls = {"ours": lambda: flash_attention(q, k, v, causal=causal)}
        for name, b in (("cudnn", SDPBackend.CUDNN_ATTENTION), ("flash2", SDPBackend.FLASH_ATTENTION)):
            def f(b=b):
                with sdpa_kernel(b):
                    return F.scaled_dot_product_attention(q, k, v, is_causal=causal)
            impls[name] = f
        for name, f in impls.items():
            try:
                def fwd(f=f):
                    with torch.no_grad():
                        f()
                def fb(f=f):
                    torch.autograd.grad(f(), (q, k, v), do)
                rec[name + "_fwd_ms"] = tt.do_bench(fwd, warmup=25, rep=100)
                rec[name + "_fwdbwd_ms"] = tt.do_bench(fb, warmup=25, rep=100)
            except Exception as e:
                rec[name] = f"{type(e).__name__}: {str(e)[:120]}"
        res.append(rec)
        print(rec, flush=True)
json.dump(res, open(os.path.join(os.environ.get("OUT", "."), "odd_dims.json"), "w"), indent=1)
