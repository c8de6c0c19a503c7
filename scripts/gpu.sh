#!/usr/bin/env bash
# Everything flashmarkov does on the lent GPU machine, in one call:
#   bash scripts/gpu.sh [tests] [tune] [bench] [demo]     (default: tests bench)
# Peers come from .whl/ (../shared/tools/peer-wheels.sh) when carried. Results go to $OUT.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/flashmarkov-out}
mkdir -p "$OUT"
steps=${*:-tests bench}
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__, torch.cuda.get_device_name())"
status=0
for step in $steps; do
  echo "=== $step"
  case $step in
    tests) timeout ${TEST_TIMEOUT:-400} python3 -m pytest tests -m gpu -q --maxfail=5 -p no:cacheprovider --durations=5 2>&1 | tee "$OUT/gpu-tests.log" | tail -25
           status=$((status | ${PIPESTATUS[0]})) ;;
    tune)  timeout ${TUNE_TIMEOUT:-400} python3 benchmarks/scan_tune.py --out "$OUT" 2>&1 | tee "$OUT/tune.log"
           status=$((status | ${PIPESTATUS[0]})) ;;
    peers) if [ -d .whl ]; then bash .whl/install.sh 2>&1 | tail -5; fi ;;
    bench) export PYTHONPATH="$PYTHONPATH:/tmp/site"
           timeout 500 python3 -m flashmarkov.bench scan --out "$OUT" 2>&1 | tee "$OUT/bench.log" | tail -60
           status=$((status | ${PIPESTATUS[0]})) ;;
    demo)  python3 -m flashmarkov.cli demo 2>&1 | tail -20 ;;
    *)     echo "unknown step $step"; status=1 ;;
  esac
done
exit $status
