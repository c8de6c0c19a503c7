"""Kernel µs of diffmax attention fwd + bwd at D = 64, Dv = 128 / 256 (bf16): tiles of the wider head dim against q's."""
import json, os, torch, triton.testing as tt
from flashmarkov.diffmax import attention as A
rows = []
for Dv in (128, 256):
    q, k = (torch.randn(1, 16, 4096, 64, device="cuda", dtype=torch.bfloat16) for _ in range(2))
    v = torch.randn(1, 16, 4096, Dv, device="cuda", dtype=torch.bfloat16)
    do = torch.randn(1, 16, 4096, Dv, device="cuda", dtype=torch.bfloat16)
    outs = {}
    for name, cfg in (("q-dim tiles (old)", A.pick_config(64, 2)), ("wider-dim tiles (new)", None)):
        fwd = lambda: A.attention_fwd_launch(q, k, v, 0.5, False, 0.125, (-1, -1), 50, cfg)
        o, tau, rn, st = fwd()
        bwd = lambda: A.attention_bwd_launch(q, k, v, do, tau, rn, st, 0.5, False, 0.125, (-1, -1), cfg)
        g = bwd()
        outs[name] = (o, *g)
        t_f, t_b = tt.do_bench(fwd, warmup=50, rep=200), tt.do_bench(bwd, warmup=50, rep=200)
        rows.append(dict(Dv=Dv, tiles=name, fwd_ms=t_f, bwd_ms=t_b))
        print(f"D=64 Dv={Dv} {name:22s} fwd {t_f:.3f} ms  bwd {t_b:.3f} ms", flush=True)
    a, b = outs.values()
    print("  max |diff| o, dq, dk, dv:", [float((x.float() - y.float()).abs().max()) for x, y in zip(a, b)], flush=True)
json.dump(rows, open(os.path.join(os.environ.get("OUT", "."), "dv-tiles.json"), "w"), indent=1)
