"""``sceneparse evaluate`` (scores of a checkpoint on a split) and ``sceneparse analyze`` (the pyramidal
output's levels)."""
from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

from .common import NON_NEGATIVE, add_run_flags, compile_arg, inference_overrides

log = logging.getLogger(__name__)


def _resolve(checkpoint: str) -> tuple[str, Path | None]:
    """The checkpoint file of ``checkpoint`` (a path, or a packaged model's name) and where its report goes by
    default: beside a file the user named, but into the current folder for a packaged model (never into the
    package's own folder)."""
    from ..api import resolve_model

    path = resolve_model(checkpoint)
    return str(path), (None if Path(checkpoint).is_file() else Path.cwd())


def _evaluate(args) -> int:
    from ..constants import IGNORE_INDEX
    from ..evaluation.evaluate import prepare_split, run_evaluate
    from ..evaluation.report import labelled_pixels, summary_text, write_evaluation

    args.checkpoint, default_dir = _resolve(args.checkpoint)
    job = prepare_split(args.checkpoint, args.config, args.overrides, args.split, args.out, "metrics", default_dir)
    scores = run_evaluate(job, device=args.device, output_stride=args.output_stride,
                          infer_overrides=inference_overrides(args), fold_bn=args.fold_bn, bf16=args.bf16,
                          boundary_tolerance=args.boundary_tolerance, progress=not args.no_progress,
                          backend=args.backend, compile=compile_arg(args))
    d = job.cfg.data
    print(f"{d.dataset} {job.split}: {len(job.dataset)} images, output_stride {scores['output_stride']}")
    print(summary_text(scores))
    write_evaluation(scores, job.out, f"{d.dataset} {job.split}, {Path(args.checkpoint).name}, "
                                      f"output_stride {scores['output_stride']}", job.dataset.PALETTE)
    print(f"metrics written to {job.out} (+ .md, _confusion.png, _iou.png)")
    if labelled_pixels(scores) == 0:
        print(f"error: no labelled pixel in the {len(job.dataset)} images of {d.dataset} {job.split} (every label is "
              f"ignore_index {IGNORE_INDEX}): mIoU, aAcc and mAcc are undefined (null in {job.out})", file=sys.stderr)
        return 2
    return 0


def _analyze(args) -> int:
    from ..evaluation.analyze import analyze_pyramid, format_analysis
    from ..evaluation.evaluate import prepare_split
    from ..inference.pipeline import load_model
    from ..utils.device import resolve_device

    args.checkpoint, default_dir = _resolve(args.checkpoint)
    job = prepare_split(args.checkpoint, None, args.overrides, args.split, args.out, "analysis", default_dir)
    ckpt, ds, out = job.ckpt, job.dataset, job.out
    device = resolve_device(args.device)
    model, _ = load_model(ckpt, device=device)
    result = analyze_pyramid(model, ds, device, progress=not args.no_progress)
    print(format_analysis(result))
    out.write_text(json.dumps(result, indent=2))
    try:
        from ..evaluation.analyze import plot_analysis

        plot_analysis(result, str(out.with_suffix(".png")))
    except Exception as e:  # a figure must never lose the numbers
        log.warning("could not plot the analysis: %s", e)
    print(f"analysis written to {out} (heatmap {out.with_suffix('.png')})")
    return 0


def add_evaluate_parser(sub) -> None:
    e = sub.add_parser("evaluate", help="mIoU / aAcc / mAcc of a checkpoint on a split")
    e.add_argument("--checkpoint", required=True)
    e.add_argument("--config", help="YAML to override the checkpoint's config (e.g. another data root)")
    e.add_argument("overrides", nargs="*", help="key=value overrides, e.g. data.root=/data/camvid")
    e.add_argument("--split", help="split name (default: data.val_split)")
    e.add_argument("--out", help="metrics JSON path (default: metrics_SPLIT.json beside a checkpoint file; "
                                 "MODEL_metrics_SPLIT.json in the current folder for a packaged model's name)")
    e.add_argument("--boundary-tolerance", type=NON_NEGATIVE, default=3, help="pixels, for the boundary F-score")
    e.add_argument("--fold-bn", action="store_true", help="fold BatchNorm into convolutions (inference speed)")
    e.add_argument("--bf16", action="store_true", help="the bf16 fast path (BN folded, bf16 weights and inputs)")
    e.add_argument("--compile", action="store_true", help="torch.compile with Inductor freezing (torch backend)")
    add_run_flags(e, _evaluate)


def add_analyze_parser(sub) -> None:
    a = sub.add_parser("analyze", help="pyramidal output: mIoU per (assigned, predicting) level, pixel shares")
    a.add_argument("--checkpoint", required=True, help="checkpoint, packed file or packaged model name")
    a.add_argument("overrides", nargs="*")
    a.add_argument("--split")
    a.add_argument("--out", help="analysis JSON path (default: as evaluate's, analysis_SPLIT.json)")
    a.add_argument("--device", default="auto")
    a.add_argument("--no-progress", action="store_true", help="no progress bars (logs and files only)")
    a.set_defaults(func=_analyze)
