"""Collect evaluate JSONs into the machine-readable evidence tables of the refinement and pyramid rows and print the README table.

Usage: python scripts/evidence_json.py SPEC.json OUT.json
SPEC: {"protocol": {...}, "rows": [{"name": ..., "label": ..., "evals": [eval.json per seed],
        "train_logs": [log.csv per seed, optional], "eval_s": [optional]}]}
Each row gets mIoU / aAcc / boundary_F per seed (missing seeds are skipped), mean and spread
(max - min), and wall_s = training time from the run's log.csv (last time_s)."""
import csv
import json
import sys
from pathlib import Path

spec = json.load(open(sys.argv[1]))
rows = []
for r in spec["rows"]:
    evals = [json.load(open(p)) for p in r["evals"] if Path(p).is_file()]
    logs = [p for p in r.get("train_logs", []) if Path(p).is_file()]
    wall = []
    for p in logs:
        t = [float(x["time_s"]) for x in csv.DictReader(open(p)) if x.get("time_s")]
        wall.append(max(t) if t else None)
    row = {"name": r["name"], "label": r.get("label", r["name"]),
           "mIoU": [round(e["mIoU"], 2) for e in evals], "aAcc": [round(e["aAcc"], 2) for e in evals if "aAcc" in e],
           "boundary_F": [round(e["boundary"]["F"], 2) for e in evals if "boundary" in e], "wall_s": wall,
           "seeds": len(evals)}
    for k in ("mIoU", "boundary_F"):
        v = row[k]
        row[k + "_mean"] = round(sum(v) / len(v), 2) if v else None
        row[k + "_spread"] = round(max(v) - min(v), 2) if len(v) > 1 else None
    rows.append(row)
json.dump({"protocol": spec["protocol"], "rows": rows}, open(sys.argv[2], "w"), indent=1)
print("| row | val mIoU per seed | mean | spread | boundary F (3 px) mean | training s per seed |")
print("|---|---|---|---|---|---|")
for r in rows:
    f = lambda v: "-" if v is None else f"{v:.2f}"  # noqa: E731
    print(f"| {r['label']} | {' / '.join(f'{x:.2f}' for x in r['mIoU']) or 'not run'} | {f(r['mIoU_mean'])} | "
          f"{f(r['mIoU_spread'])} | {f(r['boundary_F_mean'])} | {' / '.join(str(int(w)) for w in r['wall_s'] if w) or '-'} |")
