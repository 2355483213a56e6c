#!/usr/bin/env bash
# The whole GPU check (docs/gpu.md), as one command on a machine with a CUDA GPU:
#   scripts/gpu_check.sh OUT_DIR [SECONDS]
# 1. the device tests (tests/test_devices.py --device cuda): every device-specific path on the GPU;
# 2. `vaebench bench --device cuda`: samples/s per algorithm and model, and the fraction of the
#    GPU's matrix-multiply limit;
# 3. paper-budget runs, highest value first, several at once so the GPU is never waiting on one
#    process's kernel launches: Figure 3's six runs (6x10^7 samples; Appendix D at every
#    checkpoint), then MNIST Nz = 20 AEVB and wake-sleep (10^8), then the rest of Figure 2 -- each
#    cut at the deadline (SECONDS from the start, default 420), never extrapolated: a run that did
#    not finish keeps its checkpoints and curve so far and is reported as not run.
# Writes into OUT_DIR: environment.json, tests.log, bench_gpu.json, bench.log, runs.log and
# paper_runs.tar.gz (the run directories: config, curve, final.json, marginal likelihoods, and the
# checkpoints of the Figure 3 models; at most 16 MiB). The data come from $VAEBENCH_DATA_MIRRORS
# (a folder holding mnist.pkl.gz and freyfaces.pkl, verified against their sha256 as always).
# Needs python3 with torch (CUDA), numpy, scipy, pandas, matplotlib, seaborn, click, tqdm, pyyaml,
# pytest; the suite runs from this checkout (PYTHONPATH), no install.
set -uo pipefail
OUT=${1:?usage: scripts/gpu_check.sh OUT_DIR [SECONDS]}
BUDGET=${2:-420}
START=$(date +%s)
cd "$(dirname "$0")/.."
mkdir -p "$OUT"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
DEVICE=${DEVICE:-cuda}  # DEVICE=cpu rehearses the script on a machine without a GPU
vaebench() { "$PY" -m pipeline.cli "$@"; }
left() { echo $(( BUDGET - ($(date +%s) - START) )); }

"$PY" - > "$OUT/environment.json" <<'PYEOF'
import json, platform, torch
cuda = torch.cuda.is_available()
print(json.dumps({"torch": torch.__version__, "cuda": torch.version.cuda, "cuda_available": cuda,
                  "device": torch.cuda.get_device_name(0) if cuda else None, "python": platform.python_version()}))
PYEOF
cat "$OUT/environment.json"

echo "== 1. device tests"
"$PY" -m pytest -q -p no:cacheprovider tests/test_devices.py --device "$DEVICE" 2>&1 | tee "$OUT/tests.log"

echo "== 2. data, and the bench on the device ($(left) s left)"
{
  vaebench data download --raw-dir data/raw && vaebench data prepare --raw-dir data/raw --prepared-dir data/prepared
} > "$OUT/runs.log" 2>&1 || { echo "data preparation failed"; tail -5 "$OUT/runs.log"; }
vaebench bench --device "$DEVICE" --repeats 3 --no-contention --prepared-dir data/prepared \
  --out "$OUT/bench_gpu.json" 2>&1 | tee "$OUT/bench.log"

echo "== 3. paper-budget runs ($(left) s left)"
PARAMS=$(mktemp --suffix=.yaml)
"$PY" - "$PARAMS" "$DEVICE" <<'PYEOF'
import sys, yaml
params = yaml.safe_load(open("params.yaml"))
params["profile"] = "paper"
params["training"]["device"] = sys.argv[2]
params["data"]["mirrors"] = []
yaml.safe_dump(params, open(sys.argv[1], "w"))
PYEOF
train() {  # run directory, then vaebench train's options; cut at the deadline
  local out=$1; shift
  timeout --signal=INT "$(left)" "$PY" -m pipeline.cli train --params "$PARAMS" --no-progress --out "$out" "$@" \
    >> "$OUT/runs.log" 2>&1
}
for ntrain in 1000 50000; do
  for algorithm in aevb wake_sleep mcem; do
    train runs/fig3/mnist_ntrain${ntrain}_${algorithm} --experiment fig3 --dataset mnist --nz 3 \
      --ntrain $ntrain --algorithm $algorithm &
  done
done
for algorithm in aevb wake_sleep; do
  train runs/fig2/mnist_nz20_${algorithm} --experiment fig2 --dataset mnist --nz 20 --algorithm $algorithm &
done
wait
for run in runs/fig3/*/; do  # Appendix D at every checkpoint of the finished Figure 3 runs
  [ -f "$run/final.json" ] && [ "$(left)" -gt 30 ] && timeout --signal=INT "$(left)" \
    "$PY" -m pipeline.cli evaluate marginal-likelihood --run "$run" --params "$PARAMS" --device "$DEVICE" --no-progress \
    >> "$OUT/runs.log" 2>&1 &
done
wait
for dataset_nz in "mnist 3" "mnist 5" "mnist 10" "mnist 200" "frey_face 2" "frey_face 5" "frey_face 10" "frey_face 20"; do
  set -- $dataset_nz
  [ "$(left)" -gt 60 ] || break
  for algorithm in aevb wake_sleep; do
    train runs/fig2/${1}_nz${2}_${algorithm} --experiment fig2 --dataset "$1" --nz "$2" --algorithm $algorithm &
  done
  wait
done
tail -20 "$OUT/runs.log"
tar czf "$OUT/paper_runs.tar.gz" --exclude='runs/fig2/*/checkpoints' runs 2>/dev/null
ls -l "$OUT"
echo "gpu_check: $(( $(date +%s) - START )) s"
