"""Collect the recipe ablation runs (scripts/recipe_loss_finetune.sh, scripts/recipe_equal_budget.sh)
into results/camvid/recipe/ablation.json and .md. Usage: python scripts/recipe_collect.py"""
import json
import platform
from pathlib import Path

ROWS = {
    "finetune": ("runs/ft", {"ce": "CE (control: 3 more epochs, same loss)", "ohem": "OHEM CE (thresh 0.7, min_kept 100k)",
                             "inverse_log": "CE + inverse-log class weights (ENet)",
                             "median_freq": "CE + median-frequency class weights (SegNet)"}),
    "equal_budget": ("runs/mini", {"lite0": "PSPNet, EfficientNet-Lite0, OS16", "lite2": "PSPNet, EfficientNet-Lite2, OS16",
                                   "fcn_lite0": "dilated FCN (no PPM), EfficientNet-Lite0, OS16",
                                   "lite0_seed1": "PSPNet, EfficientNet-Lite0, OS16, seed 1"}),
}
cpu = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")), platform.processor())
out = {"cpu": cpu, "split": "CamVid val, 101 images, 360x480, whole image, single scale, OS16",
       "seeds": "0 unless the row says otherwise", "groups": {}}
md = []
for group, (folder, names) in ROWS.items():
    rows = {}
    for key, label in names.items():
        f = Path(folder) / key / "val_metrics.json"
        if not f.is_file():
            continue
        d = json.loads(f.read_text())
        log = (Path(folder) / key / "log.csv").read_text().strip().splitlines()
        rows[key] = {"row": label, "mIoU": round(d["mIoU"], 2), "aAcc": round(d["aAcc"], 2), "mAcc": round(d["mAcc"], 2),
                     "IoU": {k: round(v, 1) for k, v in d["IoU"].items()}, "train_s": float(log[-1].split(",")[-1])}
    out["groups"][group] = rows
    md.append(f"\n{group}\n\n| row | val mIoU | aAcc | Pole | SignSymbol | Pedestrian | Bicyclist | train s |\n|---|---|---|---|---|---|---|---|")
    for r in rows.values():
        md.append(f"| {r['row']} | {r['mIoU']} | {r['aAcc']} | {r['IoU']['Pole']} | {r['IoU']['SignSymbol']} | "
                  f"{r['IoU']['Pedestrian']} | {r['IoU']['Bicyclist']} | {r['train_s']:.0f} |")
speed = Path("runs/mini/speed.json")
if speed.is_file():
    out["train_step_s_bf16_batch8_360x480"] = json.loads(speed.read_text())["median_s_per_step_bf16"]
dest = Path("results/camvid/recipe")
dest.mkdir(parents=True, exist_ok=True)
(dest / "ablation.json").write_text(json.dumps(out, indent=1))
(dest / "ablation.md").write_text("\n".join(md) + "\n")
print("\n".join(md))
