#!/bin/bash
# Equal-budget recipe ablation from ImageNet weights: 10 epochs (450 its, batch 8, 360x480, bf16), seed 0.
cd "$(dirname "$0")/.." && . .venv/bin/activate && mkdir -p runs/ft runs/mini
# (ran after scripts/recipe_loss_finetune.sh finished)
[ -f runs/mini/speed.json ] || python scripts/recipe_step_speed.py > runs/mini/speed.json
COMMON="train.epochs=10 train.amp=bf16 train.eval_interval=450 train.ckpt_interval=45 train.seed=0"
for v in lite0 lite2 fcn_lite0 lite0_seed1; do
  [ -f runs/mini/$v/final.pt ] && continue
  case $v in
    lite0) CFG=configs/camvid/pspnet_effl0.yaml; X="";;
    lite2) CFG=configs/camvid/pspnet_effl0.yaml; X="model.backbone=efficientnet_lite2";;
    fcn_lite0) CFG=configs/camvid/fcn_effl0.yaml; X="model.head.aux_head=true model.head.aux_channels=128";;
    lite0_seed1) CFG=configs/camvid/pspnet_effl0.yaml; X="train.seed=1";;
  esac
  python -m sceneparse train $CFG $COMMON $X --work-dir runs/mini/$v --resume auto --no-progress > runs/mini/$v.log 2>&1
done
