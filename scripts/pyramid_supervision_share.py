"""Measured on CamVid train labels (resized to 352x480 by nearest neighbour, as the
pyramid model sees them): share of labelled pixels that no level supervises, per class, with the finest
level on its 4x4 cells (before) and on every labelled pixel (now), pyramid 32-16-8-4, simple_fix relabelling.
Usage: python scripts/pyramid_supervision_share.py [OUT.json]"""
import json
import sys

import numpy as np
import torch
import torch.nn.functional as F

from sceneparse.data import build_dataset
from sceneparse.models.pyramid.targets import finest_pixel_target, pyramid_ground_truth, relabel

IGN, strides = 255, (32, 16, 8, 4)
ds = build_dataset("camvid", "../shared/data/camvid", "train", None)
k = len(ds.CLASSES)
tot, none_old, none_new = np.zeros(k), np.zeros(k), np.zeros(k)
for img_path, lab_path in ds.pairs:
    lab = torch.from_numpy(np.asarray(ds.load_label(lab_path), dtype=np.int64))[None]
    lab = F.interpolate(lab[:, None].float(), size=(352, 480), mode="nearest")[:, 0].long()
    unity, sem = pyramid_ground_truth(lab, strides)
    u, y = relabel(unity, sem, "simple_fix")
    covered = torch.zeros_like(lab, dtype=torch.bool)
    for s, yl in zip(strides[:-1], y[:-1]):
        covered |= (yl != IGN).repeat_interleave(s, -2).repeat_interleave(s, -1)
    old = covered | (y[-1] != IGN).repeat_interleave(4, -2).repeat_interleave(4, -1)
    new = covered | (finest_pixel_target(lab, unity, u, 4) != IGN)
    labelled = lab != IGN
    for c in range(k):
        m = lab == c
        tot[c] += m.sum()
        none_old[c] += (m & ~old).sum()
        none_new[c] += (m & ~new).sum()
res = {"split": "CamVid train (367 label maps, 352x480)", "relabel": "simple_fix",
       "unsupervised_share_before": round(100 * none_old.sum() / tot.sum(), 2),
       "unsupervised_share_now": round(100 * none_new.sum() / tot.sum(), 2),
       "per_class_before": {c: round(100 * a / max(b, 1), 1) for c, a, b in zip(ds.CLASSES, none_old, tot)},
       "per_class_now": {c: round(100 * a / max(b, 1), 1) for c, a, b in zip(ds.CLASSES, none_new, tot)}}
out = sys.argv[1] if len(sys.argv) > 1 else "results/camvid/pyramid/supervision_share.json"
json.dump(res, open(out, "w"), indent=1)
print(json.dumps(res, indent=1))
