#!/usr/bin/env bash
# Table 7 rows that differ most (simple_fix vs final, pyramid + context) with another seed or budget:
# same setup as scripts/pyramid_evidence.sh (352x480 crops, batch 8). SEED defaults to 1, EPOCHS to 6.
# Run dirs: runs/pyr_ctx_<policy>_seed<SEED>[_e<EPOCHS> when EPOCHS != 6].
set -euo pipefail
cd "$(dirname "$0")/.."
EPOCHS=${EPOCHS:-6}; SEED=${SEED:-1}
CFG=configs/camvid/pyramid_effl0.yaml
COMMON="train.epochs=$EPOCHS train.eval_interval=100000 data.num_workers=1 train.seed=$SEED"
TAG=seed$SEED; [ "$EPOCHS" = 6 ] || TAG=${TAG}_e$EPOCHS
LOG=runs/pyramid_times.txt
t() { local s=$(date +%s); "$@"; echo "wall_s $(( $(date +%s) - s )) :: $*" >> $LOG; }
for policy in simple_fix final; do
  d=runs/pyr_ctx_${policy}_$TAG
  [ -f $d/final.pt ] || t sceneparse train $CFG $COMMON model.head.context=true model.head.relabel_policy=$policy --work-dir $d --no-progress --resume auto
  [ -f $d/eval.json ] || t sceneparse evaluate --checkpoint $d/final.pt --out $d/eval.json --no-progress
  [ -f $d/analyze.json ] || t sceneparse analyze --checkpoint $d/final.pt --out $d/analyze.json --no-progress
done
echo "$TAG done" >> $LOG
