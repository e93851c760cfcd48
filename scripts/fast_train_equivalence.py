"""Summary of scripts/fast_train_equivalence.sh: per run the training loss (mean of the logged iterations of
each epoch) and val mIoU after each of the 3 epochs; per path the mean over seeds and the seed spread.
Usage: python scripts/fast_train_equivalence.py [RUNS_DIR] [OUT.json]"""
import csv
import json
import statistics
import sys
from pathlib import Path

runs = Path(sys.argv[1] if len(sys.argv) > 1 else Path.home() / "sceneparse-runs" / "fast_equiv")
out = sys.argv[2] if len(sys.argv) > 2 else "results/camvid/fast_train_equivalence.json"
res = {}
for d in sorted(runs.iterdir()):
    if not (d / "log.csv").is_file():
        continue
    rows = list(csv.DictReader((d / "log.csv").open()))
    if not rows or int(rows[-1]["iter"]) < 135:
        print(f"{d.name}: unfinished ({rows[-1]['iter'] if rows else 0} iterations)")
        continue
    loss = {e: statistics.mean(float(r["loss"]) for r in rows if r["loss"] and (e - 1) * 45 < int(r["iter"]) <= e * 45)
            for e in (1, 2, 3)}
    miou = {round(float(r["epoch"])): float(r["val_mIoU"]) for r in rows if r["val_mIoU"]}
    log = (d / "train.log").read_text()
    res[d.name] = {"loss_per_epoch": loss, "val_mIoU_per_epoch": miou, "time_s": float(rows[-1]["time_s"]),
                   "fast_plan": next((ln.split(": ", 1)[-1] for ln in log.splitlines() if "train.fast" in ln), "")}
summary = {}
for path in sorted({k.rsplit("_seed", 1)[0] for k in res}):
    got = [v for k, v in res.items() if k.rsplit("_seed", 1)[0] == path]
    if got:
        summary[path] = {"seeds": len(got),
                         "val_mIoU_epoch3_mean": statistics.mean(g["val_mIoU_per_epoch"][3] for g in got),
                         "val_mIoU_epoch3_spread": max(g["val_mIoU_per_epoch"][3] for g in got)
                         - min(g["val_mIoU_per_epoch"][3] for g in got),
                         "loss_epoch3_mean": statistics.mean(g["loss_per_epoch"][3] for g in got),
                         "time_s_mean": statistics.mean(g["time_s"] for g in got)}
result = {"protocol": "configs/camvid/pspnet_effl0.yaml, 135 iterations (3 epochs), val (101 images, whole 360x480) "
                      "after each epoch; ref = train.fast=false (PyTorch's kernels, fp32), fast = train.fast=auto",
          "runs": res, "summary": summary}
print(json.dumps(result, indent=1))
Path(out).write_text(json.dumps(result, indent=1))
