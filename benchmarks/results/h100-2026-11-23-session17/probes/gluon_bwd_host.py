"""Host µs of attention_bwd launched directly (main thread), Triton vs Gluon paths, and a cProfile of the Gluon one."""
import cProfile, io, pstats, time, torch
from flashmarkov.attention import op as aop, gluon_backward as gb
from flashmarkov import _launch

def t(fn, n=400):
    for _ in range(50): fn()
    torch.cuda.synchronize()
    best = 1e9
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(n): fn()
        best = min(best, (time.perf_counter() - t0) / n)
        torch.cuda.synchronize()
    return best * 1e6

OLD = dict(gb.MIN_WORK)
orig_plan = gb.plan
for B, H, S, D in ((32, 8, 128, 64), (32, 8, 128, 128)):
    q, k, v, do = (torch.randn(B, H, S, D, device="cuda", dtype=torch.bfloat16) for _ in range(4))
    o, lse = aop.attention_fwd(q, k, v, None, None, S, S, False, D ** -0.5, -1, -1, 0.0)
    run = lambda: aop.attention_bwd(do, q, k, v, o, lse, None, None, None, S, S, False, D ** -0.5, -1, -1, 0.0)
    for name, flags in (("triton", (False, False)), ("gluon dkdv", (True, False)), ("gluon both", (True, True))):
        gb.plan = lambda *a, flags=flags: flags
        print(f"{B}x{H}x{S}x{D} {name:11s} attention_bwd direct {t(run):7.1f} µs/call", flush=True)
    gb.plan = lambda *a: (True, True)
    p = cProfile.Profile(); p.enable()
    for _ in range(300): run()
    p.disable(); torch.cuda.synchronize()
    s = io.StringIO(); pstats.Stats(p, stream=s).sort_stats("tottime").print_stats(16); print(s.getvalue()[:2600])
    gb.plan = orig_plan
