import os, torch
from flashmarkov.attention import flash_attention
from flashmarkov.diffmax import diffmax_attention
def run(backend):
    if backend: os.environ["FLASHMARKOV_BACKEND"] = "triton"
    else: os.environ.pop("FLASHMARKOV_BACKEND", None)
    g = torch.Generator().manual_seed(0)
    q = torch.randn(1, 1, 8, 16, generator=g); k = torch.randn(1, 1, 8, 16, generator=g); v = torch.randn(1, 1, 8, 16, generator=g)
    q[0, 0, 2, 3] = float("nan"); k[0, 0, 5, 1] = float("nan"); v[0, 0, 6, 0] = float("inf")
    o = flash_attention(q, k, v, causal=True)
    od = diffmax_attention(q, k, v, 0.5, causal=True)
    return o.isnan().sum(1 if False else -1)[0, 0].tolist(), od.isnan().sum(-1)[0, 0].tolist()
print("reference", run(False))
os.environ["TRITON_INTERPRET"] = "1"
print("triton   ", run(True))
