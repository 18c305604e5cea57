#!/usr/bin/env bash
# Reproduce results/cifar10_resnet20_finetune (issue 21, part 4): AutoSlim started from a trained network.
#   base          train the uniform 1.0x ResNet-20 (`autoslim cost --width 1.0 --save-config`, `autoslim retrain`)
#   supernet      `train-supernet --init` from it: a supernet at its widths, channels sorted by importance, fine-tuned
#   search        `autoslim search` at every budget of BUDGETS (autoslim's default search)
#   finetune      each pick fine-tuned from the supernet's weights (`retrain --init supernet`), every seed
#   uniform       the uniform network of at most the pick's MACs, sliced from the same supernet and fine-tuned
#                 alike (`--baseline uniform` into the finetune directory, whose pick is already done)
#   torchpruning  the base network pruned by Torch-Pruning to the pick's MACs (magnitude and Taylor importance)
#                 and fine-tuned with the pick's settings (torch_pruning_baseline.py; needs `pip install torch-pruning`)
#   table         make_table.py: every method at every budget beside the from-scratch ones of results/cifar10_resnet20
# A finished run is skipped, an interrupted one resumes: re-run this script after an interruption.
#
#   results/cifar10_resnet20_finetune/reproduce.sh             # from the repository root, with the venv of the README
#   PARALLEL=1 results/cifar10_resnet20_finetune/reproduce.sh  # on a CPU: the seeds side by side, one thread each
#   STAGES="torchpruning table" results/cifar10_resnet20_finetune/reproduce.sh
#   BASE_EPOCHS=200 SUPERNET_EPOCHS=10 FT_EPOCHS=10 DEVICE=cuda results/cifar10_resnet20_finetune/reproduce.sh
#                                                               # the space's recipe for the base network (GPU)
#
# The CPU-sized defaults: the recipe of resnet20_cifar trains for 200 epochs, far beyond a CPU, so the base network
# trains for BASE_EPOCHS=30 (the recipe's schedule and rate over 30 epochs); the supernet fine-tunes for
# SUPERNET_EPOCHS=10 (train-supernet --init's own default, 5% of the recipe); and every compared network (the
# pick, the uniform slice, both Torch-Pruning networks) fine-tunes for the same FT_EPOCHS=10 (retrain --init
# supernet's default) with the same settings: the Torch-Pruning script copies them from the pick's run.
set -euo pipefail
cd "$(dirname "$0")/../.."
AUTOSLIM=${AUTOSLIM:-.venv/bin/autoslim}
PYTHON=${PYTHON:-.venv/bin/python}
BASE_EPOCHS=${BASE_EPOCHS:-30}           # the trained 1.0x network (the recipe: 200)
BASE_SEED=${BASE_SEED:-0}                # seed of the base network, hence of the supernet's split and search
SUPERNET_EPOCHS=${SUPERNET_EPOCHS:-10}   # the supernet's fine-tune from the base network
FT_EPOCHS=${FT_EPOCHS:-10}               # every compared network's fine-tune
SEEDS=${SEEDS:-"0 1"}                    # seeds of the fine-tunes
BUDGETS=${BUDGETS:-"20M 10M"}
IMPORTANCES=${IMPORTANCES:-"magnitude taylor"}   # Torch-Pruning's importance criteria
TP_FLAGS=${TP_FLAGS:-}                   # more options of torch_pruning_baseline.py (a smoke test: --steps 50 --taylor-batches 1)
DEVICE=${DEVICE:-cpu}
DATA=${DATA:-data/cifar10.npz}
RUNS=${RUNS:-runs/cifar10_resnet20_finetune}
HERE=results/cifar10_resnet20_finetune              # this script's folder: the two Python scripts
RESULTS=${RESULTS:-$HERE}                        # where the table stage writes its figures
SCRATCH=${SCRATCH:-results/cifar10_resnet20}     # the from-scratch figures compared with
STAGES=${STAGES:-"base supernet search finetune uniform torchpruning table"}   # any subset, in this order
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} MKL_NUM_THREADS=${MKL_NUM_THREADS:-1}   # one thread per process

