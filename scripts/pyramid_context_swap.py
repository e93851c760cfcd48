"""Does a trained Specialize-and-Fuse model use its coarse-to-fine context (Sec. 4.2, CA / CU modules)?

Scores the fused output (Eq. 2) on one split twice: as trained, and with the context every CA module reads
(theta_{l-1}, Eq. 4) taken from a donor image, the image's own features unchanged. The donor of image i is image
(i + n/2) mod n, half the split away: CamVid's val images are consecutive frames of one sequence, and a
neighbouring frame would hand over nearly the same context. The context is recorded in a pass over the donor
alone, then injected in a pass over the image: hooking the context updates in one pass would leak the image's own
context back into the finer levels (each CU pools features that already read the context). A model whose CA
modules read image-specific context changes its labels under the swap; one whose attention ignores the context
does not. Reports mIoU both ways, the share of pixels whose label changes, and the attention's entropy per level.

Usage: python scripts/pyramid_context_swap.py CHECKPOINT [--split val] [--out FILE.json]
(whole images, single scale, fp32)
"""
from __future__ import annotations

import argparse
import contextlib
import json
from pathlib import Path

import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]


def _context_modules(model):
    head = getattr(model, "semantic_head", None)
    if head is None or not getattr(head, "context", False):
        raise ValueError("the model has no context modules (a pyramid_output model with context: true is needed)")
    return list(head.ca)


@torch.inference_mode()
def record_context(model, x: torch.Tensor) -> list[torch.Tensor]:
    """The context tokens ``theta_{l-1}`` ``(N, C, T)`` each CA module reads when ``model`` runs ``x``
    (``forward_pyramid``), coarse to fine.

    Raises:
        ValueError: the model has no context modules.
    """
    seen: list[torch.Tensor] = []
    hooks = [ca.register_forward_pre_hook(lambda _m, args: seen.append(args[1].clone()))
             for ca in _context_modules(model)]
    try:
        model.forward_pyramid(x)
    finally:
        for h in hooks:
            h.remove()
    return seen


@torch.inference_mode()
def attention_entropy(model, x: torch.Tensor) -> list[float]:
    """Mean entropy (nats) of each CA module's attention over its context tokens (Eq. 8) when ``model`` runs ``x``,
    coarse to fine; uniform attention over T tokens gives log T (4.70 for the 110 tokens of bins 1-3-6-8)."""
    ents: list[float] = []

    def hook(mod, args, _out):
        feat, theta = args
        logits = (mod.query(feat).flatten(2).transpose(1, 2).float() @ mod.key(theta).float()) * mod.scale
        attn = logits.softmax(-1)
        ents.append(float(-(attn.clamp_min(1e-12).log() * attn).sum(-1).mean()))

    hooks = [ca.register_forward_hook(hook) for ca in _context_modules(model)]
    try:
        model.forward_pyramid(x)
    finally:
        for h in hooks:
            h.remove()
    return ents


@contextlib.contextmanager
def injected_context(model, thetas: list[torch.Tensor]):
    """Within the block, CA module l reads ``thetas[l]`` (e.g. from :func:`record_context` of another image)
    in place of the context its own pass computed; everything else runs as usual.

    Raises:
        ValueError: the model has no context modules, or ``thetas`` has another length.
    """
    cas = _context_modules(model)
    if len(thetas) != len(cas):
        raise ValueError(f"{len(cas)} context modules need {len(cas)} context tensors, got {len(thetas)}")
    hooks = [ca.register_forward_pre_hook(lambda _m, args, t=t: (args[0], t)) for ca, t in zip(cas, thetas)]
    try:
        yield model
    finally:
        for h in hooks:
            h.remove()


@torch.inference_mode()
def context_swap_confusions(model, dataset, num_classes: int) -> dict:
    """Over ``dataset`` (items ``{"image": (3, H, W) float, "label": (H, W) int64}``): ``{"own": ConfusionMatrix,
    "swapped": ConfusionMatrix, "changed_pixels": int, "pixels": int}`` of the fused labels, image i read with its
    own context and with the context of image (i + n/2) mod n (its features at the image's size)."""
    from sceneparse.evaluation.metrics import ConfusionMatrix

    cms = {"own": ConfusionMatrix(num_classes), "swapped": ConfusionMatrix(num_classes)}
    changed = total = 0
    entropy: list[list[float]] = []
    n = len(dataset)

    def labels(x, size):
        out = model.forward_pyramid(x)["out"].float()
        return F.interpolate(out, size=size, mode="bilinear", align_corners=False).argmax(1)

    for i in range(n):
        item, donor = dataset[i], dataset[(i + n // 2) % n]
        target = item["label"][None]
        own = labels(item["image"][None], target.shape[-2:])
        donor_image = F.interpolate(donor["image"][None], size=item["image"].shape[-2:], mode="bilinear",
                                    align_corners=False)
        with injected_context(model, record_context(model, donor_image)):
            swapped = labels(item["image"][None], target.shape[-2:])
        entropy.append(attention_entropy(model, item["image"][None]))
        cms["own"].update(own, target)
        cms["swapped"].update(swapped, target)
        changed += int((own != swapped).sum())
        total += own.numel()
    return {**cms, "changed_pixels": changed, "pixels": total,
            "attention_entropy": [sum(e[lvl] for e in entropy) / max(len(entropy), 1) for lvl in range(len(entropy[0]))]
            if entropy else []}


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
        res = context_swap_confusions(model, ds, len(seg.classes))
    except ValueError as e:
        raise SystemExit(f"error: {args.model}: {e}") from None
    result = {"model": Path(args.model).parent.name + "/" + Path(args.model).name, "split": args.split,
              "images": len(ds), "donor": "image (i + n/2) mod n",
              "changed_pixels_percent": round(100 * res["changed_pixels"] / max(res["pixels"], 1), 3),
              "attention_entropy_per_level": [round(e, 3) for e in res["attention_entropy"]], "readings": {}}
    for name in ("own", "swapped"):
        s = res[name].compute()
        iou = s["IoU"].values() if isinstance(s["IoU"], dict) else s["IoU"]
        result["readings"][name] = {"mIoU": round(s["mIoU"], 2), "aAcc": round(s["aAcc"], 2),
                                    "IoU": {c: round(float(v), 2) for c, v in zip(seg.classes, iou)}}
        print(f"{name:<8} mIoU {s['mIoU']:6.2f}  aAcc {s['aAcc']:6.2f}")
    print(f"labels changed by the swap: {result['changed_pixels_percent']:.3f}% of the pixels; attention entropy per "
          f"level (uniform 4.70): {result['attention_entropy_per_level']}")
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
