#!/usr/bin/env bash
# The real runs the README reports, one after another; each resumes when its workdir exists.
#   nohup bash scripts/real_runs.sh > ~/vee_runs/real_runs.log 2>&1 &
# Then copy the small results into results/<dataset>/ (scripts/collect_results.sh).
set -u
cd "$(dirname "$0")/.."
RUNS=${VEE_RUNS:-$HOME/vee_runs}
mkdir -p "$RUNS"
run() {  # name config epochs [overrides...]
  local name=$1 config=$2 epochs=$3; shift 3
  python train.py --config "$config" --workdir "$RUNS/$name" --config.train.epochs="$epochs" "$@" || return
  python eval.py --workdir "$RUNS/$name" --split test --quiet --output "$RUNS/$name/test_per_exit.json" \
    --plot "$RUNS/$name/test_per_exit.png"
}
run genia configs/genia.py 6
run conll03 configs/conll03.py 4
run genia_last configs/genia.py 6 --config.model.exits=last
