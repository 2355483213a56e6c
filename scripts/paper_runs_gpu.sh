#!/usr/bin/env bash
# Issue 17's device run, as one command on a machine with a CUDA GPU and many cores:
#   scripts/paper_runs_gpu.sh OUT_DIR [SECONDS]
# 1. On the GPU, the paper profile's AEVB runs that fit (docs/gpu.md): Figure 3 at
#    both Ntrain (6x10^7 samples, seeds 1-3 stacked in one process), each followed by Appendix D at
#    every checkpoint (the paper profile's marginal-likelihood settings), and Figure 2's MNIST
#    Nz = 20 (10^8 samples, seeds 1-3 stacked). Cut at the deadline (SECONDS, default 540, from the
#    start; training stops 120 s before it), never extrapolated: an unfinished run keeps its curve
#    so far and is reported "not run". (Figure 3's wake-sleep, whose eager GPU step is too slow for
#    this window, trains on a CPU: docs/gpu.md.)
# 2. On the CPU cores beside it, one thread each: the experiments that explain the trailing MNIST
#    panels of Figure 2 (docs/fidelity.md): the default profile's budget with a fixed step size,
#    other seeds, N(0, 0.1^2) initialisation, and binarize: dynamic.
# 3. The device tests (tests/test_devices.py --device cuda).
# (Branch cuda-graphs holds a CUDA-graph replay of the stacked AEVB update, written for this run and
# tested on the CPU only: no GPU was lent when it was to run. docs/gpu.md.)
# Writes into OUT_DIR: environment.json, tests.log, runs.log, train_*.log, ml_*.log,
# paper_runs.tar.gz (run directories without checkpoints, marginal-likelihood rows),
# experiments.tar.gz. Data from $VAEBENCH_DATA_MIRRORS (mnist.pkl.gz and freyfaces.pkl, verified
# against their sha256).
set -uo pipefail
OUT=${1:?usage: scripts/paper_runs_gpu.sh OUT_DIR [SECONDS]}
BUDGET=${2:-540}
START=$(date +%s)
cd "$(dirname "$0")/.."
mkdir -p "$OUT"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
DEVICE=${DEVICE:-cuda}  # DEVICE=cpu rehearses the script on a machine without a GPU
EXPERIMENT_JOBS=${EXPERIMENT_JOBS:-10}
left() { echo $(( BUDGET - ($(date +%s) - START) )); }
log() { echo "[$(( $(date +%s) - START )) s] $*" | tee -a "$OUT/runs.log"; }

"$PY" - > "$OUT/environment.json" <<'PYEOF'
import json, os, platform, torch
cuda = torch.cuda.is_available()
print(json.dumps({"torch": torch.__version__, "cuda": torch.version.cuda, "cuda_available": cuda,
                  "device": torch.cuda.get_device_name(0) if cuda else None, "cpu_count": os.cpu_count(),
                  "python": platform.python_version()}))
PYEOF
cat "$OUT/environment.json"
# MPS lets the GPU run several processes' kernels at once (they are small); without it, fine too.
if [ "$DEVICE" = cuda ] && command -v nvidia-cuda-mps-control >/dev/null; then
  nvidia-cuda-mps-control -d && log "MPS started" || log "MPS not started"
fi

log "data"
{ "$PY" -m pipeline.cli data download --raw-dir data/raw &&
  "$PY" -m pipeline.cli data prepare --raw-dir data/raw --prepared-dir data/prepared; } >> "$OUT/runs.log" 2>&1 \
  || { log "data preparation failed"; exit 1; }

params() {  # params.yaml with a profile, device and changes (dotted.key=yaml value) -> a file
  local file; file=$(mktemp --suffix=.yaml)
  "$PY" - "$file" "$@" <<'PYEOF'
import sys, yaml
params = yaml.safe_load(open("params.yaml"))
params["data"]["mirrors"] = []
for change in sys.argv[2:]:
    key, value = change.split("=", 1)
    node = params
    *path, last = key.split(".")
    for part in path:
        node = node[part]
    node[last] = yaml.safe_load(value)
yaml.safe_dump(params, open(sys.argv[1], "w"))
PYEOF
  echo "$file"
}

