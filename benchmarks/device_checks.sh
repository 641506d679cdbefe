#!/usr/bin/env bash
# The device checks in one run, on a 16-core machine with one NVIDIA GPU (no network there):
#   bash benchmarks/device_checks.sh OUTDIR [STAGES]
# STAGES, comma-separated (default: overhead,tests,hypergrad,eigh,cuda):
#   overhead   four CPU overhead measurements side by side, each pinned to its own two cores with
#              two threads (like CI's 2-core machine, without its neighbours' noise), in the
#              background on cores 0-7 while the GPU stages below use cores 8-15;
#   tests      the tests that need CUDA, and `sipgrad hypergrad --device cuda` once;
#   hypergrad  benchmarks/hypergradient.py's paired and m blocks on the GPU;
#   eigh       benchmarks/cuda_eigh.py: where pca:K's eigendecompositions should run;
#   cuda       benchmarks/cuda_checks.py: CUDA vs CPU maps, evaluator records, GPU speed.
# The GPU stages run one after another (each alone on the GPU), each under its own time limit.
# Wheels for what that machine lacks (captum, the Lite0 weights package, higher) are carried in .whl/.
# Results: OUTDIR/*.json and all.txt (every stage's log).
set -u
OUT=${1:-/tmp/device-out}
STAGES=,${2:-overhead,tests,hypergrad,eigh,cuda},
mkdir -p "$OUT" /tmp/site
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || exit 1
fi
ln -sfn "$PWD/cli" /tmp/site/sipgrad_cli
export PYTHONPATH=/tmp/site:$PWD MPLBACKEND=Agg PYTHONUNBUFFERED=1
nvidia-smi -L || true
python3 -c 'import torch; print("torch", torch.__version__)'
pin() { if taskset -c "$1" true 2>/dev/null; then echo "taskset -c $1"; fi; }
wanted() { [[ $STAGES == *",$1,"* ]]; }
overhead() {  # cores name args...
  local cores=$1 name=$2; shift 2
  timeout 480 $(pin "$cores") env OMP_NUM_THREADS=2 python3 benchmarks/sip_overhead.py --batches 16 "$@" \
    --out "$OUT/overhead_$name.json" > "$OUT/$name.log" 2>&1
}
if wanted overhead; then
  overhead 0,1 resnet18_grad --models resnet18 --methods grad --sip topq:0.25,pca:8 --repeats 5 --rounds 5 &
  overhead 2,3 resnet18_ig --models resnet18 --methods ig --ig-steps 4 --sip topq:0.25 --repeats 5 --rounds 3 &
  overhead 4,5 lite0_grad --models efficientnet_lite0 --methods grad --sip topq:0.25,pca:8 --repeats 5 --rounds 5 &
  overhead 6,7 lite0_ig --models efficientnet_lite0 --methods ig --ig-steps 4 --sip topq:0.25 --repeats 5 --rounds 3 &
fi
GPU="$(pin 8-15)"
if wanted tests; then
  { timeout 90 $GPU python3 -m pytest -q -p no:cacheprovider -rs -k "cuda or device" \
      tests/engines/hypergrad/test_modes.py tests/models/test_registry.py tests/hooks/test_policies.py
    timeout 45 $GPU python3 -m sipgrad_cli hypergrad --device cuda --hyper-steps 1 --json > "$OUT/hypergrad_cli_cuda.json"
    echo "hypergrad --device cuda: exit $?"; } > "$OUT/tests.log" 2>&1
fi
if wanted hypergrad; then
  timeout 120 $GPU python3 benchmarks/hypergradient.py --device cuda --blocks paired,m --paired-rounds 25 \
    --m-rounds 3 --threads 2 --out "$OUT/hypergradient_cuda.json" > "$OUT/hypergrad.log" 2>&1
fi
if wanted eigh; then
  timeout 90 $GPU python3 benchmarks/cuda_eigh.py --out "$OUT/cuda_eigh.json" > "$OUT/eigh.log" 2>&1
fi
if wanted cuda; then
  timeout 240 $GPU python3 benchmarks/cuda_checks.py --out "$OUT/cuda_checks.json" > "$OUT/cuda.log" 2>&1
fi
wait
for log in "$OUT"/*.log; do echo "=== $(basename "$log")"; cat "$log"; done > "$OUT/all.txt"
rm -f "$OUT"/*.log
cat "$OUT/all.txt"
