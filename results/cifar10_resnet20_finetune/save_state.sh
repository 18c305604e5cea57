#!/usr/bin/env bash
# Copy the run folders of RUNS into state/, to commit before the machine goes (reproduce.sh restores them on the next
# one and resumes): every file of RUNS but the logs of PARALLEL=1. Stop the runs first (Ctrl-C, or kill -INT the
# python processes: each saves a checkpoint), so that no file is copied half-written.
#   results/cifar10_resnet20_finetune/save_state.sh && git add results/cifar10_resnet20_finetune/state
set -euo pipefail
cd "$(dirname "$0")/../.."
RUNS=${RUNS:-runs/cifar10_resnet20_finetune}
STATE=${STATE:-results/cifar10_resnet20_finetune/state}
if pgrep -f "autoslim (train-supernet|retrain|search)|torch_pruning_baseline.py" > /dev/null; then
  echo "save_state.sh: a run is still going; stop it first (kill -INT its python process)" >&2
  exit 1
fi
(cd "$RUNS" && find . -type f ! -name '*.log' -print0) | while IFS= read -r -d '' file; do
  mkdir -p "$STATE/$(dirname "$file")"
  cmp -s "$RUNS/$file" "$STATE/$file" || cp -p "$RUNS/$file" "$STATE/$file"
done
du -sh "$STATE"
