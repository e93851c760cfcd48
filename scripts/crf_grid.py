"""Pick the dense CRF's kernel weights on a held-out part of CamVid *train* (never on val), for the
"+dense CRF" row of Table 2. Scores the front with each setting of a small grid on the last N train
images and prints the best as --crf-param flags (and writes them as JSON).
Usage: python scripts/crf_grid.py FRONT.pt OUT.json [N]"""
import itertools
import json
import sys

import torch

from sceneparse.config import load_config
from sceneparse.data import build_dataset, build_eval_transform
from sceneparse.models.factory import model_from_checkpoint
from sceneparse.inference.crf import DenseCRF
from sceneparse.evaluation.evaluate import evaluate_model
from sceneparse.inference.engine import InferenceConfig

front, out = sys.argv[1], sys.argv[2]
n = int(sys.argv[3]) if len(sys.argv) > 3 else 30
model, ckpt = model_from_checkpoint(front)
cfg = load_config(None, ["data.root=../shared/data/camvid"], base=ckpt["config"])
d = cfg.data
ds = build_dataset(d.dataset, d.root, d.train_split, build_eval_transform(d.mean, d.std))
ds.pairs = ds.pairs[-n:]
grid = {"bilateral_compat": [3.0, 5.0, 10.0], "bilateral_sxy": [30.0, 80.0], "bilateral_srgb": [5.0, 13.0]}
rows = []
base = evaluate_model(model, ds, "cpu", progress=False)
rows.append({"params": None, "mIoU": base["mIoU"], "boundary_F": base["boundary"]["F"]})
for values in itertools.product(*grid.values()):
    params = dict(zip(grid, values))
    s = evaluate_model(model, ds, "cpu", progress=False,
                       infer=InferenceConfig(crf=DenseCRF(**params), mean=tuple(d.mean), std=tuple(d.std)))
    rows.append({"params": params, "mIoU": s["mIoU"], "boundary_F": s["boundary"]["F"]})
    print(params, f"mIoU {s['mIoU']:.2f} F {s['boundary']['F']:.2f} (no CRF {base['mIoU']:.2f})", flush=True)
best = max(rows[1:], key=lambda r: r["mIoU"])
json.dump({"held_out": f"last {n} images of {d.train_split}", "rows": rows, "best": best}, open(out, "w"), indent=1)
print(" ".join(f"--crf-param {k}={v}" for k, v in best["params"].items()))
