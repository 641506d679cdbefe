#!/usr/bin/env bash
# The device checks in one run, on a 16-core machine with one NVIDIA GPU (no network there):
#   bash benchmarks/device_checks.sh OUTDIR
# Wheels for what that machine lacks (captum, the Lite0 weights package) are carried in .whl/.
# Four CPU overhead measurements run side by side, each pinned to its own two cores with two
# threads (like CI's 2-core machine, without its neighbours' noise), while the GPU checks use
# the other cores. Results: OUTDIR/*.json and one log.
set -u
OUT=${1:-/tmp/device-out}
mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || exit 1
  export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=$PWD
fi
export MPLBACKEND=Agg PYTHONUNBUFFERED=1
nvidia-smi -L || true
pin() { if taskset -c "$1" true 2>/dev/null; then echo "taskset -c $1"; fi; }
overhead() {  # cores name args...
  local cores=$1 name=$2; shift 2
  timeout 480 $(pin "$cores") env OMP_NUM_THREADS=2 python3 benchmarks/sip_overhead.py --batches 16 "$@" \
    --out "$OUT/overhead_$name.json" > "$OUT/$name.log" 2>&1
}
overhead 0,1 resnet18_grad --models resnet18 --methods grad --sip topq:0.25,pca:8 --repeats 5 --rounds 5 &
overhead 2,3 resnet18_ig --models resnet18 --methods ig --ig-steps 4 --sip topq:0.25 --repeats 5 --rounds 3 &
overhead 4,5 lite0_grad --models efficientnet_lite0 --methods grad --sip topq:0.25,pca:8 --repeats 5 --rounds 5 &
overhead 6,7 lite0_ig --models efficientnet_lite0 --methods ig --ig-steps 4 --sip topq:0.25 --repeats 5 --rounds 3 &
timeout 480 $(pin 8-15) python3 benchmarks/cuda_checks.py --out "$OUT/cuda_checks.json" > "$OUT/cuda.log" 2>&1 &
wait
for log in "$OUT"/*.log; do echo "=== $(basename "$log")"; cat "$log"; done > "$OUT/all.txt"
rm -f "$OUT"/*.log
cat "$OUT/all.txt"
