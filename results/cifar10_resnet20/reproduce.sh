#!/usr/bin/env bash
# Reproduce results/cifar10_resnet20: a resnet20_cifar supernet on the CIFAR-10 data in ../shared, a search at
# three budgets, and each searched config retrained from scratch beside its uniform baseline, for several seeds.
# Every stage resumes where it stopped: re-run this script after an interruption.
#
#   results/cifar10_resnet20/reproduce.sh            # from the repository root, with the venv of the README
#   EPOCHS=10 RETRAIN_EPOCHS=15 SEEDS="0 1" DEVICE=cuda results/cifar10_resnet20/reproduce.sh
#   PARALLEL=1 results/cifar10_resnet20/reproduce.sh   # on a CPU: retrain the seeds side by side, one thread each
#   STAGES=retrain CONFIGS=results/cifar10_resnet20/configs results/cifar10_resnet20/reproduce.sh
#                                                       # retrain the committed searched configs only
#   STAGES=bracket BRACKET_WIDTHS=0.41 PARALLEL=1 results/cifar10_resnet20/reproduce.sh
#                                                       # the uniform widths just above the searched configs
#   STAGES=variants VARIANTS=drop-per-mac PARALLEL=1 results/cifar10_resnet20/reproduce.sh
#                                                       # the investigation: search the supernet another way
#                                                       # and retrain what it finds
#   STAGES=variants VARIANTS=batch5000 VARIANT_SUPERNET=results/cifar10_resnet20/variants/supernet \
#     PARALLEL=1 results/cifar10_resnet20/reproduce.sh   # the same, on the committed supernet (no training)
#   STAGES=default results/cifar10_resnet20/reproduce.sh # autoslim's default search on the committed supernet,
#                                                       # each config retrained (default.csv)
#   STAGES=schedule results/cifar10_resnet20/reproduce.sh # a 10-epoch supernet with --schedule one-cycle
set -euo pipefail
cd "$(dirname "$0")/../.."
AUTOSLIM=${AUTOSLIM:-.venv/bin/autoslim}
PYTHON=${PYTHON:-.venv/bin/python}
EPOCHS=${EPOCHS:-10}                 # supernet epochs
RETRAIN_EPOCHS=${RETRAIN_EPOCHS:-15} # epochs of every from-scratch retraining (searched and uniform alike; 15 fits a CPU)
SEEDS=${SEEDS:-"0 1"}
DEVICE=${DEVICE:-cpu}
BUDGETS=${BUDGETS:-"40M 20M 10M"}
DATA=${DATA:-data/cifar10.npz}
RUNS=${RUNS:-runs/cifar10_resnet20}
RESULTS=results/cifar10_resnet20
STAGES=${STAGES:-"supernet search retrain bracket variants default schedule"}   # any subset, in this order
# bracket: the uniform network just above each searched config (the retrain stage's baseline is the one just
# below): 0.41x (8.94M MACs) above the 10M config, 0.69x (29.6M) above 20M, 1.06x (40.8M, the same channels as 1.0x) above 40M
BRACKET_WIDTHS=${BRACKET_WIDTHS:-"0.41 0.69 1.06"}
CONFIGS=${CONFIGS:-$RUNS/search/configs}      # the searched configs to retrain
# variants: searches of the same supernet with other settings, into RUNS/variants/NAME, each config retrained
# (without a baseline: the uniform networks are already trained). "accuracy" repeats the first search; a
# config with the channels of the committed one for its budget is not retrained again.
VARIANTS=${VARIANTS:-"drop-per-mac batch5000"}
# the supernet the variants search: the one trained here by default, or the committed weights-only copy of the one
# they searched so far (VARIANT_SUPERNET=results/cifar10_resnet20/variants/supernet), which needs no training
VARIANT_SUPERNET=${VARIANT_SUPERNET:-$RUNS/supernet}
# default: autoslim search with its defaults only, on the committed weights-only supernet (or DEFAULT_SUPERNET),
# each config retrained for every seed against the uniform line of the retrained uniform widths. The committed
# default/search is the one benchmarks/bench_search.py kept (--only batch2048,default --out: the same settings);
# default_1024/ holds the default search until 2026-12-07 and its retrainings (this stage no longer makes it).
DEFAULT_SUPERNET=${DEFAULT_SUPERNET:-$RESULTS/variants/supernet}
# The searches of autoslim 0.x (the first search and the variants) scored one batch of 2,048 held-out images
# with BatchNorm statistics of that batch, under the paper's accuracy criterion unless a variant says otherwise.
OLD_SEARCH="--slice 0 --eval-batch 2048 --criterion accuracy"
variant_flags() {
  case $1 in
    accuracy) echo "$OLD_SEARCH" ;;
    drop-per-mac) echo "--slice 0 --eval-batch 2048 --criterion drop-per-mac" ;;
    batch5000) echo "--slice 0 --eval-batch 5000 --criterion accuracy" ;;          # all of the held-out split
    drop-per-mac-batch5000) echo "--slice 0 --eval-batch 5000 --criterion drop-per-mac" ;;
    *) echo "unknown variant $1 (accuracy, drop-per-mac, batch5000, drop-per-mac-batch5000)" >&2; return 1 ;;
  esac
}
# searched_all SUMMARY: a finished search's summary.json with a target for every budget of BUDGETS
searched_all() {
  [ -f "$1" ] && "$PYTHON" -c "import json, sys; targets = json.load(open(sys.argv[1]))['targets']
sys.exit(any('flops-' + b not in targets for b in sys.argv[2:]))" "$1" $BUDGETS
}
has_stage() { [[ " $STAGES " == *" $1 "* ]]; }
if has_stage variants; then for v in $VARIANTS; do variant_flags "$v" > /dev/null; done; fi  # before hours of work

