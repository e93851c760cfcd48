#!/usr/bin/env bash
# The first 3 epochs (135 iterations, val every epoch) of configs/camvid/pspnet_effl0.yaml from the same seed,
# PyTorch's kernels (train.fast=false, fp32: the step before train.fast existed) against train.fast=auto, two
# seeds each. Resumable (--resume auto); run folders outside the work tree. Summary: scripts/fast_train_equivalence.py
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$HOME/sceneparse-runs/fast_equiv}
PATHS=${PATHS:-fast ref}  # e.g. PATHS=fast TAG=_v2 to rerun the fast path after a kernel change
for seed in 0 1; do
  for path in $PATHS; do
    fast=$([ "$path" = fast ] && echo auto || echo false)
    sceneparse train configs/camvid/pspnet_effl0.yaml train.iters=135 train.eval_interval=45 train.ckpt_interval=45 \
      train.seed=$seed train.fast=$fast --work-dir "$OUT/${path}${TAG:-}_seed$seed" --resume auto --no-progress
  done
done
