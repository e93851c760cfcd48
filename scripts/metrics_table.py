#!/usr/bin/env python
"""Markdown table from metric JSONs written by `sceneparse evaluate`.
Usage: python scripts/metrics_table.py "Front=runs/refine_eval/front.json" "+GRN=runs/refine_eval/grn.json" ..."""
import json
import sys
from pathlib import Path

print("| row | val mIoU | aAcc | mAcc | boundary F (3 px) |")
print("|---|---|---|---|---|")
for arg in sys.argv[1:]:
    name, path = arg.split("=", 1)
    if not Path(path).is_file():
        print(f"| {name} | not run | | | |")
        continue
    r = json.loads(Path(path).read_text())
    bf = r.get("boundary", {}).get("F")
    print(f"| {name} | {r['mIoU']:.2f} | {r['aAcc']:.2f} | {r['mAcc']:.2f} | {'' if bf is None else f'{bf:.2f}'} |")
