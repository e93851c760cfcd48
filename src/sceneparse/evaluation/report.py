"""Evaluation reports: Markdown per-class table, confusion-matrix plot, per-class IoU bar chart."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np


def markdown_table(scores: dict, title: str = "") -> str:
    """Per-class IoU / Acc as a Markdown table, then the summary scores."""
    lines = [f"### {title}", ""] if title else []
    lines += ["| class | IoU (%) | Acc (%) |", "|---|---:|---:|"]
    fmt = lambda v: "-" if v is None else f"{v:.2f}"  # noqa: E731
    lines += [f"| {n} | {fmt(scores['IoU'][n])} | {fmt(scores['Acc'][n])} |" for n in scores["IoU"]]
    summary = [f"mIoU {scores['mIoU']:.2f}", f"aAcc {scores['aAcc']:.2f}", f"mAcc {scores['mAcc']:.2f}"]
    for key in ("score", "mIoU_category"):
        if key in scores:
            summary.append(f"{key} {scores[key]:.2f}")
    if "boundary" in scores:
        summary.append(f"boundary F ({scores['boundary']['tolerance_px']} px) {scores['boundary']['F']:.2f}")
    return "\n".join(lines + ["", ", ".join(summary), ""])


def plot_confusion(conf: np.ndarray, names: list[str], out_png: str | Path) -> None:
    """Row-normalised confusion matrix (rows: ground truth) as a colour image."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    conf = np.asarray(conf, dtype=np.float64)
    norm = conf / np.maximum(conf.sum(1, keepdims=True), 1)
    k = len(names)
    size = max(5.0, 0.35 * k + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    im = ax.imshow(norm, cmap="viridis", vmin=0, vmax=1)
    if k <= 40:
        ax.set_xticks(range(k), names, rotation=90, fontsize=8)
        ax.set_yticks(range(k), names, fontsize=8)
        for i in range(k):
            for j in range(k):
                if norm[i, j] >= 0.01:
                    ax.text(j, i, f"{norm[i, j]:.2f}", ha="center", va="center", fontsize=6,
                            color="black" if norm[i, j] > 0.5 else "white")
    ax.set(xlabel="predicted", ylabel="ground truth", title="confusion matrix (rows sum to 1)")
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    fig.savefig(out_png, dpi=110)
    plt.close(fig)


def plot_iou_bars(scores: dict, out_png: str | Path, palette: list | None = None) -> None:
    """Per-class IoU bars (class colours when a palette is given), mIoU as a dashed line."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(scores["IoU"])
    vals = [v if v is not None else 0.0 for v in scores["IoU"].values()]
    colours = [tuple(c / 255 for c in palette[i]) for i in range(len(names))] if palette else None
    fig, ax = plt.subplots(figsize=(max(6, 0.4 * len(names) + 2), 4))
    ax.bar(range(len(names)), vals, color=colours, edgecolor="black", linewidth=0.5)
    ax.axhline(scores["mIoU"], ls="--", color="gray", label=f"mIoU {scores['mIoU']:.1f}")
    ax.set_xticks(range(len(names)), names, rotation=90 if len(names) > 12 else 45, ha="right", fontsize=8)
    ax.set(ylabel="IoU (%)", ylim=(0, 100), title="per-class IoU")
    ax.legend()
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(out_png, dpi=110)
    plt.close(fig)


def summary_text(scores: dict) -> str:
    """The console report: per-class table, summary line, protocol scores and boundary F-score."""
    from .metrics import format_table

    lines = [format_table(scores)]
    lines += [f"{key} {scores[key]:.2f}" for key in ("score", "mIoU_category") if key in scores]
    if "boundary" in scores:
        b = scores["boundary"]
        num = lambda v: "n/a" if v is None or not math.isfinite(v) else f"{v:.2f}"  # noqa: E731  (JSON: null)
        p = num(b["precision"]) + (" (no boundary predicted)" if num(b["precision"]) == "n/a" else "")
        lines.append(f"boundary F-score ({b['tolerance_px']} px): F {num(b['F'])}  P {p}  R {num(b['recall'])}")
    return "\n".join(lines)


def json_safe(obj):
    """``obj`` with every NaN / inf float replaced by ``None``, so that ``json.dumps(..., allow_nan=False)``
    writes valid JSON (``null``: a score that is undefined, e.g. the IoU of a class absent from the split)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


def labelled_pixels(scores: dict) -> int:
    """How many labelled (not ``ignore_index``) pixels the scores were computed on."""
    return int(sum(sum(row) for row in scores.get("confusion_matrix", [])))


def write_evaluation(scores: dict, out_json: str | Path, title: str, palette) -> None:
    """``out_json`` (all scores; undefined ones as ``null``), and beside it ``.md`` (per-class table),
    ``_confusion.png``, ``_iou.png``."""
    out_json = Path(out_json)
    out_json.write_text(json.dumps(json_safe(scores), indent=2, allow_nan=False))
    stem = out_json.with_suffix("")
    stem.with_suffix(".md").write_text(markdown_table(scores, title))
    plot_confusion(scores["confusion_matrix"], list(scores["IoU"]), f"{stem}_confusion.png")
    plot_iou_bars(scores, f"{stem}_iou.png", palette)
