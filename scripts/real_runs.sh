#!/usr/bin/env bash
# The real runs the README reports, one after another; each resumes when its workdir exists.
#   nohup bash scripts/real_runs.sh [genia] [conll03] [genia_last] [genia_ffnn64] [conll03_ffnn64] [screen] [conll03_long] \
#     [demo_seeds] [demo_casing] [conll03_seeds] [msra] [genia_long] \
#     [conll03_long_nocasing] [conll03_longer_seeds] > ~/vee_runs/real_runs.log 2>&1 &
# (no names: the first three). Then copy the small results into results/<dataset>/.
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
WANTED=" $* "
if [ $# -eq 0 ]; then WANTED=" genia conll03 genia_last "; fi
[[ $WANTED == *" genia "* ]] && run genia configs/genia.py 5
[[ $WANTED == *" conll03 "* ]] && run conll03 configs/conll03.py 4
[[ $WANTED == *" genia_last "* ]] && run genia_last configs/genia.py 5 --config.model.exits=last
# Exits trained low-rank by construction (README "Performance"): 64-wide start/end projections.
[[ $WANTED == *" genia_ffnn64 "* ]] && run genia_ffnn64 configs/genia.py 5 --config.model.ffnn_size=64
# The same lever on CoNLL-2003 (the issue "Quality", lever table: python scripts/levers.py).
[[ $WANTED == *" conll03_ffnn64 "* ]] && run conll03_ffnn64 configs/conll03.py 4 --config.model.ffnn_size=64
# Lever screens (the issue "Quality": screen on CoNLL-2003 with shorter runs): 2 epochs each, the
# same schedule, one lever at a time against the 2-epoch baseline.
if [[ $WANTED == *" screen "* ]]; then
  run screen2_base configs/conll03.py 2
  run screen2_context32 configs/conll03.py 2 --config.data.context_subwords=32
  run screen2_casing configs/conll03.py 2 --config.model.casing=True
fi
# Epochs, the first lever (the 2-epoch screen is 2.8 test points below 4 epochs), with the casing
# feature, which paid in the screen: up to 10 epochs, stopped when dev F1 of the last exit has not
# risen for 2 epochs (the schedule decays over 10).
[[ $WANTED == *" conll03_long "* ]] && run conll03_long configs/conll03.py 10 --config.model.casing=True \
  --config.train.early_stopping_patience=2
# Seeds (the issue "Quality": headline rows as mean and standard deviation over 3 seeds): the demo
# recipe again with seeds 1 and 2 (seed 0 is runs/demo, the README's run), each with its sweep
# (Table 1 chosen on dev), and the CoNLL-2003 long recipe with seeds 1 and 2 (seed 0 is
# conll03_long). Summarised by scripts/seeds.py.
if [[ $WANTED == *" demo_seeds "* ]]; then
  for seed in 1 2; do
    run demo_seed$seed configs/demo.py 5 --config.seed=$seed && python eval.py --workdir "$RUNS/demo_seed$seed" --sweep --quiet
  done
fi
# The casing feature on GENIA (the demo's sample), 3 seeds against the demo's own 3: does the lever
# that paid on CoNLL-2003 pay on biomedical text too?
if [[ $WANTED == *" demo_casing "* ]]; then
  for seed in 0 1 2; do
    run demo_casing_seed$seed configs/demo.py 5 --config.seed=$seed --config.model.casing=True
  done
fi
if [[ $WANTED == *" conll03_seeds "* ]]; then
  for seed in 1 2; do
    run conll03_long_seed$seed configs/conll03.py 10 --config.model.casing=True \
      --config.train.early_stopping_patience=2 --config.seed=$seed
  done
fi
# GENIA's final recipe: the levers of the issue "Quality" that paid on GENIA's dev set, on the
# shipped config: the 64-wide exits (+0.6 dev F1 at the last exit over 5 epochs, and 1.6x faster to
# train) and the schedule over 12 epochs, stopped when dev F1 of the last exit has not risen for 3
# (the paper: at most 25, patience 8). No casing feature: it was noise on the GENIA sample. Sized to
# finish in one sitting (about 6 min an epoch on 2 quiet cores): a fresh machine keeps no workdir.
[[ $WANTED == *" genia_long "* ]] && run genia_long configs/genia.py 12 --config.model.ffnn_size=64 \
  --config.train.early_stopping_patience=3
# The two levers of conll03_long separated: the same 10-epoch schedule without the casing feature.
[[ $WANTED == *" conll03_long_nocasing "* ]] && run conll03_long_nocasing configs/conll03.py 10 \
  --config.train.early_stopping_patience=2
# The next lever on CoNLL-2003 (dev F1 still rising at epoch 10 on seeds 0 and 1): the schedule over
# 20 epochs, early stopping after 3, 3 seeds (about 2 h each on these 2 cores when it runs all 20).
if [[ $WANTED == *" conll03_longer_seeds "* ]]; then
  for seed in 0 1 2; do
    run conll03_longer_seed$seed configs/conll03.py 20 --config.model.casing=True \
      --config.train.early_stopping_patience=3 --config.seed=$seed
  done
fi
# MSRA with MiniLM, a floor (its vocabulary covers about a third of the characters): 1,000 steps
# of 16 sentences (0.38 of an epoch; the issue allows at most 5 epochs, and an epoch is about 3x
# GENIA's sentences), the whole test set.
# max_steps stops before the epoch's dev evaluation, so there is no best checkpoint: the latest.
if [[ $WANTED == *" msra "* ]]; then
  python train.py --config configs/msra.py --workdir "$RUNS/msra" --config.train.epochs=1 \
    --config.train.max_steps=1000 --config.train.eval_max_sentences=2000 &&
  python eval.py --workdir "$RUNS/msra" --checkpoint latest --split test --quiet \
    --output "$RUNS/msra/test_per_exit.json" --plot "$RUNS/msra/test_per_exit.png"
fi
true
