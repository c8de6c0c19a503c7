"""Head dims 160 and 192 at Gluon width 256 against the Triton kernels (padded to 256) and cuDNN: public fwd and fwd+bwd."""
import json, math, os
import torch, triton.testing
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
from flashmarkov.attention import gluon_forward as gf, gluon_backward as gb, flash_attention

rows = []
for B, H, S, D in ((2, 16, 4096, 192), (2, 16, 4096, 160), (4, 8, 2048, 192)):
    q, k, v, do = (torch.randn(B, H, S, D, device="cuda", dtype=torch.bfloat16) for _ in range(4))
    qr, kr, vr = (t.clone().requires_grad_() for t in (q, k, v))
    for causal in (False, True):
        def fwd():
            with torch.no_grad():
                flash_attention(q, k, v, causal=causal)
        def fb():
            flash_attention(qr, kr, vr, causal=causal).backward(do)
        def cfwd():
            with sdpa_kernel(SDPBackend.CUDNN_ATTENTION), torch.no_grad():
                F.scaled_dot_product_attention(q, k, v, is_causal=causal)
        def cfb():
            with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
                F.scaled_dot_product_attention(qr, kr, vr, is_causal=causal).backward(do)
        res = {}
        for r in range(2):
            for tag, en in (("gluon", True), ("triton", False)):
                gf.ENABLED = en
                res.setdefault(tag + "_fwd", []).append(1e3 * triton.testing.do_bench(fwd, warmup=25, rep=100))
                res.setdefault(tag + "_fwdbwd", []).append(1e3 * triton.testing.do_bench(fb, warmup=25, rep=100, grad_to_none=[qr, kr, vr]))
            gf.ENABLED = True
            res.setdefault("cudnn_fwd", []).append(1e3 * triton.testing.do_bench(cfwd, warmup=25, rep=100))
            res.setdefault("cudnn_fwdbwd", []).append(1e3 * triton.testing.do_bench(cfb, warmup=25, rep=100, grad_to_none=[qr, kr, vr]))
        med = {n: min(x) for n, x in res.items()}
        print(f"{B}x{H}x{S}x{D} causal={causal}: " + ", ".join(f"{n} {t:.0f}" for n, t in med.items()), flush=True)
        rows.append(dict(shape=[B, H, S, D], causal=causal, us=res))
json.dump(dict(gpu=torch.cuda.get_device_name(), torch=torch.__version__, note="min of 2 rounds, us; gf.ENABLED=False also turns the Gluon backward off (eligible)", rows=rows),
          open(f"{os.environ.get('OUT', '/tmp')}/d192.json", "w"), indent=1)
