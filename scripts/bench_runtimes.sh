#!/usr/bin/env bash
# Our inference against OpenVINO and ONNX Runtime on the same weights (sceneparse benchmark --compare),
# for the shipped CamVid model at 360x480, DeepLabv3 / PSPNet on ResNet-50 and PSPNet on EfficientNet-Lite0
# (the benchmark's default model) at OS8 (21 classes, random weights with random BN statistics) at
# 512x512, batch 1, 2 threads.
# Writes results/bench/runtimes/<cpu>/<model>_<runtime>_<precision>.json; scripts/speed_table.py turns
# them into the README's speed section. Usage: bash scripts/bench_runtimes.sh [model ...]
set -euo pipefail
cd "$(dirname "$0")/.."
cpu=$(python -c "from sceneparse.utils.sysinfo import cpu_model; import re; print(re.sub(r'[^a-z0-9]+', '_', cpu_model().lower()).strip('_'))")
out=results/bench/runtimes/$cpu
mkdir -p "$out"
int8=$out/camvid_pspnet_effl0_int8.xml
data_root=${CAMVID_ROOT:-../shared/data/camvid}
if [ ! -f "$int8" ]; then
  sceneparse quantize --checkpoint camvid_pspnet_effl0 --out "$int8" "data.root=$data_root" --no-progress
fi
models=${*:-camvid deeplabv3_r50 pspnet_r50 pspnet_effl0_os8}
for m in $models; do
  runs=("onnxruntime fp32 logits" "openvino fp32 logits" "openvino bf16 logits")
  case $m in
    camvid) spec=(--checkpoint camvid_pspnet_effl0 --size 360 480 --repeats 15)
            runs+=("openvino fp32 labels" "openvino bf16 labels" "onnxruntime fp32 labels");;
    deeplabv3_r50) spec=(--arch deeplabv3 --backbone resnet50 --num-classes 21 --size 512 512 --repeats 6);;
    pspnet_r50) spec=(--arch pspnet --backbone resnet50 --num-classes 21 --size 512 512 --repeats 6);;
    pspnet_effl0_os8) spec=(--arch pspnet --backbone efficientnet_lite0 --num-classes 21 --output-stride 8
                            --size 512 512 --repeats 10);;
  esac
  for run in "${runs[@]}"; do
    set -- $run
    flag=(); [ "$2" = bf16 ] && flag+=(--bf16)
    [ "$3" = labels ] && flag+=(--labels)
    [ "$m" = camvid ] && [ "$1" = openvino ] && flag+=(--int8 "$int8")
    sceneparse benchmark "${spec[@]}" --threads 2 --compare "$1" "${flag[@]}" \
      --out "$out/${m}_$1_$2_$3.json" 2>&1 | grep "img/s"
  done
  if [ "$m" = camvid ]; then  # predict end to end on one val image: torch fp32 / bf16 compiled, int8 IR
    img=$(python -c "import sys; from sceneparse.data import build_dataset; print(build_dataset('camvid', sys.argv[1], 'val').pairs[0][0])" "$data_root")
    sceneparse benchmark --threads 2 --end-to-end "$img" --repeats 15 --out "$out/camvid_e2e_torch_fp32.json" | tail -1
    sceneparse benchmark --threads 2 --end-to-end "$img" --repeats 15 --bf16 --compile --out "$out/camvid_e2e_torch_bf16_compile.json" | tail -1
    sceneparse benchmark --threads 2 --end-to-end "$img" --repeats 15 --checkpoint "$int8" --bf16 --out "$out/camvid_e2e_int8_bf16.json" | tail -1
  fi
done
