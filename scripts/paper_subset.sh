#!/usr/bin/env bash
# The paper profile's Figure 3 AEVB and wake-sleep at the paper's budget, on a CPU, and their report
# (docs/paper-budget.md):
#   scripts/paper_subset.sh [RUNS_DIR] [REPORT_DIR]       (defaults: runs-paper, reports/paper)
# A named subset of the `paper` profile with its budgets: Figure 3 (MNIST, Nz = 3, 100 hidden
# units) AEVB and wake-sleep at Ntrain = 1,000 and 50,000, 6x10^7 samples each, seed 1 (the
# profile asks for seeds 1-3), then Appendix D at every checkpoint (every 2x10^6 samples: 30)
# on the first 1,000 training and test points, with the grid and importance sampling (K = 5,000)
# at the final checkpoint. The four runs train side by side, one thread each (about an hour on a
# quiet 2-core machine, two beside other work), each stage the pipeline's own command (`vaebench
# train`, `vaebench evaluate marginal-likelihood`) with params.yaml's `profile: paper`. Interrupted,
# it resumes: training from its last checkpoint, Appendix D from its last finished checkpoint.
# Then `vaebench figures --partial` and `vaebench report --partial` render REPORT_DIR, every
# configuration of the profile that did not run marked "not run".
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-runs-paper}
REPORT=${2:-reports/paper}
PY=${PYTHON:-python3}
PARAMS=$RUNS/params.yaml
mkdir -p "$RUNS"
"$PY" - "$PARAMS" <<'PYEOF'
import sys, yaml
params = yaml.safe_load(open("params.yaml"))
params["profile"] = "paper"
yaml.safe_dump(params, open(sys.argv[1], "w"), sort_keys=False)
PYEOF
"$PY" -m pipeline.cli data download && "$PY" -m pipeline.cli data prepare
configuration() {  # ntrain algorithm
  local name=mnist_ntrain$1_$2
  VAEBENCH_THREADS=1 "$PY" -m pipeline.cli train --params "$PARAMS" --no-progress --experiment fig3 --dataset mnist \
    --nz 3 --ntrain "$1" --algorithm "$2" --seed 1 --out "$RUNS/fig3/$name" > "$RUNS/$name.log" 2>&1
  VAEBENCH_THREADS=1 "$PY" -m pipeline.cli evaluate marginal-likelihood --params "$PARAMS" --no-progress \
    --run "$RUNS/fig3/$name" --out "$RUNS/marginal_likelihood/fig3/$name" >> "$RUNS/$name.log" 2>&1
  echo "$name: done"
}
for ntrain in 1000 50000; do
  for algorithm in aevb wake_sleep; do
    configuration "$ntrain" "$algorithm" &
  done
done
wait
"$PY" -m pipeline.cli figures --params "$PARAMS" --runs "$RUNS" --out "$REPORT/figures" --partial
"$PY" -m pipeline.cli report --params "$PARAMS" --runs "$RUNS" --figures "$REPORT/figures" --out "$REPORT" --partial
