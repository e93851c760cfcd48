#!/usr/bin/env python
"""Share of ground-truth unity cells that a trained pyramidal-output model predicts as unity (>= its training
threshold relabel_tau, which is tau unless set),
per level, on every 37th CamVid train image (centre 352x480 crop): what the "final" relabelling
policy marks "done by coarser" at the end of training (README, Specialize and Fuse, Table 7 notes).
Usage: python scripts/pyramid_unity_tp.py runs/pyr_ctx_final/final.pt [more checkpoints]"""
import sys

import torch

from sceneparse.data import build_dataset, build_eval_transform
from sceneparse.models.factory import model_from_checkpoint
from sceneparse.models.pyramid.targets import pyramid_ground_truth

for path in sys.argv[1:]:
    model, ckpt = model_from_checkpoint(path)
    d = ckpt["config"]["data"]
    ds = build_dataset(d["dataset"], d["root"], "train", build_eval_transform(d["mean"], d["std"]))
    model.eval()
    levels = len(model.strides) - 1
    tp, gt = [0] * levels, [0] * levels
    with torch.inference_mode():
        for i in range(0, len(ds), 37):
            b = ds[i]
            h = b["image"].shape[-2] // model.strides[0] * model.strides[0]
            top = (b["image"].shape[-2] - h) // 2
            x, y = b["image"][None, :, top:top + h], b["label"][None, top:top + h]
            w = x.shape[-1] // model.strides[0] * model.strides[0]
            out = model.forward_pyramid(x[..., :w])
            unity, _ = pyramid_ground_truth(y[..., :w], model.strides)
            for lvl in range(levels):
                g = unity[lvl] == 1
                gt[lvl] += int(g.sum())
                tp[lvl] += int((g & (out["unity"][lvl] >= model.relabel_tau)).sum())
    print(path, "predicted-unity share of GT unity cells per level",
          {f"s{s}": round(100 * t / max(g, 1), 1) for s, t, g in zip(model.strides, tp, gt)})
