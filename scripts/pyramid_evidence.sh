#!/usr/bin/env bash
# Specialize and Fuse on CamVid val (CPU, 2 cores), Tables 6-9 in miniature: EfficientNet-Lite0
# (ImageNet) + stride-4 fusion decoder, every row EPOCHS epochs (default 6, as reported in the README), same seed and data.
#   Table 6: single output (strides [4]) vs pyramid [32,16,8,4], each with / without the context module
#   Table 7: relabelling naive / simple_fix / final (pyramid + context)
#   Table 8 and 9: `sceneparse analyze` on the final-policy run (finest level only vs fuse; level pairs)
# Usage: bash scripts/pyramid_evidence.sh
set -euo pipefail
cd "$(dirname "$0")/.."
EPOCHS=${EPOCHS:-6}
CFG=configs/camvid/pyramid_effl0.yaml
COMMON="train.epochs=$EPOCHS train.eval_interval=100000 data.num_workers=1"
LOG=runs/pyramid_times.txt
t() { local s=$(date +%s); "$@"; echo "wall_s $(( $(date +%s) - s )) :: $*" >> $LOG; }
run() {  # name, overrides...
  local name=$1; shift
  [ -f runs/pyr_$name/final.pt ] || t sceneparse train $CFG $COMMON "$@" --work-dir runs/pyr_$name --no-progress
  [ -f runs/pyr_$name/eval.json ] || t sceneparse evaluate --checkpoint runs/pyr_$name/final.pt --out runs/pyr_$name/eval.json --no-progress
}
run ctx_final model.head.context=true model.head.relabel_policy=final
run single_ctx "model.head.strides=[4]" model.head.context=true
run noctx_final model.head.context=false model.head.relabel_policy=final
run single_noctx "model.head.strides=[4]" model.head.context=false
run ctx_naive model.head.context=true model.head.relabel_policy=naive
run ctx_simple_fix model.head.context=true model.head.relabel_policy=simple_fix
for n in ctx_final noctx_final ctx_naive ctx_simple_fix; do
  [ -f runs/pyr_$n/analyze.json ] || t sceneparse analyze --checkpoint runs/pyr_$n/final.pt --out runs/pyr_$n/analyze.json --no-progress
done
echo done >> $LOG
