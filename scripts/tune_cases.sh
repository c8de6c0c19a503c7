#!/usr/bin/env bash
# Kernel-level tile sweep on the GPU machine, one process per case so that a crash in one
# configuration cannot hide the others: bash scripts/tune_cases.sh   (results: $OUT/scan_tune_N.json)
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD/src" PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/flashmarkov-out}
mkdir -p "$OUT"
for i in $(seq 0 15); do
  timeout "${CASE_TIMEOUT:-60}" python3 benchmarks/scan_tune.py --case "$i" --out "$OUT" 2>&1 | grep -E "^(bdt|btd|FAILED)"
done
