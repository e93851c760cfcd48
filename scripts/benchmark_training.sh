#!/usr/bin/env bash
# `sceneparse benchmark --train` for the shipped training configs -> results/bench/train_step_<name>_<cpu>.json,
# then the docs table: python scripts/train_speed_table.py. REPEATS (default 5) timed steps per variant.
# ResNet-50 configs run without ImageNet weights (timing only; offline here) and at batch 2 (a batch-8 OS8
# step takes minutes on 2 cores), at lr 1e-4: from random weights lr 0.01 diverged within the timed steps,
# which the divergence guard stops (the step's cost does not depend on the lr). ONLY=name runs one row.
set -euo pipefail
cd "$(dirname "$0")/.."
R=${REPEATS:-5}
CPU=$(grep -m1 "model name" /proc/cpuinfo | sed 's/.*: //; s/[^A-Za-z0-9]\+/_/g; s/_$//' | tr A-Z a-z)
run() {  # NAME CONFIG [overrides...]
  local name=$1 cfg=$2; shift 2
  [ -n "${ONLY:-}" ] && [ "$ONLY" != "$name" ] && return 0
  [ -f "results/bench/train_step_${name}_${CPU}.json" ] && [ -z "${FORCE:-}" ] && return 0
  sceneparse benchmark --train "$cfg" "$@" --repeats "$R" --warmup 1 --out "results/bench/train_step_${name}_${CPU}.json" \
    2>&1 | grep -v -E "^(INFO|WARNING|USDT|ERROR)"
}
run camvid_pspnet_effl0 configs/camvid/pspnet_effl0.yaml
run camvid_pspnet_effl0_os8 configs/camvid/pspnet_effl0.yaml name=camvid_pspnet_effl0_os8 model.output_stride=8
run camvid_pyramid_effl0 configs/camvid/pyramid_effl0.yaml
run camvid_refine_grn configs/camvid/refine/grn_stage.yaml
run camvid_fcn_effl0 configs/camvid/fcn_effl0.yaml
run camvid_deeplabv3_effl0 configs/camvid/deeplabv3_effl0.yaml
R=${REPEATS_R50:-2} run camvid_pspnet_r50_b2 configs/camvid/pspnet_r50.yaml name=camvid_pspnet_r50_b2 train.batch_size=2 \
  train.lr=0.0001
R=${REPEATS_R50:-2} run camvid_deeplabv3_cascade_r50_b2 configs/camvid/deeplabv3_cascade_r50.yaml \
  name=camvid_deeplabv3_cascade_r50_b2 train.batch_size=2 train.lr=0.0001
# The LRN stage at batch 8 does not fit in 24 GB on either path: batch 2.
R=${REPEATS_R50:-2} run camvid_refine_lrn_b2 configs/camvid/refine/lrn_stage.yaml name=camvid_refine_lrn_b2 train.batch_size=2
