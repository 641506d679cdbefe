#!/usr/bin/env bash
# The built-in box evaluations with the rank filter beside plain and SIP, on a CUDA machine:
#   bash benchmarks/device_evaluate.sh OUTDIR
# (docs/results.md quotes the summaries; the same commands run on CPU without --device cuda.)
set -u
OUT=${1:-/tmp/device-out}
mkdir -p "$OUT" /tmp/site
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
fi
ln -sfn "$PWD/cli" /tmp/site/sipgrad_cli
export PYTHONPATH=/tmp/site:$PWD MPLBACKEND=Agg PYTHONUNBUFFERED=1
sipgrad() { python3 -m sipgrad_cli "$@"; }
SIPS=none,topq:0.25,absq:0.25,pca:4,pca:8
sipgrad evaluate --builtin photos --method grad,gradcam --sip $SIPS --device cuda --out /tmp/eval-photos
sipgrad evaluate --builtin composites --method grad,ig --ig-steps 16 --sip $SIPS --steps 0 --device cuda \
  --out /tmp/eval-composites
for name in photos composites; do
  cp /tmp/eval-$name/summary.md "$OUT/${name}_summary.md"
  cp /tmp/eval-$name/summary.json "$OUT/${name}_summary.json"
done
