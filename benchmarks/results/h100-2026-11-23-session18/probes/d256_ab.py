"""Gluon forward at D = 256: key tile / ring depth variants against the Triton forward and cuDNN (kernel times)."""
import json, math, os, sys
import torch, triton.testing
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
from flashmarkov.attention import gluon_forward as gf
from flashmarkov.attention.forward import attention_forward, make_problem

VARIANTS = {"n32s3": (32, 3), "n32s4": (32, 4), "n64s2": (64, 2)}
rows = []
for B, H, S in ((2, 16, 4096), (1, 16, 8192), (4, 16, 1024)):
    D = 256
    q, k, v = (torch.randn(B, H, S, D, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    for causal in (False, True):
        prob = make_problem(q, k, None, None, S, S, 1 / math.sqrt(D), causal, -1, -1, 0.0)
        flop = 4 * B * H * S * S * D / (2 if causal else 1)
        o, lse = torch.empty_like(q), q.new_empty(B, H, S, dtype=torch.float32)
        gf.ENABLED = False
        attention_forward(q, k, v, o, lse, prob); o_ref, lse_ref = o.clone(), lse.clone()
        gf.ENABLED = True
        fns = {}
        def mk(bn, st):
            def f():
                gf.BLOCK_N[256], gf.STAGES[256] = bn, st
                gf._FWD.bound.clear()
                attention_forward(q, k, v, o, lse, prob)
            return f
        res = {}
        for name, (bn, st) in VARIANTS.items():
            mk(bn, st)()
            torch.cuda.synchronize()
            err = (o.float() - o_ref.float()).abs().max().item(); lerr = (lse - lse_ref).abs().max().item()
            gf.BLOCK_N[256], gf.STAGES[256] = bn, st
            gf._FWD.bound.clear()
            res[name] = dict(err_o=err, err_lse=lerr, us=[])
        for r in range(3):
            for name, (bn, st) in VARIANTS.items():
                gf.BLOCK_N[256], gf.STAGES[256] = bn, st
                gf._FWD.bound.clear()
                attention_forward(q, k, v, o, lse, prob)
                res[name]["us"].append(1e3 * triton.testing.do_bench(lambda: attention_forward(q, k, v, o, lse, prob), warmup=25, rep=100))
            gf.ENABLED = False
            res.setdefault("triton", dict(us=[]))["us"].append(1e3 * triton.testing.do_bench(lambda: attention_forward(q, k, v, o, lse, prob), warmup=25, rep=100))
            gf.ENABLED = True
            with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
                res.setdefault("cudnn", dict(us=[]))["us"].append(1e3 * triton.testing.do_bench(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=causal), warmup=25, rep=100))
        line = f"{B}x{H}x{S}x{D} causal={causal}: " + ", ".join(
            f"{n} {sorted(x['us'])[1]:.1f} us ({flop / sorted(x['us'])[1] / 1e6:.0f} TF)" + (f" err {x['err_o']:.1e}/{x['err_lse']:.1e}" if 'err_o' in x else "") for n, x in res.items())
        print(line, flush=True)
        rows.append(dict(shape=[B, H, S, D], causal=causal, flop=flop, **{n: x for n, x in res.items()}))
out = os.environ.get("OUT", "/tmp")
json.dump(dict(gpu=torch.cuda.get_device_name(), torch=torch.__version__, rows=rows), open(f"{out}/d256-ab.json", "w"), indent=1)
