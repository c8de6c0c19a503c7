#!/usr/bin/env bash
# Everything flashmarkov does on the lent GPU machine, by steps:
#   bash scripts/gpu.sh [peers] [tests] [bench] [opbench] [check] [demo] [tune] [ncu-scan] [profile-diffmax] [host] [probe] [overlap] [pack]     (default: tests bench)
# host: benchmarks/host_overhead.py (host µs per public call); probe: benchmarks/attention_probe.py (PROBE_ARGS);
# overlap: benchmarks/overlap_probe.py (do MUFU and the tensor cores run at once on one SM?).
# env: TEST_PATHS (default tests), TEST_WORKERS (pytest-xdist workers, default 8), BENCH_LAYOUTS (default "bdt btd"), BENCH_IMPLS, BENCH_TIMEOUT,
# FLASHMARKOV_COMMIT (required by bench and opbench: the records' commit, from the calling side's checkout),
# SLOW_PEER (bench: skip a peer for the rest of the run once it takes more than this many times the floor; default 50, 0: never),
# BENCH_WARMUP (do_bench warm-up per measurement, ms; default 100: with 10, one row per run came out ~2x slow where no
# probe reproduces it (sessions 14-15), mostly the first implementation timed after a case's float64 reference; a clock
# or power transient is the guess, not verified; the longer warm-up costs ~10-20 s per bench),
# BENCH_REPEATS (bench/opbench: time each row this many times and record the median, `--repeats`; default 1).
# opbench: `python -m flashmarkov.bench OP` for each OP in $OPBENCH (default attention diffmax
# diffusion) into $OUT/OP/. pack (last): one archive $OUT/results.tgz, since the device tool
# returns at most 8 files.
# peers: installs the scan peers from .whl/ (bash ../shared/tools/peer-wheels.sh; carry .whl) into
# /tmp/site. bench writes $OUT/bdt/ and $OUT/btd/ (scan.json, .md, .png), one run per layout so a
# timeout loses at most one. Logs go to $OUT; the last lines printed are the summary tables.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD/src:/tmp/site${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/flashmarkov-out}
mkdir -p "$OUT"
steps=${*:-tests bench}
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__, torch.cuda.get_device_name())"
status=0
# the device's copy of the tree may carry a stale .git (session 14: a record said ff9ee07 for f5e0ced's tree):
# benches take their commit from FLASHMARKOV_COMMIT, which the calling side sets from its own checkout
case " $steps " in *" bench "*|*" opbench "*)
  if [ -z "${FLASHMARKOV_COMMIT:-}" ]; then
    echo "bench/opbench: set FLASHMARKOV_COMMIT=\$(git rev-parse --short HEAD) on the calling side (the device's .git may be stale)"
    exit 2
  fi ;;