if [ ! -f "$DATA" ]; then
  mkdir -p "$(dirname "$DATA")"
  "$PYTHON" ../shared/data/cifar10/prepare.py "$DATA"
fi
log() { echo "[$(date +%H:%M:%S)] $*"; }

if has_stage supernet; then
  log "supernet: $EPOCHS epochs"
  "$AUTOSLIM" train-supernet --space resnet20_cifar --dataset cifar10 --data-dir "$DATA" --epochs "$EPOCHS" \
    --device "$DEVICE" --out "$RUNS/supernet"
fi

flops=(); for b in $BUDGETS; do flops+=(--flops "$b"); done
if has_stage search; then
  log "search: $BUDGETS"
  # shellcheck disable=SC2086  # the flags are words
  "$AUTOSLIM" search "$RUNS/supernet" "${flops[@]}" $OLD_SEARCH --device "$DEVICE" --out "$RUNS/search"
fi

retrain_seed() {
  local seed=$1
  for b in $BUDGETS; do
    log "retrain flops-$b seed $seed: searched and uniform, $RETRAIN_EPOCHS epochs each"
    "$AUTOSLIM" retrain "$CONFIGS/flops-$b.yaml" --baseline uniform --epochs "$RETRAIN_EPOCHS" \
      --dataset cifar10 --data-dir "$DATA" --seed "$seed" --device "$DEVICE" --out "$RUNS/retrain/flops-$b/seed$seed"
  done
}
bracket_seed() {
  local seed=$1
  for w in $BRACKET_WIDTHS; do
    log "retrain uniform ${w}x seed $seed, $RETRAIN_EPOCHS epochs"
    "$AUTOSLIM" retrain "$RUNS/bracket/uniform-${w}x.yaml" --epochs "$RETRAIN_EPOCHS" \
      --dataset cifar10 --data-dir "$DATA" --seed "$seed" --device "$DEVICE" --out "$RUNS/bracket/uniform-${w}x/seed$seed"
  done
}
variant_seed() {
  local seed=$1 config
  for v in $VARIANTS; do
    for b in $BUDGETS; do
      config="$RUNS/variants/$v/search/configs/flops-$b.yaml"
      [ -f "$config" ] || config="$RESULTS/variants/$v/search/configs/flops-$b.yaml"   # the committed search
      if "$PYTHON" -c "import sys, yaml; a, b = (yaml.safe_load(open(p))['channels'] for p in sys.argv[1:]); sys.exit(a != b)" \
          "$config" "$RESULTS/configs/flops-$b.yaml" 2> /dev/null; then
        log "$v flops-$b: the committed config, already retrained"
        continue
      fi
      if [ -f "$RESULTS/variants/$v/retrain/flops-$b/seed$seed.json" ] && [ ! -d "$RUNS/variants/$v/retrain/flops-$b/seed$seed" ]; then
        log "$v flops-$b seed $seed: retrained already (its summary is in $RESULTS)"
        continue
      fi
      log "retrain $v flops-$b seed $seed, $RETRAIN_EPOCHS epochs"
      "$AUTOSLIM" retrain "$config" --epochs "$RETRAIN_EPOCHS" --dataset cifar10 --data-dir "$DATA" --seed "$seed" \
        --device "$DEVICE" --out "$RUNS/variants/$v/retrain/flops-$b/seed$seed"
    done
  done
}
# run_seeds STAGE FUNCTION: every seed, side by side on one thread each with PARALLEL=1
run_seeds() {
  if [ "${PARALLEL:-0}" = 1 ]; then
    for seed in $SEEDS; do OMP_NUM_THREADS=1 "$2" "$seed" > "$RUNS/$1-seed$seed.log" 2>&1 & done
    wait
  else
    for seed in $SEEDS; do "$2" "$seed"; done
  fi
}
mkdir -p "$RUNS"
if has_stage retrain; then
  run_seeds retrain retrain_seed
