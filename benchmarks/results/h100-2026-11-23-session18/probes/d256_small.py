"""Gluon vs Triton forward at D = 256 on small problems (kernel times, interleaved rounds): where MIN_WORK goes."""
import json, math, os
import torch, triton.testing
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
from flashmarkov.attention import gluon_forward as gf
from flashmarkov.attention import flash_attention
from flashmarkov.attention.forward import attention_forward, make_problem

gf.MIN_WORK[(256, False)] = gf.MIN_WORK[(256, True)] = 0
rows = []
for B, H, S in ((1, 8, 256), (1, 8, 512), (2, 8, 512), (32, 8, 128), (1, 8, 1024), (16, 8, 512), (4, 8, 2048)):
    D = 256
    q, k, v = (torch.randn(B, H, S, D, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    for causal in (False, True):
        prob = make_problem(q, k, None, None, S, S, 1 / math.sqrt(D), causal, -1, -1, 0.0)
        o, lse = torch.empty_like(q), q.new_empty(B, H, S, dtype=torch.float32)
        work = B * H * S * S * D // (2 if causal else 1)
        res = {"gluon": [], "triton": [], "public_gluon": [], "public_triton": [], "cudnn": []}
        def pub():
            with torch.no_grad():
                flash_attention(q, k, v, causal=causal)
        for r in range(3):
            for en in (True, False):
                gf.ENABLED = en
                tag = "gluon" if en else "triton"
                res[tag].append(1e3 * triton.testing.do_bench(lambda: attention_forward(q, k, v, o, lse, prob), warmup=25, rep=100))
                res["public_" + tag].append(1e3 * triton.testing.do_bench(pub, warmup=25, rep=100))
            gf.ENABLED = True
            with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
                res["cudnn"].append(1e3 * triton.testing.do_bench(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=causal), warmup=25, rep=100))
        med = {n: sorted(x)[1] for n, x in res.items()}
        print(f"{B}x{H}x{S}x{D} causal={causal} work=2^{math.log2(work):.1f}: " + ", ".join(f"{n} {t:.1f}" for n, t in med.items()), flush=True)
        rows.append(dict(shape=[B, H, S, D], causal=causal, work=work, us=res, median_us=med))
out = os.environ.get("OUT", "/tmp")
json.dump(dict(gpu=torch.cuda.get_device_name(), torch=torch.__version__, rows=rows), open(f"{out}/d256-small.json", "w"), indent=1)
