"""``sceneparse predict``: label PNGs and overlays for images, folders and videos."""
from __future__ import annotations

import sys

from ..constants import DEFAULT_MODEL
from .common import DEFAULT_WEIGHTS, NON_NEGATIVE, POSITIVE, add_run_flags, compile_arg, inference_overrides


def _predict(args) -> int:
    from ..api import resolve_model
    from ..inference.predict import run_predict
    from ..inference.video import VIDEO_SUFFIXES

    if not args.checkpoint and not DEFAULT_WEIGHTS.is_file():
        raise FileNotFoundError(f"no model weights at {DEFAULT_WEIGHTS}. Train one (sceneparse train "
                                "configs/camvid/pspnet_effl0.yaml), then pass --checkpoint RUN/final.pt")
    checkpoint = resolve_model(args.checkpoint)
    paths, written, failed = run_predict(checkpoint, args.inputs, args.out, device=args.device,
                                         output_stride=args.output_stride, infer_overrides=inference_overrides(args),
                                         max_whole_pixels=args.max_whole_pixels,
                                         max_image_pixels=args.max_image_pixels, progress=not args.no_progress,
                                         legend=not args.no_legend, confidence=args.confidence,
                                         recursive=args.recursive, fold_bn=args.fold_bn, bf16=args.bf16,
                                         compile=compile_arg(args), backend=args.backend)
    videos = [p for p in written if p.suffix == ".mp4"]
    pngs = [p for p in written if p.suffix == ".png"]
    labels = pngs[::2] if args.confidence else pngs  # each label map is followed by its confidence map
    images = [p for p in paths if p.suffix.lower() not in VIDEO_SUFFIXES]
    others = len(written) - len(labels) - len(videos)
    if images:
        print(f"parsed {len(labels)} of {len(images)} image(s): wrote {len(written) - len(videos)} file(s) to "
              f"{args.out} ({len(labels)} label maps, {others} overlays{' and confidence maps' if args.confidence else ''}"
              + ("; inputs -> outputs in predictions.json)" if labels else ")"))
    for v in videos:
        print(f"wrote overlay video {v}")
    for path, msg in failed.items():  # the one report of each failure (run_predict returns them, logs none)
        print(f"FAILED {path}: {msg}", file=sys.stderr)
    return 1 if failed else 0


def add_predict_parser(sub) -> None:
    r = sub.add_parser("predict", help="parse images: palette label PNG + colour overlay per image")
    r.add_argument("inputs", nargs="+", help="image files and/or directories")
    r.add_argument("--out", required=True, help="output directory")
    r.add_argument("--checkpoint", help=f"model checkpoint or packaged model name (`sceneparse models`; "
                                        f"default: the packaged CamVid model {DEFAULT_MODEL})")
    r.add_argument("--no-legend", action="store_true", help="overlays without the legend box (classes, colours, shares)")
    r.add_argument("--confidence", action="store_true",
                   help="also <name>_conf.png: the winning class's probability per pixel (8-bit grey, 255 = 1.0)")
    r.add_argument("-r", "--recursive", action="store_true",
                   help="every image under the input folders, outputs mirroring the folder tree under --out")
    r.add_argument("--fold-bn", action="store_true", help="fold BatchNorm into convolutions (inference speed)")
    r.add_argument("--bf16", action="store_true", help="the bf16 fast path (BN folded, bf16 weights and inputs)")
    r.add_argument("--compile", action="store_true", help="torch.compile with Inductor freezing (first image 5-10 s slower)")
    r.add_argument("--max-whole-pixels", type=POSITIVE, default=2048 * 2048,
                   help="larger images use a 1024x1024 sliding window automatically")
    r.add_argument("--max-image-pixels", type=NON_NEGATIVE,
                   help="images declaring more pixels are refused before decoding (decompression bombs); "
                        "default 100000000; 0: only PIL's own check (~179 MP)")
    add_run_flags(r, _predict)
