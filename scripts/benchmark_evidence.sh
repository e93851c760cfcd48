#!/usr/bin/env bash
# Speed against peers (docs/inference.md): peers side by side in one process at 512x512, batch 1,
# this machine's threads; bf16 accuracy check on CamVid val. Writes results/bench/*.json.
set -euo pipefail
cd "$(dirname "$0")/.."
B=${B:-results/bench}   # B=results/bench/<machine> for a second machine
mkdir -p $B
LOG=runs/benchmark_times.txt
t() { local s=$(date +%s); "$@" > /dev/null; echo "wall_s $(( $(date +%s) - s )) :: $*" >> $LOG; }
R="--size 512 512 --repeats 5 --warmup 1 --num-classes 21"
t sceneparse benchmark --compare torchvision $R --out $B/torchvision_deeplabv3_r50_fp32.json
t sceneparse benchmark --compare torchvision $R --bf16 --out $B/torchvision_deeplabv3_r50_bf16.json
t sceneparse benchmark --compare smp --arch pspnet $R --out $B/smp_pspnet_r50_fp32.json
t sceneparse benchmark --compare smp --arch deeplabv3 $R --out $B/smp_deeplabv3_r50_fp32.json
t sceneparse benchmark --compare smp --arch pspnet $R --bf16 --out $B/smp_pspnet_r50_bf16.json
t sceneparse benchmark --compare torchvision $R --compile --out $B/torchvision_deeplabv3_r50_fp32_compile.json
t sceneparse benchmark --compare smp --arch pspnet $R --compile --out $B/smp_pspnet_r50_fp32_compile.json
t sceneparse benchmark --compare torchvision $R --bf16 --compile --out $B/torchvision_deeplabv3_r50_bf16_compile.json
F=runs/camvid_pspnet_effl0/final.pt
[ -f $F ] || { echo "no $F: bf16 accuracy check skipped" | tee -a $LOG; exit 0; }
t sceneparse evaluate --checkpoint $F --out $B/camvid_pspnet_effl0_fp32_foldbn.json --fold-bn --no-progress
t sceneparse evaluate --checkpoint $F --out $B/camvid_pspnet_effl0_bf16.json --bf16 --no-progress
echo done >> $LOG
