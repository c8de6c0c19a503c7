# session 15 diffusion call: GPU tests, the public bench, interleaved plain/sym, e2e sym vs plain
set -u
export PYTHONPATH=$PWD/src
TEST_PATHS=tests/diffusion TEST_TIMEOUT=300 bash scripts/gpu.sh tests 2>&1 | tail -6
OPBENCH=diffusion BENCH_TIMEOUT=200 bash scripts/gpu.sh opbench 2>&1 | tail -14
DEFAULT_ONLY=1 ROUNDS=2 timeout 150 python3 tmp_probe/sym3_probe.py 2>&1 | grep -v Warn > $OUT/sym_default_ab.log; cat $OUT/sym_default_ab.log
timeout 150 python3 benchmarks/diffusion_e2e.py --n 200000 --bandwidth median knn --product sym plain --out $OUT/diffusion_e2e.json 2>&1 | grep -v Warn | tail -6
