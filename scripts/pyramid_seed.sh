#!/usr/bin/env bash
# Second seed for the Table 7 rows that differ most (simple_fix vs final, pyramid + context), same
# budget as scripts/pyramid_evidence.sh (EPOCHS epochs, 352x480 crops, batch 8). SEED defaults to 1.
set -euo pipefail
cd "$(dirname "$0")/.."
EPOCHS=${EPOCHS:-6}; SEED=${SEED:-1}
CFG=configs/camvid/pyramid_effl0.yaml
COMMON="train.epochs=$EPOCHS train.eval_interval=100000 data.num_workers=1 train.seed=$SEED"
LOG=runs/pyramid_times.txt
t() { local s=$(date +%s); "$@"; echo "wall_s $(( $(date +%s) - s )) :: $*" >> $LOG; }
for policy in simple_fix final; do
  d=runs/pyr_ctx_${policy}_seed$SEED
  [ -f $d/final.pt ] || t sceneparse train $CFG $COMMON model.head.context=true model.head.relabel_policy=$policy --work-dir $d --no-progress
  [ -f $d/eval.json ] || t sceneparse evaluate --checkpoint $d/final.pt --out $d/eval.json --no-progress
  [ -f $d/analyze.json ] || t sceneparse analyze --checkpoint $d/final.pt --out $d/analyze.json --no-progress
done
echo "seed$SEED done" >> $LOG
