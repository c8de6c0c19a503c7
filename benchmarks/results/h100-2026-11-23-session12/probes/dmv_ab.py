"""A/B of the plain M·V product (k = 16) between two source trees, alternating processes."""
import json, os, subprocess, sys
CHILD = r'''
import json, sys, torch, triton.testing as tt
from flashmarkov.bench.diffusion import _flashmarkov, make_inputs
from flashmarkov.bench.registry import Case
res = []
for n, d in [(65536, 3), (65536, 16), (262144, 3), (262144, 16)]:
    x = make_inputs(Case("diffusion", "MV", "fwd", "float32", (n, d, 16), n, False), torch.device("cuda"), 0)
    ms = tt.do_bench(lambda: _flashmarkov(x.X, x.V, x.r, x.beta), warmup=30, rep=int(sys.argv[1]))
    res.append((n, d, ms, n * n / ms / 1e6))
print("RES", json.dumps(res))
'''
trees = {"old": "tmp_probe/old_src/src", "new": "src"}
out = {k: [] for k in trees}
for rnd in range(int(sys.argv[1]) if len(sys.argv) > 1 else 2):
    for name, src in trees.items():
        env = dict(os.environ, PYTHONPATH=os.path.abspath(src))
        r = subprocess.run([sys.executable, "-c", CHILD, "400"], env=env, capture_output=True, text=True)
        line = [l for l in r.stdout.splitlines() if l.startswith("RES")]
        if not line:
            print(name, "FAILED", r.stderr[-2000:]); continue
        res = json.loads(line[0][4:]); out[name].append(res)
        print(name, rnd, "  ".join(f"{n}x{d}: {ms:.3f} ms {gp:.0f}" for n, d, ms, gp in res), flush=True)
json.dump(out, open(os.path.join(os.environ.get("OUT", "/tmp"), "dmv_ab.json"), "w"))
