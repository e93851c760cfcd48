#!/usr/bin/env bash
# 30-iteration ablations of the refinement stages' loss weight and learning rate: every run
# sees the same batches (same seed), logs the frozen front's CE next to the refined CE on each batch,
# and scores the first 26 CamVid val images at step 0 (front and untrained refiner) and at the end.
# Front: the packaged PSPNet-Lite0 (CamVid, 62.1 val mIoU). Crops CROP (240x320 by default), batch 8.
# Usage: STAGE=grn|grn_full|lrn|context|context_full bash scripts/refine_ablation.sh ; summary: python scripts/ablation_summary.py
# grn_full: the GRN at the front's 360x480 crops (a GRN trained on 240x320 crops lowers the CE of its
# training crops but raises it on whole images: its pyramid pooling sees another field)
set -euo pipefail
cd "$(dirname "$0")/.."
STAGE=${STAGE:-grn}
FRONT=${FRONT:-camvid_pspnet_effl0}
ITERS=${ITERS:-30}
CROP=${CROP:-[240,320]}
OUT=runs/ablation_$STAGE
COMMON="model.head.front=$FRONT train.iters=$ITERS train.log_interval=5 train.eval_interval=100000 data.crop_size=$CROP
 data.max_val_samples=26 data.num_workers=1 train.ckpt_interval=100000"
run() { local name=$1; shift; [ -f $OUT/$name/final.pt ] || sceneparse train "$@" $COMMON --work-dir $OUT/$name --no-progress --resume auto; }
case $STAGE in
grn)
  G=configs/camvid/refine/grn_stage.yaml
  run aux1.0_lr2e-3_x10 $G train.aux_weight=1.0 train.lr=0.002 train.head_lr_mult=10
  run aux0.1_lr2e-3_x10 $G train.aux_weight=0.1 train.lr=0.002 train.head_lr_mult=10
  run aux0_lr2e-3_x10   $G train.aux_weight=0.0 train.lr=0.002 train.head_lr_mult=10
  run aux0.1_lr1e-3_x1  $G train.aux_weight=0.1 train.lr=0.001 train.head_lr_mult=1
  run aux0_lr1e-3_x1    $G train.aux_weight=0.0 train.lr=0.001 train.head_lr_mult=1
  # training crops at the test-time scale (no random scaling / rotation): does the GRN learn to fix
  # errors that the front only makes on augmented crops?
  run aux0.1_lr2e-3_x10_noscale $G train.aux_weight=0.1 train.lr=0.002 train.head_lr_mult=10 "data.scale_range=[1.0,1.0]" data.rotate=0
  ;;
grn_full)
  G=configs/camvid/refine/grn_stage.yaml
  run aux0.1_lr2e-3_x10 $G train.aux_weight=0.1 train.lr=0.002 train.head_lr_mult=10
  run aux0.1_lr1e-3_x1  $G train.aux_weight=0.1 train.lr=0.001 train.head_lr_mult=1
  run aux0_lr1e-3_x1    $G train.aux_weight=0.0 train.lr=0.001 train.head_lr_mult=1
  # training crops at the test-time scale (no random scaling / rotation): does the GRN learn to fix
  # errors that the front only makes on augmented crops?
  run aux0.1_lr2e-3_x10_noscale $G train.aux_weight=0.1 train.lr=0.002 train.head_lr_mult=10 "data.scale_range=[1.0,1.0]" data.rotate=0
  ;;
lrn)
  L="configs/camvid/refine/lrn_stage.yaml model.head.grn=false model.head.lrn_channels=[32,32,32,64,64,64]"
  run lr1e-1 $L train.lr=0.1
  run lr1e-2 $L train.lr=0.01
  run lr1e-3 $L train.lr=0.001
  run lr1e-4 $L train.lr=0.0001
  ;;
context|context_full)
  C="configs/camvid/refine/lrn_stage.yaml model.head.grn=false model.head.local=context"
  run lr1e-2 $C train.lr=0.01
  run lr1e-3 $C train.lr=0.001
  run lr1e-4 $C train.lr=0.0001
  ;;
esac
python scripts/ablation_summary.py $OUT
