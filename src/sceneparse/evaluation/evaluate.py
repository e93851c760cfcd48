"""Evaluation over a whole split: confusion matrix -> IoU, mIoU, aAcc, mAcc."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from ..inference.engine import InferenceConfig, predict_labels
from .metrics import BoundaryFScore, ConfusionMatrix, category_iou


def evaluate_model(model: torch.nn.Module, dataset: Dataset, device: torch.device | str = "cpu",
                   num_workers: int = 0, progress: bool = True, infer: InferenceConfig | None = None,
                   boundary_tolerance: int | None = 3) -> dict:
    """Inference on every pair of ``dataset`` (batch 1, original size); whole-image by default,
    sliding window / multi-scale / flip per ``infer``. With ``boundary_tolerance`` (pixels) the
    boundary F-score is added under ``"boundary"``.

    Returns the dict of ``scores_from_confusion`` (percent) plus ``"num_images"``.
    """
    was_training = model.training
    model.eval()
    cm = ConfusionMatrix(dataset.num_classes)
    bf = BoundaryFScore(boundary_tolerance) if boundary_tolerance is not None else None
    loader = DataLoader(dataset, batch_size=1, shuffle=False, num_workers=num_workers,
                        generator=torch.Generator())  # leaves the global RNG untouched
    for batch in tqdm(loader, desc="evaluate", disable=not progress, leave=False):
        pred = predict_labels(model, batch["image"].to(device), infer)
        cm.update(pred.cpu(), batch["label"])
        if bf is not None:
            bf.update(pred.cpu(), batch["label"])
    model.train(was_training)
    scores = cm.compute(dataset.CLASSES)
    scores["num_images"] = len(dataset)
    scores["confusion_matrix"] = cm.mat.tolist()
    extra = getattr(dataset, "extra_scores", None)  # a benchmark's own score (ADE20K's challenge score)
    if extra is not None:
        scores.update(extra(scores, cm.mat))
    if getattr(dataset, "CATEGORIES", None):  # groups of classes scored together (Cityscapes' categories)
        scores.update(category_iou(cm.mat, dataset.CATEGORIES))
    if bf is not None:
        scores["boundary"] = bf.compute()
    return scores


@dataclass
class SplitJob:
    """A checkpoint and the split it is scored on (``prepare_split``)."""
    checkpoint: Path
    ckpt: dict
    cfg: object  # the resolved config (checkpoint's, with the command's file and overrides on top)
    split: str
    dataset: Dataset
    out: Path


def prepare_split(checkpoint: str | Path, config: str | Path | None, overrides, split: str | None,
                  out: str | Path | None, kind: str, default_dir: str | Path | None = None) -> SplitJob:
    """Load ``checkpoint`` and its config (``config`` file and ``overrides`` on top), build the split
    (``data.val_split`` by default), and check before any model is built that the classes match and
    the report (default ``<kind>_<split>.json`` beside the checkpoint; with ``default_dir``, e.g. for a packaged
    model given by name, ``default_dir/<checkpoint stem>_<kind>_<split>.json``) can be written.

    Raises:
        ValueError: class mismatch, unwritable output; ``CheckpointError`` / ``DataError`` / ``ConfigError``
            (also for a ``model.*`` override: the checkpoint's model is used as trained).
    """
    from ..checkpoint import check_classes, load_checkpoint
    from ..config import ConfigError, load_config
    from ..data import build_dataset, build_eval_transform
    from ..utils.io import check_output_file

    keys = [o.split("=", 1)[0] for o in overrides or ()]
    model_keys = [k for k in keys if k.lstrip("+~").startswith("model.")]
    if model_keys:  # the model is rebuilt from the checkpoint's own config: such an override would not apply
        hint = " (use --output-stride for the output stride)" if kind == "metrics" else ""
        raise ConfigError(f"{', '.join(model_keys)}: the model is the one {checkpoint} was trained with; model.* "
                          f"overrides do not apply here{hint}")
    ckpt = load_checkpoint(checkpoint)
    cfg = load_config(config, overrides, base=ckpt["config"])
    d = cfg.data
    split = split or d.val_split
    ds = build_dataset(d.dataset, d.root, split, build_eval_transform(d.mean, d.std))
    if d.max_val_samples:
        ds.pairs = ds.pairs[: d.max_val_samples]
    check_classes(ckpt, ds, source=str(checkpoint))
    if out:
        out_path = Path(out)
    elif default_dir is not None:
        out_path = Path(default_dir) / f"{Path(checkpoint).stem}_{kind}_{split}.json"
    else:
        out_path = Path(checkpoint).with_name(f"{kind}_{split}.json")
    check_output_file(out_path, [checkpoint, config], flag="--out" if out else f"{kind} file (set --out)",
                      suffixes=(".json",))
    return SplitJob(Path(checkpoint), ckpt, cfg, split, ds, out_path)


def run_evaluate(job: SplitJob, device: str = "auto", output_stride: int | None = None,
                 infer_overrides: dict | None = None, fold_bn: bool = False, bf16: bool = False,
                 boundary_tolerance: int | None = 3, progress: bool = True, backend: str = "torch",
                 compile: bool = False) -> dict:
    """``sceneparse evaluate``: the scores of ``job`` (see :func:`evaluate_model`) plus what was run
    (checkpoint, split, output stride, inference settings, backend). Inference follows the config's ``eval``
    section, ``infer_overrides`` winning; ``bf16`` implies BN folding; ``backend`` is one of
    :data:`~sceneparse.deploy.backends.BACKENDS` (an OpenVINO IR checkpoint always runs on OpenVINO)."""
    from ..config import to_dict
    from ..inference.pipeline import prepare
    from ..utils.device import resolve_device

    dev = resolve_device(device)
    model, _ = prepare(job.ckpt, backend=backend, bf16=bf16, fold_bn=fold_bn, compile=compile,
                       output_stride=output_stride, device=dev)
    infer = InferenceConfig.for_config(to_dict(job.cfg), **(infer_overrides or {}))
    scores = evaluate_model(model, job.dataset, dev, num_workers=job.cfg.data.num_workers, progress=progress,
                            infer=infer, boundary_tolerance=boundary_tolerance)
    scores.update(checkpoint=str(job.checkpoint), split=job.split, output_stride=model.output_stride,
                  inference={"mode": infer.mode, "crop_size": infer.crop_size, "stride": infer.stride,
                             "scales": list(infer.scales), "flip": infer.flip, "crf": infer.crf is not None,
                             "bf16": bf16, "fold_bn": fold_bn or bf16, "compile": compile,
                             "backend": getattr(model, "backend", "torch"),
                             "int8": "quantization" in job.ckpt})
    return scores