has_stage() { [[ " $STAGES " == *" $1 "* ]]; }
log() { echo "[$(date +%H:%M:%S)] $*"; }
# finished DIR: a run directory whose summary.json says finished
finished() {
  [ -f "$1/summary.json" ] && "$PYTHON" -c "import json, sys; sys.exit(not json.load(open(sys.argv[1])).get('finished'))" \
    "$1/summary.json"
}
# searched_all SUMMARY: a finished search's summary.json with a target for every budget of BUDGETS
searched_all() {
  [ -f "$1" ] && "$PYTHON" -c "import json, sys; targets = json.load(open(sys.argv[1]))['targets']
sys.exit(any('flops-' + b not in targets for b in sys.argv[2:]))" "$1" $BUDGETS
}
# resuming DIR: --resume where DIR holds a checkpoint, so that an interrupted (or restored) run continues with its own
# settings, whatever path it was started with (its --init and config paths are part of its settings)
# (not the uniform baseline: --resume would take the settings of the finished pick in the same folder, no baseline)
resuming() { [ ! -f "$1/checkpoint.pt" ] || echo --resume; }
# timed NAME COMMAND...: run COMMAND, logging its wall time to the screen and to RUNS/wall.csv (name,seconds,status)
timed() {
  local name=$1 start status=0 seconds
  shift
  start=$(date +%s%N)
  "$@" || status=$?
  seconds=$((($(date +%s%N) - start) / 1000000))   # milliseconds
  seconds=$((seconds / 1000)).$(printf %03d $((seconds % 1000)))
  echo "$name,$seconds,$status" >> "$RUNS/wall.csv"
  log "$name: $seconds s wall (exit $status)"
  return "$status"
}

if has_stage torchpruning && ! "$PYTHON" -c "import torch_pruning" 2> /dev/null; then
  echo "stage torchpruning needs the torch-pruning package (not an autoslim dependency):" \
    "$PYTHON -m pip install torch-pruning" >&2
  exit 1
fi
if [ ! -f "$DATA" ]; then
  mkdir -p "$(dirname "$DATA")"
  "$PYTHON" ../shared/data/cifar10/prepare.py "$DATA"
