#!/bin/bash
# Loss ablation, fine-tuning the shipped 60-epoch CE model for 3 epochs (135 its) each, seed 0.
cd "$(dirname "$0")/.." && . .venv/bin/activate && mkdir -p runs/ft runs/mini
COMMON="model.init_weights=camvid_pspnet_effl0 train.epochs=3 train.lr=0.002 train.warmup_iters=15 train.amp=bf16 train.eval_interval=135 train.ckpt_interval=45 train.seed=0"
for v in ce inverse_log median_freq ohem; do
  [ -f runs/ft/$v/final.pt ] && continue
  case $v in
    ce) X="";;
    inverse_log) X="train.class_weighting=inverse_log";;
    median_freq) X="train.class_weighting=median_freq";;
    ohem) X="train.ohem_thresh=0.7 train.ohem_min_kept=100000";;
  esac
  python -m sceneparse train configs/camvid/pspnet_effl0.yaml $COMMON $X --work-dir runs/ft/$v --resume auto --no-progress > runs/ft/$v.log 2>&1
done
touch runs/ft/DONE  # scripts/recipe_equal_budget.sh ran after this
