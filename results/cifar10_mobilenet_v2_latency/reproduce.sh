#!/usr/bin/env bash
# results/cifar10_mobilenet_v2_latency: the latency model and a latency search on MobileNetV2 (CIFAR strides), issue 20.
#   supernet  a brief supernet of mobilenet_v2_cifar at 1.0x (one epoch: a CPU cannot afford more; 45 min on one thread)
#   bench     benchmarks/bench_latency.py on it: the latency model's accuracy (torch and ONNX Runtime, batch 1 and 32;
#             run it on an otherwise idle machine), then --again: the same held-out networks timed once more, how well
#             the timings themselves repeat
#   search    `autoslim search --latency LATENCY` (torch) and `autoslim search --flops FLOPS`, side by side
#   search-ort  `autoslim search --latency ORT_LATENCY --runtime onnxruntime`
#   check     benchmarks/check_latency_picks.py: the latency picks timed in a fresh process
#   compare   benchmarks/compare_latency_search.py: each latency pick against the MACs search's network and the
#             uniform network of equal measured latency, by supernet score (2,048 held-out images)
#   copy      the searches' small products (trajectory, pareto, configs, summary) into this folder
# Every stage resumes or is skipped when done: re-run this script after an interruption.
#
#   results/cifar10_mobilenet_v2_latency/reproduce.sh      # from the repository root, with the README's venv
set -euo pipefail
cd "$(dirname "$0")/../.."
AUTOSLIM=${AUTOSLIM:-.venv/bin/autoslim}
PYTHON=${PYTHON:-.venv/bin/python}
# The budget: 6.7 ms (three quarters of the full 1.0x network's 8.96 ms, as this machine's latency model predicts at
# batch 1) was fixed first. A greedy step took about 100 s on one core and saved about 0.025 ms, so 6.7 ms was out of
# reach of the session; 8 ms (0.9x) replaced it after two steps, then 8.5 ms (0.95x, about 20 steps) after four, each
# before any pick existed. The MACs search runs to FLOPS, far enough that its trajectory
# passes below the latency pick's measured latency (the compare stage says so if it does not).
LATENCY=${LATENCY:-8.5ms}
# ONNX Runtime: the same 0.95 of its model's full network (2.67 ms), rounded, fixed before its search ran: torch's
# timings of one network did not repeat on this VM (compare_torch.txt), ONNX Runtime's repeat better.
ORT_LATENCY=${ORT_LATENCY:-2.5ms}
FLOPS=${FLOPS:-71M}
EVAL_BATCH=${EVAL_BATCH:-512}   # held-out images each search scores (of 5,000): 2,048 took 3 min a step on one CPU core
DATA=${DATA:-data/cifar10.npz}
RUNS=${RUNS:-runs/cifar10_mobilenet_v2_latency}
RESULTS=results/cifar10_mobilenet_v2_latency
STAGES=${STAGES:-"supernet bench search search-ort check compare copy"}
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
  log "bench: the latency model's accuracy (on an otherwise idle machine)"
  "$PYTHON" benchmarks/bench_latency.py --run "$RUNS/supernet" --json "$RESULTS/bench_latency.json" \
    | tee "$RESULTS/bench_latency.txt"
  "$PYTHON" benchmarks/bench_latency.py --run "$RUNS/supernet" --again "$RESULTS/bench_latency.json" \
    | tee "$RESULTS/bench_again.txt"
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

if has_stage search-ort; then
  log "search --latency $ORT_LATENCY --runtime onnxruntime"
  /usr/bin/time -f "ONNX Runtime latency search wall %e s" "$AUTOSLIM" search "$RUNS/supernet" --latency "$ORT_LATENCY" \
    --runtime onnxruntime --eval-batch "$EVAL_BATCH" --data-dir "$DATA" --out "$RUNS/search-latency-ort"
fi

if has_stage check; then
  log "check: the picks timed in a fresh process"
  "$PYTHON" benchmarks/check_latency_picks.py "$RUNS/search-latency" | tee "$RESULTS/check_torch.txt"
  "$PYTHON" benchmarks/check_latency_picks.py "$RUNS/search-latency-ort" | tee "$RESULTS/check_onnxruntime.txt"
fi

if has_stage compare; then
  log "compare at equal measured latency, by supernet score"
  "$PYTHON" benchmarks/compare_latency_search.py "$RUNS/search-latency" "$RUNS/search-macs" --label "latency-$LATENCY" \
    --rounds 7 --window 5 --images 2048 --data-dir "$DATA" --csv "$RESULTS/compare_torch.csv" \
    | tee "$RESULTS/compare_torch.txt"
  "$PYTHON" benchmarks/compare_latency_search.py "$RUNS/search-latency-ort" "$RUNS/search-macs" \
    --label "latency-$ORT_LATENCY" --rounds 7 --window 5 --images 2048 --score chosen --data-dir "$DATA" \
    --csv "$RESULTS/compare_onnxruntime.csv" | tee "$RESULTS/compare_onnxruntime.txt"
fi

if has_stage copy; then
  for name in search-latency search-latency-ort search-macs; do
    mkdir -p "$RESULTS/$name"
    cp -r "$RUNS/$name"/{trajectory.csv,pareto.csv,summary.json,run.yaml,configs} "$RESULTS/$name/"
  done
  cp "$RUNS/supernet/summary.json" "$RESULTS/supernet_summary.json"
  cp "$RUNS/supernet"/latency/*.json "$RESULTS/" 2> /dev/null || true
fi
