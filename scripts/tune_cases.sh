export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1
CS=$(command -v compute-sanitizer || ls /opt/nvidia/nsight-compute/*/compute-sanitizer /usr/local/cuda/bin/compute-sanitizer 2>/dev/null | head -1)
for m in fwd bwd; do timeout 60 $CS --print-limit 3 python3 benchmarks/scan_crash.py 2,4096,256 bfloat16 64,32,4,4 $m > $OUT/san_$m.log 2>&1; grep -E "Invalid|at |ok|ERROR SUMMARY" $OUT/san_$m.log | head -8; done
for i in $(seq 0 15); do timeout 45 python3 benchmarks/scan_tune.py --case $i --out $OUT --configs "$(python3 -c "
i=$i; tc = i % 2 == 0; f32 = (i // 2) % 2 == 0
print({(True,True):'2048,2,4;1024,2,4;2048,2,8;4096,2,8;1024,4,4', (True,False):'2048,2,4;1024,2,4;2048,2,8;4096,2,8;1024,4,4', (False,True):'32,64,4;128,16,4;64,32,4;256,8,4;128,32,8', (False,False):'16,128,4;128,16,4;64,32,4;256,8,4;32,64,4'}[(tc,f32)])")" 2>&1 | grep -E "^(bdt|btd|FAILED)" ; done