fi
mkdir -p "$RUNS"
# STATE: run folders committed part-way (a CPU run spans sessions on machines that do not last): each one RUNS
# lacks (a folder with a checkpoint.pt or a summary.json: a run, finished or not, or the search) is copied in, and an
# unfinished one resumes from its checkpoint; a run RUNS already has is never replaced. paused.csv and wall.csv
# likewise (wall.csv: the wall times logged on earlier machines).
STATE=${STATE:-$HERE/state}
if [ -d "$STATE" ]; then
  while IFS= read -r folder; do
    run=${folder#"$STATE"/}
    if [ ! -e "$RUNS/$run/checkpoint.pt" ] && [ ! -e "$RUNS/$run/summary.json" ]; then
      log "state: $run restored from $folder"
      mkdir -p "$RUNS/$run" && cp -r "$folder/." "$RUNS/$run/"
    fi
  done < <(find "$STATE" \( -name checkpoint.pt -o -name summary.json \) -printf '%h\n' | sort -u)
  for file in paused.csv wall.csv; do
    [ -f "$RUNS/$file" ] || [ ! -f "$STATE/$file" ] || cp "$STATE/$file" "$RUNS/$file"
  done
fi
[ -f "$RUNS/wall.csv" ] || echo "run,seconds,status" > "$RUNS/wall.csv"

BASE=$RUNS/base/seed$BASE_SEED
if has_stage base; then
  if finished "$BASE"; then
    log "base: done ($BASE)"
  else
    [ -f "$RUNS/base/uniform-1.0x.yaml" ] || \
      "$AUTOSLIM" cost resnet20_cifar --width 1.0 --save-config "$RUNS/base/uniform-1.0x.yaml" > /dev/null
    log "base: the 1.0x network, $BASE_EPOCHS epochs"
    timed base "$AUTOSLIM" retrain "$RUNS/base/uniform-1.0x.yaml" --epochs "$BASE_EPOCHS" --dataset cifar10 \
      --data-dir "$DATA" --seed "$BASE_SEED" --device "$DEVICE" --out "$BASE" $(resuming "$BASE")
  fi
fi

if has_stage supernet; then
  if finished "$RUNS/supernet"; then
    log "supernet: done"
  else
    log "supernet: from $BASE, $SUPERNET_EPOCHS epochs"
    timed supernet "$AUTOSLIM" train-supernet --space resnet20_cifar --init "$BASE" --dataset cifar10 \
      --data-dir "$DATA" --epochs "$SUPERNET_EPOCHS" --seed "$BASE_SEED" --device "$DEVICE" --out "$RUNS/supernet" \
      $(resuming "$RUNS/supernet")
  fi
fi

flops=(); for b in $BUDGETS; do flops+=(--flops "$b"); done
if has_stage search; then
  if searched_all "$RUNS/search/summary.json"; then
    log "search: done"
  else
    log "search: $BUDGETS"
    timed search "$AUTOSLIM" search "$RUNS/supernet" "${flops[@]}" --device "$DEVICE" --out "$RUNS/search"
  fi
fi

# finetune_seed SEED [--baseline uniform]: every budget's pick fine-tuned from the supernet; with --baseline uniform,
# its uniform baseline (into OUT/uniform; the pick, finished by the finetune stage, is not trained again)
finetune_seed() {
  local seed=$1 out what=finetune done_dir
  shift
  [ $# -eq 0 ] || what=uniform
  for b in $BUDGETS; do
    out=$RUNS/finetune/flops-$b/seed$seed
    done_dir=$out; [ "$what" = finetune ] || done_dir=$out/uniform
    if finished "$done_dir"; then
      log "$what flops-$b seed $seed: done"
      continue
    fi
    log "$what flops-$b seed $seed: fine-tune from the supernet, $FT_EPOCHS epochs"
    timed "$what/flops-$b/seed$seed" "$AUTOSLIM" retrain "$RUNS/search/configs/flops-$b.yaml" --init supernet "$@" \
      --epochs "$FT_EPOCHS" --seed "$seed" --device "$DEVICE" --out "$out" $([ "$what" = uniform ] || resuming "$out")
  done
}
uniform_seed() { finetune_seed "$1" --baseline uniform; }
torchpruning_seed() {
  local seed=$1 out
  # shellcheck disable=SC2086  # TP_FLAGS are words
  for importance in $IMPORTANCES; do
    for b in $BUDGETS; do
      out=$RUNS/torchpruning/$importance/flops-$b/seed$seed
      if finished "$out"; then
        log "torch-pruning $importance flops-$b seed $seed: done"
        continue
      fi
      log "torch-pruning $importance flops-$b seed $seed: prune the base network to the pick's MACs, fine-tune"
      timed "torchpruning/$importance/flops-$b/seed$seed" "$PYTHON" "$HERE/torch_pruning_baseline.py" \
        --base "$BASE" --like "$RUNS/finetune/flops-$b/seed$seed" --importance "$importance" --device "$DEVICE" \
        --out "$out" $TP_FLAGS
    done
  done
}
# run_seeds STAGE FUNCTION: every seed, side by side (one thread each) with PARALLEL=1
run_seeds() {
  if [ "${PARALLEL:-0}" = 1 ]; then
    local pids=() status=0
    for seed in $SEEDS; do "$2" "$seed" > "$RUNS/$1-seed$seed.log" 2>&1 & pids+=($!); done
    for pid in "${pids[@]}"; do wait "$pid" || status=$?; done
    [ "$status" = 0 ] || { echo "stage $1 failed: see $RUNS/$1-seed*.log" >&2; return "$status"; }
  else
    for seed in $SEEDS; do "$2" "$seed"; done
  fi
}
has_stage finetune && run_seeds finetune finetune_seed
has_stage uniform && run_seeds uniform uniform_seed
has_stage torchpruning && run_seeds torchpruning torchpruning_seed

if has_stage table; then
  log "collecting figures into $RESULTS"
  "$PYTHON" "$HERE/make_table.py" "$RUNS" "$RESULTS" "$SCRATCH"
fi
