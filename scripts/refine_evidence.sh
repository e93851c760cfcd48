#!/usr/bin/env bash
# GRN/LRN Table 2 on CamVid val (CPU, 2 cores): front = the PSPNet-EfficientNet-Lite0 run of
# configs/camvid/pspnet_effl0.yaml (evaluated by scripts/camvid_evidence.sh); every refinement row
# trains its stage for the same EPOCHS (default 3) with the front (and GRN) frozen. The LRN is
# Table 1's at 1/8 width (CPU budget). Multi-scale: scales 0.75 / 1 / 1.25, no flip (CPU budget).
# Usage: bash scripts/refine_evidence.sh   (after the front run exists)
set -euo pipefail
cd "$(dirname "$0")/.."
EPOCHS=${EPOCHS:-3}
FRONT=runs/camvid_pspnet_effl0/final.pt
LRN="model.head.lrn_channels=[32,32,32,64,64,64]"
COMMON="train.epochs=$EPOCHS train.eval_interval=100000 data.num_workers=1 model.head.front=$FRONT"
LOG=runs/refine_times.txt
E=runs/refine_eval
mkdir -p $E
t() { local s=$(date +%s); "$@"; echo "wall_s $(( $(date +%s) - s )) :: $*" >> $LOG; }
ev() { [ -f "$2" ] || t sceneparse evaluate --checkpoint "$1" --out "$2" --no-progress "${@:3}"; }
[ -f runs/camvid_refine_grn/final.pt ] || t sceneparse train configs/camvid/refine/grn_stage.yaml $COMMON --work-dir runs/camvid_refine_grn --no-progress
[ -f runs/camvid_refine_grn_lrn/final.pt ] || t sceneparse train configs/camvid/refine/lrn_stage.yaml $COMMON $LRN \
    model.init_weights=runs/camvid_refine_grn/final.pt --work-dir runs/camvid_refine_grn_lrn --no-progress
# LRN alone: 240x320 crops (CPU budget), as in the README table
[ -f runs/camvid_refine_lrn/final.pt ] || t sceneparse train configs/camvid/refine/lrn_stage.yaml $COMMON $LRN \
    model.head.grn=false "data.crop_size=[240,320]" --work-dir runs/camvid_refine_lrn --no-progress
[ -f runs/camvid_refine_context/final.pt ] || t sceneparse train configs/camvid/refine/lrn_stage.yaml $COMMON \
    model.head.grn=false model.head.local=context --work-dir runs/camvid_refine_context --no-progress
[ -f runs/camvid_pspnet_effl0/eval_os16.json ] && cp -n runs/camvid_pspnet_effl0/eval_os16.json $E/front.json
ev $FRONT $E/front.json
ev runs/camvid_refine_grn/final.pt $E/grn.json
ev runs/camvid_refine_grn_lrn/final.pt $E/grn_lrn.json
ev runs/camvid_refine_lrn/final.pt $E/lrn.json
ev runs/camvid_refine_context/final.pt $E/context.json
ev $FRONT $E/front_crf.json --crf
ev runs/camvid_refine_grn_lrn/final.pt $E/grn_lrn_ms.json --scales 0.75 1.0 1.25  # not run yet (README)
echo done >> $LOG
