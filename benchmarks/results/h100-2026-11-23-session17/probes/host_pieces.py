"""Host µs of the pieces of an attention call on this machine (development probe)."""
import time, torch, sys
from flashmarkov.attention import flash_attention, op as aop
from flashmarkov.attention import forward as fw
from flashmarkov import _launch
from triton.runtime.driver import driver

def t(fn, n=3000):
    for _ in range(300): fn()
    best = 1e9
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(n): fn()
        best = min(best, (time.perf_counter() - t0) / n)
    if torch.cuda.is_available(): torch.cuda.synchronize()
    return best * 1e6

class Empty(torch.autograd.Function):
    @staticmethod
    def forward(ctx, a, b, c):
        return a.new_empty(a.shape)
    @staticmethod
    def backward(ctx, g):
        return g, g, g

rows = []
# CUDA pieces (real), small problem: GPU work tiny
dev = "cuda"
q, k, v, do = (torch.randn(32, 8, 128, 64, device=dev, dtype=torch.bfloat16, requires_grad=i < 3) for i in range(4))
qd = q.detach()
o, lse = aop.attention_fwd(qd, k.detach(), v.detach(), None, None, 128, 128, False, 0.125, -1, -1, 0.0)
prob = fw.make_problem(qd, k, None, None, 128, 128, 0.125, False, -1, -1, 0.0)
def nograd():
    with torch.no_grad():
        flash_attention(q, k, v)
cases = {
 "python: 1000 adds": lambda: sum(range(1000)),
 "empty_like cuda": lambda: torch.empty_like(qd),
 "new_empty cuda": lambda: qd.new_empty((32, 8, 128), dtype=torch.float32),
 "torch.cuda.current_device": torch.cuda.current_device,
 "driver get_current_stream": lambda: driver.active.get_current_stream(0),
 "data_ptr": qd.data_ptr,
 "stride": qd.stride,
 "untyped_storage().nbytes()": lambda: qd.untyped_storage().nbytes(),
 "make_problem": lambda: fw.make_problem(qd, k, None, None, 128, 128, 0.125, False, -1, -1, 0.0),
 "attention_forward (launch only)": lambda: fw.attention_forward(qd, k.detach(), v.detach(), o, lse, prob),
 "attention_fwd direct": lambda: aop.attention_fwd(qd, k.detach(), v.detach(), None, None, 128, 128, False, 0.125, -1, -1, 0.0),
 "flash_attention no_grad": nograd,
 "flash_attention grad": lambda: flash_attention(q, k, v),
 "attention_bwd direct": lambda: aop.attention_bwd(do, qd, k.detach(), v.detach(), o, lse, None, None, None, 128, 128, False, 0.125, -1, -1, 0.0),
 "empty Function fwd+bwd": lambda: torch.autograd.grad(Empty.apply(q, k, v), (q, k, v), do),
 "flash fwd+bwd": lambda: torch.autograd.grad(flash_attention(q, k, v), (q, k, v), do),
}
for name, fn in cases.items():
    n = 300 if "fwd+bwd" in name or "direct" in name or "flash" in name or "launch" in name else 3000
    print(f"{name:34s} {t(fn, n):8.2f} us", flush=True)
