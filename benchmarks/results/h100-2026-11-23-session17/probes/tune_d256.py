"""Tile sweep for bf16 D = 256 (and 96), where the defaults were only checked offline."""
import sys, torch
from flashmarkov.attention import tune
from flashmarkov.attention.forward import AttnConfig as C
tune.CANDIDATES = {
    "fwd": [C(64, 32, 8, 2), C(64, 32, 4, 2), C(64, 64, 4, 2), C(64, 64, 8, 2), C(128, 32, 8, 2), C(128, 64, 8, 1),
            C(64, 64, 4, 1), C(128, 32, 8, 3), C(64, 32, 4, 3)],
    "dkdv": [C(32, 32, 8, 2), C(32, 32, 4, 2), C(64, 32, 8, 2), C(32, 64, 8, 2), C(64, 64, 8, 1), C(16, 64, 4, 2),
             C(32, 64, 4, 2), C(16, 32, 4, 2), C(32, 64, 8, 1)],
    "dq": [C(32, 64, 8, 2), C(64, 32, 8, 2), C(64, 64, 8, 2), C(32, 32, 4, 2), C(64, 32, 4, 2), C(128, 32, 8, 2),
           C(64, 64, 8, 1)],
}
for d in map(int, sys.argv[1:] or ["256"]):
    for causal in (False, True):
        best = tune.tune(2, 16, 4096, d, causal, torch.bfloat16)
        print(f"best D={d} causal={causal}: " + ", ".join(f"{k}={c} {t:.0f} TFLOP/s" for k, (c, t) in best.items()), flush=True)