# 1. the paper budget on the GPU: train, then Appendix D, per configuration, all at once
PAPER=$(params profile=paper training.device="$DEVICE")
TRAIN_LEFT=$(( $(left) - 120 ))
paper_configuration() {  # experiment name train-options...
  local experiment=$1 name=$2; shift 2
  VAEBENCH_THREADS=1 timeout --signal=INT "$TRAIN_LEFT" "$PY" -m pipeline.cli train --params "$PAPER" --no-progress \
    --experiment "$experiment" --dataset mnist --out "runs/$experiment/$name" "$@" >> "$OUT/train_$name.log" 2>&1 \
    || { log "$name: training cut or failed"; return; }
  log "$name: trained"
  [ "$experiment" = fig3 ] || return
  VAEBENCH_THREADS=1 timeout --signal=INT "$(( $(left) - 15 ))" "$PY" -m pipeline.cli evaluate marginal-likelihood \
    --params "$PAPER" --run "runs/fig3/$name" --device "$DEVICE" --no-progress >> "$OUT/ml_$name.log" 2>&1 \
    && log "$name: marginal likelihood done" || log "$name: marginal likelihood cut or failed"
}
log "paper-budget runs start"
paper_configuration fig3 mnist_ntrain1000_aevb --nz 3 --ntrain 1000 --algorithm aevb &
paper_configuration fig3 mnist_ntrain50000_aevb --nz 3 --ntrain 50000 --algorithm aevb &
paper_configuration fig2 mnist_nz20_aevb --nz 20 --algorithm aevb &

# 3. the device tests, beside them
( "$PY" -m pytest -q -p no:cacheprovider tests/test_devices.py --device "$DEVICE" > "$OUT/tests.log" 2>&1;
  log "device tests: $(tail -1 "$OUT/tests.log")" ) &

# 2. the Figure 2 experiments on the CPU cores, longest first, one thread each
DEFAULT_CPU=$(params profile=default training.device=cpu)
STEP_001=$(params profile=default training.device=cpu optimizer.step_size=0.01)
STEP_002=$(params profile=default training.device=cpu optimizer.step_size=0.02)
INIT_01=$(params profile=default training.device=cpu model.init_std=0.1)
DYNAMIC=$(params profile=default training.device=cpu training.binarize=dynamic)
mkdir -p experiments
{
  for nz in 200; do
    echo "ws_nz${nz}_step0.02 $STEP_002 wake_sleep $nz 1"
    echo "ws_nz${nz}_init0.1 $INIT_01 wake_sleep $nz 1"
    echo "ws_nz${nz}_seed2 $DEFAULT_CPU wake_sleep $nz 2"
  done
  for nz in 200 10 5; do
    echo "aevb_nz${nz}_seed2 $DEFAULT_CPU aevb $nz 2"
    echo "aevb_nz${nz}_seed3 $DEFAULT_CPU aevb $nz 3"
    echo "aevb_nz${nz}_init0.1 $INIT_01 aevb $nz 1"
  done
  echo "aevb_nz200_step0.01 $STEP_001 aevb 200 1"
  echo "aevb_nz10_step0.02 $STEP_002 aevb 10 1"
  echo "aevb_nz5_step0.02 $STEP_002 aevb 5 1"
  for nz in 200 20 10 5 3; do
    echo "aevb_nz${nz}_dynamic $DYNAMIC aevb $nz 1"
  done
} > experiments/list.txt
experiment() {  # name params algorithm nz seed
  [ "$(left)" -gt 150 ] || { echo "$1 not started (time)"; return; }
  VAEBENCH_THREADS=1 OMP_NUM_THREADS=1 timeout --signal=INT "$(( $(left) - 15 ))" \
    "$PY" -m pipeline.cli train --params "$2" --no-progress --experiment fig2 --dataset mnist \
    --algorithm "$3" --nz "$4" --seed "$5" --device cpu --out "experiments/$1" > "experiments/$1.log" 2>&1 \
    && echo "$1 done" || echo "$1 cut or failed"
}
export -f experiment left
export START BUDGET PY
xargs -P "$EXPERIMENT_JOBS" -L 1 bash -c 'experiment "$@"' _ < experiments/list.txt >> "$OUT/runs.log" 2>&1 &

wait
log "all done or cut"
tar czf "$OUT/experiments.tar.gz" --exclude='checkpoints' experiments 2>/dev/null
tar czf "$OUT/paper_runs.tar.gz" --exclude='checkpoints' runs .vaebench/unfinished 2>/dev/null
(cd "$OUT" && tar czf logs.tar.gz train_*.log ml_*.log 2>/dev/null && rm -f train_*.log ml_*.log)
tail -40 "$OUT/runs.log"
ls -l "$OUT"
log "paper_runs_gpu: $(( $(date +%s) - START )) s"
