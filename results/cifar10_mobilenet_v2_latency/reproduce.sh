#!/usr/bin/env bash
# results/cifar10_mobilenet_v2_latency: the latency model and a latency search on MobileNetV2 (CIFAR strides), issue 20.
#   supernet  a brief supernet of mobilenet_v2_cifar at 1.0x (one epoch: a CPU cannot afford more; 45 min on one thread)
#   bench     benchmarks/bench_latency.py on it: the latency model's accuracy (torch and ONNX Runtime, batch 1 and 32,
#             the thread clock: this 2-core VM runs other work beside it)
#   search    `autoslim search --latency LATENCY` and `autoslim search --flops FLOPS`, side by side (one core each)
#   check     benchmarks/check_latency_picks.py: the latency pick timed in a fresh process
#   compare   benchmarks/compare_latency_search.py: the pick against the MACs search's network and the uniform network
#             of equal measured latency, by supernet score (every held-out image)
#   copy      the searches' small products (trajectory, pareto, configs, summary) into this folder
# Every stage resumes or is skipped when done: re-run this script after an interruption.
#
#   results/cifar10_mobilenet_v2_latency/reproduce.sh      # from the repository root, with the README's venv
set -euo pipefail
cd "$(dirname "$0")/../.."
AUTOSLIM=${AUTOSLIM:-.venv/bin/autoslim}
PYTHON=${PYTHON:-.venv/bin/python}
# Fixed before any search ran, from the latency model alone: 4ms is about three quarters of the full 1.0x network's
# predicted latency (batch 1); the MACs search goes to half the full network's MACs, which on this CPU is faster
# than the latency budget (at batch 1 a third of the time is per-layer overhead that MACs do not shrink).
LATENCY=${LATENCY:-4ms}
FLOPS=${FLOPS:-44M}
EVAL_BATCH=${EVAL_BATCH:-2048}   # held-out images each search scores (of 5,000): two searches of 25 units on one CPU
DATA=${DATA:-data/cifar10.npz}
RUNS=${RUNS:-runs/cifar10_mobilenet_v2_latency}
RESULTS=results/cifar10_mobilenet_v2_latency
STAGES=${STAGES:-"supernet bench search check compare copy"}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} MKL_NUM_THREADS=${MKL_NUM_THREADS:-1}
has_stage() { [[ " $STAGES " == *" $1 "* ]]; }
log() { echo "[$(date +%H:%M:%S)] $*"; }
if [ ! -f "$DATA" ]; then
  mkdir -p "$(dirname "$DATA")"
  "$PYTHON" ../shared/data/cifar10/prepare.py "$DATA"
fi
mkdir -p "$RUNS"

if has_stage supernet; then
  log "supernet: mobilenet_v2_cifar at 1.0x, one epoch"
  "$AUTOSLIM" train-supernet --space mobilenet_v2_cifar --width-mult 1.0 --epochs 1 --dataset npz --data-dir "$DATA" \
    --out "$RUNS/supernet"
fi

if has_stage bench; then
  log "bench: the latency model's accuracy (thread clock)"
  "$PYTHON" benchmarks/bench_latency.py --run "$RUNS/supernet" --clock thread --json "$RESULTS/bench_latency.json" \
    | tee "$RESULTS/bench_latency.txt"
fi

if has_stage search; then
  log "search --latency $LATENCY and --flops $FLOPS, side by side"
  /usr/bin/time -f "latency search wall %e s" "$AUTOSLIM" search "$RUNS/supernet" --latency "$LATENCY" \
    --eval-batch "$EVAL_BATCH" --data-dir "$DATA" --out "$RUNS/search-latency" > "$RUNS/search-latency.log" 2>&1 &
  /usr/bin/time -f "MACs search wall %e s" "$AUTOSLIM" search "$RUNS/supernet" --flops "$FLOPS" \
    --eval-batch "$EVAL_BATCH" --data-dir "$DATA" --out "$RUNS/search-macs" > "$RUNS/search-macs.log" 2>&1 &
  wait
  tail -n 1 "$RUNS/search-latency.log" "$RUNS/search-macs.log"
fi

if has_stage check; then
  log "check: the pick timed in a fresh process"
  "$PYTHON" benchmarks/check_latency_picks.py "$RUNS/search-latency" | tee "$RESULTS/check.txt"
fi

if has_stage compare; then
  log "compare at equal measured latency, by supernet score"
  "$PYTHON" benchmarks/compare_latency_search.py "$RUNS/search-latency" "$RUNS/search-macs" --label "latency-$LATENCY" \
    --clock thread --rounds 7 --data-dir "$DATA" --csv "$RESULTS/compare.csv" | tee "$RESULTS/compare.txt"
fi

if has_stage copy; then
  for name in search-latency search-macs; do
    mkdir -p "$RESULTS/$name"
    cp -r "$RUNS/$name"/{trajectory.csv,pareto.csv,summary.json,run.yaml,configs} "$RESULTS/$name/"
  done
  cp "$RUNS/supernet/summary.json" "$RESULTS/supernet_summary.json"
  cp "$RUNS/supernet"/latency/*.json "$RESULTS/" 2> /dev/null || true
fi
