"""Does a trained GRN stage help or hurt its front, and how? On the first N images of a split (the eval
transform, whole 360x480 images): CE and mIoU of the front and of the refined output, with the model in
eval mode and in train mode (a BatchNorm train/eval gap would show as a difference), per-class IoU, and the
GRN residual's per-class mean and spatial spread against the front logits' spread (a residual whose mean
dominates its spread is a class prior, not a correction), and how much the first residual depends on the
front's confidences (replaced by uniform ones) next to the input convolution's weight scale per input.

Usage: python scripts/grn_check.py RUN/final.pt [SPLIT=train] [N=16]
"""
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

from sceneparse.config import load_config
from sceneparse.data import build_dataset, build_eval_transform
from sceneparse.models.factory import model_from_checkpoint
from sceneparse.models.refine.networks import unnormalize

REPO = Path(__file__).resolve().parents[1]


def confusion(pred: torch.Tensor, y: torch.Tensor, k: int) -> torch.Tensor:
    m = y != 255
    return torch.bincount(y[m] * k + pred[m], minlength=k * k).view(k, k)


def ious(c: torch.Tensor) -> torch.Tensor:
    return 100 * c.diag() / (c.sum(0) + c.sum(1) - c.diag()).clamp(min=1)


def miou(c: torch.Tensor) -> float:
    """Mean over the classes present in the labels (as the first numbers of the GRN check were computed)."""
    return ious(c)[c.sum(1) > 0].mean().item()


def main(ckpt: str, split: str = "train", n: int = 16) -> None:
    model, _ = model_from_checkpoint(ckpt)
    d = load_config(REPO / "configs/camvid/pspnet_effl0.yaml", [f"data.root={REPO.parent / 'shared/data/camvid'}"]).data
    ds = build_dataset(d.dataset, d.root, split, build_eval_transform(d.mean, d.std))
    k = len(ds.CLASSES)
    batches = [range(i, min(n, i + 4)) for i in range(0, n, 4)]
    for mode in ("eval", "train"):
        model.train(mode == "train")  # the front stays in eval mode either way
        cf, cr, ce_f, ce_r = 0, 0, 0.0, 0.0
        for b in batches:
            x = torch.stack([ds[j]["image"] for j in b])
            y = torch.stack([ds[j]["label"] for j in b]).long()
            with torch.no_grad():
                front, _ = model._front_logits(x)
                out = model(x)["out"].float()
            ce_f += F.cross_entropy(front, y, ignore_index=255).item() / len(batches)
            ce_r += F.cross_entropy(out, y, ignore_index=255).item() / len(batches)
            cf, cr = cf + confusion(front.argmax(1), y, k), cr + confusion(out.argmax(1), y, k)
        print(f"{split} ({n} images), model in {mode} mode: front CE {ce_f:.3f} mIoU {miou(cf):.2f} | "
              f"refined CE {ce_r:.3f} mIoU {miou(cr):.2f}")
    print("class          ", " ".join(f"{c[:6]:>6}" for c in ds.CLASSES))
    print("front IoU      ", " ".join(f"{v:6.1f}" for v in ious(cf).tolist()))
    print("refined IoU    ", " ".join(f"{v:6.1f}" for v in ious(cr).tolist()))
    model.eval()
    with torch.no_grad():
        x = torch.stack([ds[j]["image"] for j in batches[0]])
        front, _ = model._front_logits(x)
        g = model.grn(unnormalize(x, model.mean, model.std), front)
    rows = {"last residual mean": g["residual"].mean((0, 2, 3)), "its spatial std": g["residual"].std((0, 2, 3)),
            "front logit std": front.std((0, 2, 3)), "sum of residuals": (g["out"] - front).mean((0, 2, 3))}
    for name, v in rows.items():
        print(f"{name:<15}", " ".join(f"{a:6.2f}" for a in v.tolist()))
    # does the GRN read its front? its first residual from the front's confidences against from uniform ones
    img = unnormalize(x, model.mean, model.std)
    with torch.no_grad():
        r_front, r_uniform = model.grn.step(img, front), model.grn.step(img, torch.zeros_like(front))
    change = (r_front - r_uniform).norm() / r_front.norm().clamp(min=1e-12)
    stem = next(w for w in model.grn.net.parameters() if w.dim() == 4 and w.shape[1] == 3 + k)
    print(f"first residual changed by {100 * change.item():.1f}% when the front's confidences are replaced by "
          f"uniform ones; input-conv weight rms: RGB {stem[:, :3].pow(2).mean().sqrt().item():.4f}, "
          f"confidences {stem[:, 3:].pow(2).mean().sqrt().item():.4f}")


if __name__ == "__main__":
    torch.set_num_threads(2)
    main(sys.argv[1], *(sys.argv[2:3]), *(int(a) for a in sys.argv[3:4]))
