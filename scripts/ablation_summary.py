"""Summarise refine_ablation.sh runs: per run, the refined and front CE on the same logged batches and
the val mIoU (first 26 val images) at step 0 and at the end. Writes OUT/summary.json and prints a table.
Usage: python scripts/ablation_summary.py runs/ablation_grn"""
import csv
import json
import sys
from pathlib import Path

out = Path(sys.argv[1])
rows = []
for run in sorted(p for p in out.iterdir() if (p / "log.csv").is_file()):
    log = list(csv.DictReader((run / "log.csv").open()))
    steps = [r for r in log if r["loss"]]
    evals = [r for r in log if r["val_mIoU"]]
    rows.append({"run": run.name,
                 "loss": [round(float(r["loss"]), 4) for r in steps],
                 "loss_front": [round(float(r["loss_front"]), 4) for r in steps],
                 "iters": [int(r["iter"]) for r in steps],
                 "val_mIoU_front": float(evals[0]["val_mIoU_front"]) if evals and evals[0]["val_mIoU_front"] else None,
                 "val_mIoU_step0": float(evals[0]["val_mIoU"]) if evals else None,
                 "val_mIoU_end": float(evals[-1]["val_mIoU"]) if evals else None})
(out / "summary.json").write_text(json.dumps(rows, indent=1))
for r in rows:
    d = [round(a - b, 3) for a, b in zip(r["loss"], r["loss_front"])]
    print(f"{r['run']:22s} val front {r['val_mIoU_front']} -> end {r['val_mIoU_end']}  "
          f"refined-front CE per logged step: {d}")
