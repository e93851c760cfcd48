#!/usr/bin/env bash
# Reproduces the CamVid numbers in the README (CPU, 2 cores): evaluation of the PSPNet run at
# OS16 / OS8 / multi-scale + flip, packaging of the default model, the DeepLabv3 ablation
# (ASPP with vs without image pooling, same budget), and the sliding-window memory benchmark.
# Usage: bash scripts/camvid_evidence.sh   (after `sceneparse train configs/camvid/pspnet_effl0.yaml`)
set -euo pipefail
cd "$(dirname "$0")/.."
R=runs/camvid_pspnet_effl0
MS="--scales 0.5 0.75 1.0 1.25 1.5 1.75 --flip"
while [ ! -f $R/final.pt ]; do sleep 20; done
t() { local s=$(date +%s); "$@"; echo "wall_s $(( $(date +%s) - s )) :: $*" >> runs/evidence_times.txt; }
t sceneparse evaluate --checkpoint $R/final.pt --out $R/eval_os16.json --no-progress
t sceneparse evaluate --checkpoint $R/final.pt --output-stride 8 --out $R/eval_os8.json --no-progress
t sceneparse evaluate --checkpoint $R/final.pt $MS --out $R/eval_os16_msflip.json --no-progress
t sceneparse pack $R/final.pt src/sceneparse/weights/camvid_pspnet_effl0.pt --fp16 --metrics $R/eval_os16.json
# DeepLabv3 ablation: 10 epochs each, identical except image pooling
for ip in true false; do
  t sceneparse train configs/camvid/deeplabv3_effl0.yaml train.epochs=10 train.eval_interval=10000 \
      model.head.image_pooling=$ip data.num_workers=1 --work-dir runs/camvid_dlv3_ip_$ip --no-progress --resume auto
  t sceneparse evaluate --checkpoint runs/camvid_dlv3_ip_$ip/final.pt --out runs/camvid_dlv3_ip_$ip/eval_os16.json --no-progress
done
D=runs/camvid_dlv3_ip_true
t sceneparse evaluate --checkpoint $D/final.pt --output-stride 8 --out $D/eval_os8.json --no-progress
t sceneparse evaluate --checkpoint $D/final.pt $MS --out $D/eval_os16_msflip.json --no-progress
# memory: whole image vs sliding window on a 1024x2048 input (one process each: peak RSS is per process)
t sceneparse benchmark --checkpoint $R/final.pt --size 1024 2048 --repeats 3 --warmup 1 --out runs/bench_whole_1024x2048.json
t sceneparse benchmark --checkpoint $R/final.pt --size 1024 2048 --repeats 3 --warmup 1 --mode slide \
    --crop-size 360 480 --stride 240 320 --window-batch 2 --out runs/bench_slide_1024x2048.json
echo done >> runs/evidence_times.txt