fi
if has_stage bracket; then
  mkdir -p "$RUNS/bracket"
  for w in $BRACKET_WIDTHS; do
    [ -f "$RUNS/bracket/uniform-${w}x.yaml" ] || \
      "$AUTOSLIM" cost resnet20_cifar --width "$w" --save-config "$RUNS/bracket/uniform-${w}x.yaml" > /dev/null
  done
  run_seeds bracket bracket_seed
fi

if has_stage variants; then
  for v in $VARIANTS; do
    flags=$(variant_flags "$v")
    # a finished search is not run again: with fewer budgets it would write a summary of those alone
    if searched_all "$RUNS/variants/$v/search/summary.json"; then
      log "search $v: already done, its configs are in $RUNS/variants/$v/search"
      continue
    fi
    if [ ! -d "$RUNS/variants/$v/search" ] && searched_all "$RESULTS/variants/$v/search/summary.json"; then
      log "search $v: already done, its configs are in $RESULTS/variants/$v/search"
      continue
    fi
    log "search $v: $BUDGETS"
    # shellcheck disable=SC2086  # the flags are words
    "$AUTOSLIM" search "$VARIANT_SUPERNET" "${flops[@]}" $flags --device "$DEVICE" --data-dir "$DATA" \
      --out "$RUNS/variants/$v/search"
  done
  run_seeds variants variant_seed
fi

default_seed() {
  local seed=$1 config
  for b in $BUDGETS; do
    config="$RUNS/default/search/configs/flops-$b.yaml"
    [ -f "$config" ] || config="$RESULTS/default/search/configs/flops-$b.yaml"   # the committed search
    if [ -f "$RESULTS/default/retrain/flops-$b/seed$seed.json" ] && [ ! -d "$RUNS/default/retrain/flops-$b/seed$seed" ]; then
      log "default flops-$b seed $seed: retrained already (its summary is in $RESULTS)"
      continue
    fi
    log "retrain default flops-$b seed $seed, $RETRAIN_EPOCHS epochs"
    "$AUTOSLIM" retrain "$config" --epochs "$RETRAIN_EPOCHS" --dataset cifar10 --data-dir "$DATA" --seed "$seed" \
      --device "$DEVICE" --out "$RUNS/default/retrain/flops-$b/seed$seed"
  done
}
if has_stage default; then
  if searched_all "$RUNS/default/search/summary.json"; then
    log "default search: already done, its configs are in $RUNS/default/search"
  elif [ ! -d "$RUNS/default/search" ] && searched_all "$RESULTS/default/search/summary.json"; then
    log "default search: already done, its configs are in $RESULTS/default/search"
  else
    log "default search: $BUDGETS, autoslim's defaults"
    "$AUTOSLIM" search "$DEFAULT_SUPERNET" "${flops[@]}" --device "$DEVICE" --data-dir "$DATA" --out "$RUNS/default/search"
  fi
  run_seeds default default_seed
fi

if has_stage schedule; then
  # the supernet's learning-rate schedule: one-cycle against the cosine of the supernet stage (same seed and epochs)
  log "supernet with --schedule one-cycle: $EPOCHS epochs"
  "$AUTOSLIM" train-supernet --space resnet20_cifar --dataset cifar10 --data-dir "$DATA" --epochs "$EPOCHS" \
    --schedule one-cycle --device "$DEVICE" --out "$RUNS/schedule/one-cycle"
fi

log "collecting figures into $RESULTS"
"$PYTHON" "$RESULTS/make_table.py" "$RUNS" "$RESULTS"
