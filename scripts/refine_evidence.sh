#!/usr/bin/env bash
# GRN/LRN Table 2 in miniature on CamVid val (101 images, 360x480, whole image).
# Front: the packaged PSPNet-EfficientNet-Lite0 (src/sceneparse/weights/camvid_pspnet_effl0.pt, 60 epochs
# on CamVid train), frozen. Every trained row: EPOCHS epochs of CamVid train (45 iterations each,
# batch 8), the stage configs' learning rate / auxiliary weight (chosen by scripts/refine_ablation.sh),
# one run per seed in SEEDS. GRN and context module train on the front's 360x480 crops; the LRN
# (Table 1 at 1/8 width) on 240x320 crops (CPU budget; it is local, 7x7 propagation).
# Writes runs/refine/<row>_s<seed>/ and results/camvid/refine/table2.json (+ the README table on stdout).
# Usage: bash scripts/refine_evidence.sh   [SEEDS="0 1" CASCADE_SEEDS="0 1" EPOCHS=2]
set -euo pipefail
cd "$(dirname "$0")/.."
SEEDS=${SEEDS:-0 1}
CASCADE_SEEDS=${CASCADE_SEEDS:-0 1}
EPOCHS=${EPOCHS:-2}
FRONT=${FRONT:-src/sceneparse/weights/camvid_pspnet_effl0.pt}
R=runs/refine
OUT=results/camvid/refine
mkdir -p $R $OUT
LRN="model.head.lrn_channels=[32,32,32,64,64,64] data.crop_size=[240,320]"
COMMON="train.epochs=$EPOCHS train.eval_interval=100000 data.num_workers=1 model.head.front=$FRONT"
train() { local dir=$1; shift; [ -f $dir/final.pt ] || sceneparse train "$@" $COMMON --work-dir $dir --no-progress --resume auto; }
ev() { local ck=$1 out=$2; shift 2; [ -f $out ] || sceneparse evaluate --checkpoint $ck --out $out --no-progress "$@" >/dev/null; }
ev $FRONT $R/front_eval.json data.root=../shared/data/camvid
for s in $SEEDS; do
  train $R/grn_s$s configs/camvid/refine/grn_stage.yaml train.seed=$s
  ev $R/grn_s$s/final.pt $R/grn_s$s/eval.json
  train $R/context_s$s configs/camvid/refine/context_stage.yaml train.seed=$s
  ev $R/context_s$s/final.pt $R/context_s$s/eval.json
  train $R/lrn_s$s configs/camvid/refine/lrn_stage.yaml model.head.grn=false $LRN train.seed=$s
  ev $R/lrn_s$s/final.pt $R/lrn_s$s/eval.json
  [ -f $R/parallel_s$s.pt ] || python scripts/merge_parallel.py $R/grn_s$s/final.pt $R/lrn_s$s/final.pt $R/parallel_s$s.pt
  ev $R/parallel_s$s.pt $R/parallel_s$s.json
done
cascade() {
  local s=$1
  train $R/grn_lrn_s$s configs/camvid/refine/lrn_stage.yaml $LRN model.init_weights=$R/grn_s$s/final.pt train.seed=$s
  ev $R/grn_lrn_s$s/final.pt $R/grn_lrn_s$s/eval.json
}
tables() {
python - "$SEEDS" "$CASCADE_SEEDS" "$EPOCHS" > $R/spec.json <<'PY'
import json, sys
seeds, cseeds, epochs = sys.argv[1].split(), sys.argv[2].split(), int(sys.argv[3])
R = "runs/refine"
def row(name, label, fmt, ss, log=True):
    return {"name": name, "label": label, "evals": [fmt.format(s=s) for s in ss],
            "train_logs": [f"{R}/{name}_s{s}/log.csv" for s in ss] if log else []}
print(json.dumps({"protocol": {
    "split": "CamVid val, 101 images", "resolution": "360x480 whole image, single scale unless stated",
    "front": "packaged PSPNet-EfficientNet-Lite0 OS16 (60 epochs, ImageNet-pretrained), frozen",
    "budget": f"{epochs} epochs of CamVid train per trained stage (45 iterations/epoch, batch 8), SGD momentum 0.9, poly",
    "crops": "GRN and context module 360x480, LRN 240x320", "lrn_width": "Table 1 / 8 (32,32,32,64,64,64), m=7",
    "seeds": seeds, "cascade_seeds": cseeds, "machine": "2 CPU cores"},
    "rows": [
        {"name": "front", "label": "Front (frozen)", "evals": [f"{R}/front_eval.json"]},
        row("grn", "+GRN (3 iterations)", R + "/grn_s{s}/eval.json", seeds),
        row("lrn", "+LRN", R + "/lrn_s{s}/eval.json", seeds),
        row("grn_lrn", "+GRN+LRN", R + "/grn_lrn_s{s}/eval.json", cseeds),
        row("grn_lrn_ms", "+GRN+LRN+MS (0.75/1/1.25, flip)", R + "/grn_lrn_s{s}/eval_ms_flip.json", cseeds[:1], False),
        {"name": "crf", "label": "+dense CRF (grid on held-out train)", "evals": [f"{R}/front_crf.json"]},
        row("context", "+context module (Yu & Koltun)", R + "/context_s{s}/eval.json", seeds),
        row("parallel", "parallel fusion mean(GRN, LRN)", R + "/parallel_s{s}.json", seeds, False),
    ]}, indent=1))
PY
  python scripts/evidence_json.py $R/spec.json $OUT/table2.json | tee $OUT/table2.md
}
FIRST=${CASCADE_SEEDS%% *}
cascade $FIRST
# multi-scale + flip on the first cascade seed only (6 passes per image: CPU budget)
ev $R/grn_lrn_s$FIRST/final.pt $R/grn_lrn_s$FIRST/eval_ms_flip.json --scales 0.75 1.0 1.25 --flip
# dense CRF: kernel weights from a grid on the last 30 CamVid *train* images (never val)
[ -f $R/crf_grid.json ] || python scripts/crf_grid.py $FRONT $R/crf_grid.json 30 | tee $R/crf_grid.txt
ev $FRONT $R/front_crf.json data.root=../shared/data/camvid --crf $(tail -1 $R/crf_grid.txt)
tables  # written now and again after each further cascade seed
for s in ${CASCADE_SEEDS#$FIRST}; do
  cascade $s
  tables
done
