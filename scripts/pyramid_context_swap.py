"""Does a trained Specialize-and-Fuse model use its coarse-to-fine context (Sec. 4.2, CA / CU modules)?

Scores the fused output (Eq. 2) on one split twice: as trained, and with every image's context tokens
(theta_0 = PyramidPool(X_L) and each CU's update theta_l) replaced by those of the next image of the split,
its own features unchanged. A model whose CA modules read image-specific context loses accuracy under the swap;
one that learned to ignore the context (attention as a constant) scores the same.

Usage: python scripts/pyramid_context_swap.py CHECKPOINT [--split val] [--out FILE.json]
(whole images, single scale, fp32; the images of the split must share one size)
"""
from __future__ import annotations

import argparse
import contextlib
import json
from pathlib import Path

import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]


@contextlib.contextmanager
def swapped_context(model):
    """Within the block, ``model``'s context tokens (its semantic head's ``pool0`` and ``cu`` outputs,
    ``(N, C, T)``) are rolled by one along the batch: image i reads image i-1's context.

    Raises:
        ValueError: the model has no context modules (``context: false`` or not a pyramidal-output model).
    """
    head = getattr(model, "semantic_head", None)
    if head is None or not getattr(head, "context", False):
        raise ValueError("the model has no context modules (a pyramid_output model with context: true is needed)")
    hooks = [m.register_forward_hook(lambda _m, _i, out: out.roll(1, 0)) for m in (head.pool0, *head.cu)]
    try:
        yield model
    finally:
        for h in hooks:
            h.remove()


@torch.inference_mode()
def context_swap_confusions(model, dataset, num_classes: int) -> dict:
    """``{"own": ConfusionMatrix, "swapped": ConfusionMatrix}`` of the fused labels over ``dataset`` (items
    ``{"image": (3, H, W) float, "label": (H, W) int64}``, one size): image i alone, and image i in a batch
    with image i+1 (the last with the first) whose context it reads."""
    from sceneparse.evaluation.metrics import ConfusionMatrix

    cms = {"own": ConfusionMatrix(num_classes), "swapped": ConfusionMatrix(num_classes)}
    n = len(dataset)

    def labels(x, size):
        out = model.forward_pyramid(x)["out"].float()
        return F.interpolate(out, size=size, mode="bilinear", align_corners=False).argmax(1)

    for i in range(n):
        item, other = dataset[i], dataset[(i + 1) % n]
        target = item["label"][None]
        cms["own"].update(labels(item["image"][None], target.shape[-2:]), target)
        with swapped_context(model):
            pair = torch.stack([item["image"], other["image"]])  # rolled: image i reads image i+1's context
            cms["swapped"].update(labels(pair, target.shape[-2:])[:1], target)
    return cms


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", help="checkpoint (or packaged name) of a pyramid_output model with context modules")
    ap.add_argument("--split", default="val")
    ap.add_argument("--data-root", default=str(REPO.parent / "shared/data/camvid"))
    ap.add_argument("--out", default=None)
    args = ap.parse_args()

    import sceneparse
    from sceneparse.data import build_dataset
    from sceneparse.data.transforms import build_eval_transform

    seg = sceneparse.load(args.model, device="cpu")
    model = seg.model.float().eval()
    ds = build_dataset(seg.meta["dataset"], args.data_root, args.split,
                       build_eval_transform(seg.meta["mean"], seg.meta["std"]))
    try:
        cms = context_swap_confusions(model, ds, len(seg.classes))
    except ValueError as e:
        raise SystemExit(f"error: {args.model}: {e}") from None
    result = {"model": str(args.model), "split": args.split, "images": len(ds), "readings": {}}
    for name, cm in cms.items():
        s = cm.compute()
        iou = s["IoU"].values() if isinstance(s["IoU"], dict) else s["IoU"]
        result["readings"][name] = {"mIoU": round(s["mIoU"], 2), "aAcc": round(s["aAcc"], 2),
                                    "IoU": {c: round(float(v), 2) for c, v in zip(seg.classes, iou)}}
        print(f"{name:<8} mIoU {s['mIoU']:6.2f}  aAcc {s['aAcc']:6.2f}")
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
