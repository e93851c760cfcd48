#!/usr/bin/env bash
# The zoo's long runs, each resumable: a run already finished is skipped, one interrupted resumes from its
# newest checkpoint. Run folders live outside the work tree (RUNS, default ~/sceneparse-runs/zoo); what is
# committed (eval JSON, log.csv, config) is copied to results/camvid/zoo_runs/<run>_*.
#
# Usage: bash scripts/zoo_runs.sh GROUP [GROUP ...]
#   GROUP: pole_ft (10-epoch fine-tunes of the packaged default at lr 1e-3: class weighting none / median_freq /
#              inverse_log, seed 0)
#          pole_lovasz (the same fine-tune, unweighted CE plus 1 x Lovasz-softmax, seed 0)
#          pyramid_lite2 (the default's recipe, 120 epochs, on EfficientNet-Lite2; SEEDS, default "0")
#          dlv3_e60 (DeepLabv3 with ASPP rates 4-8-12, 60 epochs; SEEDS, default "0")
set -euo pipefail
cd "${REPO:-$(dirname "$0")/..}"
RUNS=${RUNS:-$HOME/sceneparse-runs/zoo}
OUT=results/camvid/zoo_runs
SEEDS=${SEEDS:-0}
SP=${SCENEPARSE:-.venv/bin/sceneparse}
RECIPE=$OUT/pyramid_simple_fix_noctx_e120_s0_config.yaml  # the default's training config, as trained
mkdir -p "$RUNS" "$OUT"

# run NAME CONFIG [key=value ...]: train (resumable), evaluate final.pt on val once, copy log, config, evaluation
run() {
  local name=$1 config=$2; shift 2
  local dir=$RUNS/$name
  [ -f "$dir/final.pt" ] || "$SP" train "$config" "$@" --work-dir "$dir" --no-progress --resume auto >> "$dir.out" 2>&1
  [ -f "$dir/eval_os16.json" ] || "$SP" evaluate --checkpoint "$dir/final.pt" --out "$dir/eval_os16.json" \
      --no-progress >> "$dir.out" 2>&1
  for f in log.csv config.yaml eval_os16.json; do cp "$dir/$f" "$OUT/${name}_$f"; done
}

for group in "$@"; do
  case $group in
    pole_ft)
      for cw in none median_freq inverse_log; do
        run ft_pole_${cw}_e10_s0 $RECIPE model.init_weights=camvid_pyramid_effl0 train.epochs=10 train.lr=0.001 \
            train.class_weighting=$cw train.seed=0 train.eval_interval=100000
      done ;;
    pole_lovasz)
      run ft_pole_lovasz1_e10_s0 $RECIPE model.init_weights=camvid_pyramid_effl0 train.epochs=10 train.lr=0.001 \
          train.lovasz_weight=1.0 train.seed=0 train.eval_interval=100000 ;;
    pyramid_lite2)
      for seed in $SEEDS; do
        run pyramid_simple_fix_noctx_lite2_e120_s$seed $RECIPE model.backbone=efficientnet_lite2 train.seed=$seed
      done ;;
    dlv3_e60)
      for seed in $SEEDS; do
        run deeplabv3_r4_8_12_e60_s$seed configs/camvid/deeplabv3_effl0.yaml "model.head.aspp_rates=[4,8,12]" \
            train.epochs=60 train.seed=$seed
      done ;;
    *) echo "unknown group '$group' (pole_ft, pole_lovasz, pyramid_lite2, dlv3_e60)" >&2; exit 2 ;;
  esac
done
echo "done: $*"
