#!/usr/bin/env bash
# results/cifar10_resnet20_latency: autoslim's search under a measured-latency budget (CPU, torch, batch 1, one
# thread) on the committed ResNet-20 supernet of results/cifar10_resnet20, its pick timed again in a fresh process,
# retrained from scratch with the recipe of results/cifar10_resnet20 (15 epochs, seeds 0 and 1), and compared with
# the uniform networks retrained there, every one timed the same way: the uniform line at the pick's latency; and,
# by supernet score, against the MACs search's network and the uniform network of equal measured latency (compare).
# Every stage resumes where it stopped: re-run this script after an interruption.
#
#   results/cifar10_resnet20_latency/reproduce.sh                 # from the repository root, with the README's venv
#   PARALLEL=1 results/cifar10_resnet20_latency/reproduce.sh      # retrain the two seeds side by side
set -euo pipefail
cd "$(dirname "$0")/../.."
AUTOSLIM=${AUTOSLIM:-.venv/bin/autoslim}
PYTHON=${PYTHON:-.venv/bin/python}
# The budget. 1 ms was fixed first, from an earlier measurement of uniform 0.27x (0.74 ms) and 1.06x (1.92 ms); this
# machine's latency model put the largest config at 6.2 ms and uniform 0.27x at 0.98 ms, so 1 ms was ~60 greedy steps
# away and at the edge of the uniform networks. 2.5 ms (between uniform 0.55x, 1.29 ms, and 0.69x, 2.63 ms, as
# predicted) replaced it before any search reached either budget.
LATENCY=${LATENCY:-2.5ms}
RETRAIN_EPOCHS=${RETRAIN_EPOCHS:-15}
SEEDS=${SEEDS:-"0 1"}
DATA=${DATA:-data/cifar10.npz}
RUNS=${RUNS:-runs/cifar10_resnet20_latency}
RESULTS=results/cifar10_resnet20_latency
SUPERNET=results/cifar10_resnet20/variants/supernet   # the committed weights-only supernet (no training)
STAGES=${STAGES:-"search check retrain time compare table"}
has_stage() { [[ " $STAGES " == *" $1 "* ]]; }
log() { echo "[$(date +%H:%M:%S)] $*"; }
if [ ! -f "$DATA" ]; then
  mkdir -p "$(dirname "$DATA")"
  "$PYTHON" ../shared/data/cifar10/prepare.py "$DATA"
fi
mkdir -p "$RUNS"
pick="$RUNS/search/configs/latency-$LATENCY.yaml"

if has_stage search; then
  # a copy of the supernet: the latency model is measured into RUN/latency/, not into the committed results
  if [ ! -f "$RUNS/supernet/checkpoint.pt" ]; then
    mkdir -p "$RUNS/supernet" && cp "$SUPERNET"/checkpoint.pt "$SUPERNET"/run.yaml "$SUPERNET"/summary.json "$RUNS/supernet/"
  fi
  if [ -f "$RUNS/search/summary.json" ] && [ -f "$pick" ]; then
    log "search: already done"
  else
    log "search --latency $LATENCY (the latency model is measured first)"
    /usr/bin/time -f "search wall %e s" "$AUTOSLIM" search "$RUNS/supernet" --latency "$LATENCY" --data-dir "$DATA" \
      --out "$RUNS/search"
  fi
fi

if has_stage check; then
  log "held-out check: the pick exported and timed in a fresh process"
  "$PYTHON" benchmarks/check_latency_picks.py "$RUNS/search" | tee "$RUNS/check.txt"
fi

retrain_seed() {
  log "retrain latency-$LATENCY seed $1, $RETRAIN_EPOCHS epochs"
  "$AUTOSLIM" retrain "$pick" --epochs "$RETRAIN_EPOCHS" --dataset cifar10 --data-dir "$DATA" --seed "$1" \
    --device cpu --out "$RUNS/retrain/latency-$LATENCY/seed$1"
}
if has_stage retrain; then
  if [ "${PARALLEL:-0}" = 1 ]; then
    for seed in $SEEDS; do OMP_NUM_THREADS=1 retrain_seed "$seed" > "$RUNS/retrain-seed$seed.log" 2>&1 & done
    wait
  else
    for seed in $SEEDS; do retrain_seed "$seed"; done
  fi
fi

if has_stage time; then
  log "timing the pick and every retrained uniform network (batch 1, one thread, torch)"
  "$PYTHON" "$RESULTS/time_networks.py" "$RUNS/supernet" "$RUNS" "$RUNS/latency.csv"
fi

if has_stage compare; then
  # the MACs search of the same protocol (slices of 1,024, 3 s.e.: the default when the latency search ran)
  log "compare: the pick, the MACs search and the uniform network at equal measured latency, by supernet score"
  "$PYTHON" benchmarks/compare_latency_search.py "$RUNS/search" results/cifar10_resnet20/default_1024/search \
    --label "latency-$LATENCY" --rounds 7 --window 6 --score chosen --data-dir "$DATA" --csv "$RESULTS/compare.csv" \
    | tee "$RESULTS/compare.txt"
fi

if has_stage table; then
  "$PYTHON" "$RESULTS/make_table.py" "$RUNS" "$RESULTS"
fi
