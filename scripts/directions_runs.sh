#!/usr/bin/env bash
# Runs the rows of the papers' ablations (results/camvid/directions.json) one after another, each
# resumable: a row already finished is skipped, one interrupted resumes from its newest checkpoint.
# Run folders live outside the work tree (RUNS, default ~/sceneparse-runs/directions); what is
# committed (eval JSON, log.csv, config) is copied to results/camvid/directions/<row>_s<seed>_*.
#
# Usage: bash scripts/directions_runs.sh GROUP [GROUP ...]
#   GROUP: dlv3_t5 (DeepLabv3 Table 5: image pooling on/off, eval OS16 / OS8 / MS+flip),
#          psp_t1 (PSPNet Table 1: dilated FCN vs PSPNet, 60 epochs, eval OS16 / MS+flip),
#          psp_t2 (PSPNet Table 2: auxiliary weight 0 vs 0.4, 30 epochs)
#   SEEDS="0 1" (default) picks the seeds; EPOCHS_T5 / EPOCHS_T2 override the budgets.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-$HOME/sceneparse-runs/directions}
OUT=results/camvid/directions
SEEDS=${SEEDS:-"0 1"}
MS="--scales 0.5 0.75 1.0 1.25 1.5 1.75 --flip"
SP=${SCENEPARSE:-.venv/bin/sceneparse}
mkdir -p "$RUNS" "$OUT"

# row NAME SEED CONFIG [key=value ...]: train (resumable), then copy log and config
row() {
  local name=$1 seed=$2 config=$3; shift 3
  local dir=$RUNS/${name}_s$seed
  if [ ! -f "$dir/final.pt" ]; then
    "$SP" train "$config" train.seed=$seed train.eval_interval=100000 "$@" \
      --work-dir "$dir" --no-progress --resume auto >> "$RUNS/${name}_s$seed.out" 2>&1
  fi
  cp "$dir/log.csv" "$OUT/${name}_s${seed}_log.csv"
  cp "$dir/config.yaml" "$OUT/${name}_s${seed}_config.yaml" 2>/dev/null || true
}

# ev NAME SEED TAG [evaluate flags ...]: evaluate final.pt on val once, copy the JSON
ev() {
  local name=$1 seed=$2 tag=$3; shift 3
  local dir=$RUNS/${name}_s$seed
  [ -f "$dir/eval_$tag.json" ] || "$SP" evaluate --checkpoint "$dir/final.pt" "$@" \
      --out "$dir/eval_$tag.json" --no-progress >> "$RUNS/${name}_s$seed.out" 2>&1
  cp "$dir/eval_$tag.json" "$OUT/${name}_s${seed}_eval_$tag.json"
}

for group in "$@"; do
  case $group in
    dlv3_t5)
      E=${EPOCHS_T5:-30}
      for seed in $SEEDS; do
        for ip in true false; do
          n=dlv3_ip_${ip}_e$E
          row $n $seed configs/camvid/deeplabv3_effl0.yaml train.epochs=$E model.head.image_pooling=$ip
          ev $n $seed os16
          if [ $ip = true ]; then ev $n $seed os8 --output-stride 8; ev $n $seed os16_msflip $MS; fi
        done
      done ;;
    psp_t1)
      for seed in $SEEDS; do
        row fcn_e60 $seed configs/camvid/fcn_effl0.yaml; ev fcn_e60 $seed os16
        row psp_e60 $seed configs/camvid/pspnet_effl0.yaml; ev psp_e60 $seed os16
        ev psp_e60 $seed os16_msflip $MS
      done ;;
    psp_t2)
      E=${EPOCHS_T2:-30}
      for seed in $SEEDS; do
        for aux in 0.4 0; do
          n=psp_aux${aux}_e$E
          row $n $seed configs/camvid/pspnet_effl0.yaml train.epochs=$E train.aux_weight=$aux
          ev $n $seed os16
        done
      done ;;
    *) echo "unknown group '$group' (dlv3_t5, psp_t1, psp_t2)" >&2; exit 2 ;;
  esac
done
echo "done: $*"
