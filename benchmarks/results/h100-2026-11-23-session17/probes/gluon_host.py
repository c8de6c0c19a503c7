"""Why the public fwd+bwd costs more host time with the Gluon dK/dV: encodes per call, bound misses, thread."""
import time, torch, triton.testing as tt
from flashmarkov import _launch
from flashmarkov.attention import flash_attention, gluon_backward as gb
counts = {"encode": 0, "miss": 0}
orig_args = _launch._Encoded.args
def args(self, ptrs):
    enc = self.encode
    def counted(*a):
        counts["encode"] += 1
        return enc(*a)
    self.encode = counted
    try:
        return orig_args(self, ptrs)
    finally:
        self.encode = enc
_launch._Encoded.args = args
orig_call = _launch.LeanKernel.__call__
def call(self, grid, static, ptrs, ints, floats, options):
    n = len(self.bound)
    r = orig_call(self, grid, static, ptrs, ints, floats, options)
    if len(self.bound) != n:
        counts["miss"] += 1
    return r
_launch.LeanKernel.__call__ = call
OLD = dict(gb.MIN_WORK)
for B, H, S, D in ((16, 8, 512, 64), (32, 8, 128, 128)):
    q, k, v = (torch.randn(B, H, S, D, device="cuda", dtype=torch.bfloat16, requires_grad=True) for _ in range(3))
    do = torch.randn_like(q)
    def public():
        torch.autograd.grad(flash_attention(q, k, v), (q, k, v), do)
    def single():
        torch.autograd.set_multithreading_enabled(False)
        try:
            public()
        finally:
            torch.autograd.set_multithreading_enabled(True)
    for name, mw in (("tree", OLD), ("gluon", {key: 0 for key in OLD})):
        gb.MIN_WORK = mw
        for _ in range(30):
            public()
        torch.cuda.synchronize()
        counts.update(encode=0, miss=0)
        t0 = time.perf_counter()
        for _ in range(200):
            public()
        torch.cuda.synchronize()
        host = (time.perf_counter() - t0) / 200 * 1e6
        enc, miss = counts["encode"] / 200, counts["miss"] / 200
        t1 = time.perf_counter()
        for _ in range(200):
            single()
        torch.cuda.synchronize()
        host1 = (time.perf_counter() - t1) / 200 * 1e6
        bench = [tt.do_bench(public, warmup=50, rep=200) * 1e3 for _ in range(2)]
        print(f"{B}x{H}x{S}x{D} {name:6s} back-to-back {host:6.1f} µs/call (1 thread {host1:6.1f}), encodes/call {enc:.2f}, "
              f"bound misses/call {miss:.2f}, do_bench {bench[0]:.0f} {bench[1]:.0f}", flush=True)
    gb.MIN_WORK = OLD