esac
for step in $steps; do
  echo "=== $step"
  case $step in
    peers)
      python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
      python3 -m pip install -q --no-index --no-deps --no-build-isolation --target /tmp/site .whl/keopscore-*.tar.gz .whl/pykeops-*.tar.gz \
        || echo "pykeops did not install; benchmark without it"
      (cd /tmp && MAX_JOBS=16 timeout "${PEER_BUILD_TIMEOUT:-240}" python3 -m pip install -q --no-index --no-deps --no-build-isolation --target /tmp/site "$OLDPWD"/.whl/fpscan-*.tar.gz) \
        || echo "fpscan did not build; benchmark without it" ;;
    tests)
      # several workers: most of the GPU tests' time is Triton compiling ~200 kernel variants on the CPU.
      # pytest-xdist travels as a wheel in .whl/ (the machine has no network); serial without it.
      workers="-n ${TEST_WORKERS:-8}"
      python3 -c "import xdist" 2>/dev/null || python3 -m pip install -q --no-index --no-deps --target /tmp/site \
        .whl/pytest_xdist-*.whl .whl/execnet-*.whl 2>/dev/null || workers=""
      # gpu: GPU-only tests; triton: the tests that force the Triton kernels (interpreted on CPU, compiled here).
      # tests marked bigmem (tens of GiB each) run after, one at a time: in parallel they exhaust the GPU's memory
      timeout "${TEST_TIMEOUT:-560}" python3 -m pytest ${TEST_PATHS:-tests} -m "(gpu or triton) and not bigmem" -q --maxfail=5 -p no:cacheprovider \
        $workers 2>&1 | tee "$OUT/gpu-tests.log" | tail -4
      status=$((status | PIPESTATUS[0]))
      timeout 200 python3 -m pytest ${TEST_PATHS:-tests} -m "gpu and bigmem" -q -p no:cacheprovider 2>&1 | tee -a "$OUT/gpu-tests.log" | tail -2
      rc=${PIPESTATUS[0]}; [ "$rc" = 5 ] || status=$((status | rc)) ;;  # 5: no bigmem test selected
    bench)
      for layout in ${BENCH_LAYOUTS:-bdt btd}; do
        mkdir -p "$OUT/$layout"
        timeout "${BENCH_TIMEOUT:-400}" python3 -m flashmarkov.bench scan --layouts "$layout" --out "$OUT/$layout" \
          --warmup "${BENCH_WARMUP:-100}" --rep 50 --repeats "${BENCH_REPEATS:-1}" --compile-budget 40 --slow-peer "${SLOW_PEER:-50}" --impls "${BENCH_IMPLS:-flashmarkov,accelerated-scan.triton,fpscan,fla,torch}" \
          > "$OUT/bench-$layout.log" 2>&1
        status=$((status | $?))
        tail -30 "$OUT/bench-$layout.log"
      done ;;
    opbench)
      for op in ${OPBENCH:-attention diffmax diffusion}; do
        mkdir -p "$OUT/$op"
        timeout "${BENCH_TIMEOUT:-300}" python3 -m flashmarkov.bench "$op" --out "$OUT/$op" --warmup "${BENCH_WARMUP:-100}" --rep 50 --repeats "${BENCH_REPEATS:-1}" ${OPBENCH_ARGS:-} \
          > "$OUT/bench-$op.log" 2>&1
        status=$((status | $?))
        tail -25 "$OUT/bench-$op.log"
      done ;;
    pack)
      # the device tool returns at most 8 files from $OUT: pack everything into one archive
      tar czf /tmp/flashmarkov-results.tgz -C "$OUT" . && find "$OUT" -mindepth 1 -delete \
        && mv /tmp/flashmarkov-results.tgz "$OUT/results.tgz" ;;
    check) timeout 300 python3 -m flashmarkov.cli check --quick 2>&1 | tail -8; status=$((status | PIPESTATUS[0])) ;;
    demo)  python3 -m flashmarkov.cli demo 2>&1 | tail -10; status=$((status | PIPESTATUS[0])) ;;
    tune)  timeout "${TUNE_TIMEOUT:-400}" python3 benchmarks/scan_tune.py --out "$OUT" ${TUNE_ARGS:-} 2>&1 | tee "$OUT/tune.log" | tail -${TUNE_TAIL:-20} ;;
    ncu-scan)  # Nsight Compute on the first scan kernel of one tune case (NCU_CASE: scan_tune.py arguments)
      timeout 240 ncu --section SpeedOfLight --section Occupancy --section WarpStateStats --section MemoryWorkloadAnalysis \
        --section LaunchStats -k regex:_linear_scan -c "${NCU_COUNT:-1}" python3 benchmarks/scan_tune.py --out /tmp ${NCU_CASE:---layout btd --shapes 1 --dtypes bfloat16 --default-only} \
        > "$OUT/ncu-scan.log" 2>&1; grep -E "^  [A-Z_a-z]|Throughput|Occupancy|Registers|Stall|Warp Cycles|Eligible|Issued|Duration|==PROF==|Block Limit" "$OUT/ncu-scan.log" | head -${NCU_TAIL:-70} ;;
    profile-diffmax)
      timeout 300 python3 -c "from flashmarkov.bench.diffmax import profile_attention; profile_attention()" 2>&1 | tee "$OUT/profile-diffmax.log" | tail -30 ;;
    host)  timeout 150 python3 benchmarks/host_overhead.py > "$OUT/host.log" 2>&1; tail -12 "$OUT/host.log" ;;
    probe) timeout 200 python3 benchmarks/attention_probe.py ${PROBE_ARGS:-} 2>&1 | tee "$OUT/probe.log" | tail -12 ;;
    overlap) timeout 200 python3 benchmarks/overlap_probe.py --out "$OUT" 2>&1 | tee "$OUT/overlap.log" | tail -4 ;;
    *)     echo "unknown step $step"; status=1 ;;
  esac
done
exit $status
