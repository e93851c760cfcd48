"""Per-class IoU of a pyramidal-output model (Specialize and Fuse) read in several ways on one split: the fused
output (Eq. 2) at several unity thresholds tau, and each pyramid level alone (its semantic scores upsampled,
bilinear, to the label). Asks whether a thin class (CamVid's Pole) is lost by the fuse step (a coarse unity cell
taking over the pixels of a pole) or by every level alone (recognition).

Usage: python scripts/pyramid_class_levels.py [MODEL] [--split val] [--taus 0.9 0.95 0.99] [--out FILE.json]
(whole images, single scale, fp32; MODEL defaults to the packaged default)
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]


@torch.inference_mode()
def level_confusions(model, dataset, taus, num_classes: int) -> dict:
    """``{"fused_tau<t>": ConfusionMatrix, ..., "level_s<stride>": ConfusionMatrix}`` over ``dataset``
    (items ``{"image": (3, H, W) float, "label": (H, W) int64}``), batch 1. ``model``: a
    ``PyramidOutputModel`` in eval mode."""
    from sceneparse.evaluation.metrics import ConfusionMatrix
    from sceneparse.models.pyramid.targets import fuse

    cms = {f"fused_tau{t:g}": ConfusionMatrix(num_classes) for t in taus}
    cms.update({f"level_s{s}": ConfusionMatrix(num_classes) for s in model.strides})
    for i in range(len(dataset)):
        item = dataset[i]
        x, target = item["image"][None], item["label"][None]
        out = model.forward_pyramid(x)
        probs = [s.float().softmax(1) for s in out["semantic"]]

        def labels(scores):
            return F.interpolate(scores, size=target.shape[-2:], mode="bilinear", align_corners=False).argmax(1)

        for t in taus:  # as the model's forward: the log of the fused probabilities is what is upsampled
            cms[f"fused_tau{t:g}"].update(labels(fuse(probs, out["unity"], t)[0].clamp_min(1e-8).log()), target)
        for s, scores in zip(model.strides, out["semantic"]):  # its scores upsampled, as `sceneparse analyze` reads
            cms[f"level_s{s}"].update(labels(scores.float()), target)
    return cms


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", nargs="?", default=None, help="packaged name or checkpoint (default: the default model)")
    ap.add_argument("--split", default="val")
    ap.add_argument("--data-root", default=str(REPO.parent / "shared/data/camvid"))
    ap.add_argument("--taus", type=float, nargs="+", default=[0.9, 0.95, 0.99])
    ap.add_argument("--out", default=None)
    args = ap.parse_args()

    import sceneparse
    from sceneparse.data import build_dataset
    from sceneparse.data.transforms import build_eval_transform

    seg = sceneparse.load(args.model, device="cpu")
    model = seg.model.float().eval()
    if not hasattr(model, "forward_pyramid"):
        raise SystemExit(f"{seg.meta['source']} is not a pyramidal-output model")
    ds = build_dataset(seg.meta["dataset"], args.data_root, args.split, build_eval_transform(seg.meta["mean"], seg.meta["std"]))
    cms = level_confusions(model, ds, args.taus, len(seg.classes))
    result = {"model": Path(seg.meta["source"]).name, "split": args.split, "images": len(ds), "tau_trained": model.tau,
              "readings": {}}
    for name, cm in cms.items():
        s = cm.compute()
        result["readings"][name] = {"mIoU": round(s["mIoU"], 2),
                                    "IoU": {c: round(float(v), 2) for c, v in zip(seg.classes, s["IoU"].values()
                                            if isinstance(s["IoU"], dict) else s["IoU"])}}
        print(f"{name:<16} mIoU {s['mIoU']:6.2f}  " + "  ".join(
            f"{c} {v:5.1f}" for c, v in result["readings"][name]["IoU"].items()))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
