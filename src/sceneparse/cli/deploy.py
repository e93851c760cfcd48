"""``sceneparse export`` (ONNX), ``pack`` (deployment weights) and ``quantize`` (int8 OpenVINO IR)."""
from __future__ import annotations

import argparse
from pathlib import Path

from .common import MIN_SIZE, POSITIVE


def _export(args) -> int:
    from ..api import resolve_model
    from ..checkpoint import load_checkpoint, require_torch_weights
    from ..deploy.export import export_onnx, onnx_parity
    from ..models.factory import model_from_checkpoint
    from ..utils.io import check_output_file

    args.checkpoint = str(resolve_model(args.checkpoint))  # a packaged model's name works too
    check_output_file(args.out, [args.checkpoint], suffixes=(".onnx",), force=args.force)
    ckpt = load_checkpoint(args.checkpoint)
    require_torch_weights(ckpt, args.checkpoint, "export")
    model, ckpt = model_from_checkpoint(ckpt, output_stride=args.output_stride)
    path = export_onnx(model, args.out, tuple(args.size), input_format=args.input, outputs=args.outputs,
                       meta=ckpt.get("meta"), name=Path(args.checkpoint).stem, metrics=ckpt.get("metrics"))
    shape_in = "(N, H, W, 3) uint8 RGB" if args.input == "rgb8" else "(N, 3, H, W) float32 normalised"
    shape_out = {"logits": "out (N, K, H, W) float32", "labels": "labels (N, H, W) class ids",
                 "both": "out (N, K, H, W) float32 + labels (N, H, W) class ids"}[args.outputs]
    print(f"wrote {path} ({path.stat().st_size / 2**20:.1f} MiB): input {shape_in} -> {shape_out}; dynamic "
          "batch, height, width; class names and palette in its metadata")
    if args.check:
        h, w = args.size
        r = onnx_parity(path, model, [(h, w), (h * 3 // 4 + 5, w + 37)])
        diff = "" if r["max_abs_diff"] != r["max_abs_diff"] else (
            f"max |logit diff| {r['max_abs_diff']:.2e} (largest |logit| {r['ref_max_abs']:.3g}), ")
        print(f"onnxruntime vs PyTorch: {diff}class agreement {100 * r['argmax_agreement']:.3f}% "
              f"({', '.join(r['per_size'])})")
    return 0


def _pack(args) -> int:
    """Strip a checkpoint to deployment weights (no optimizer, no auxiliary head), optionally fp16."""
    from ..hub import pack_checkpoint
    from ..utils.io import check_output_file

    check_output_file(args.out, [args.checkpoint, args.metrics], flag="output", suffixes=(".pt", ".pth", ".safetensors"),
                      force=args.force)
    n = pack_checkpoint(args.checkpoint, args.out, fp16=args.fp16, metrics=args.metrics)
    print(f"wrote {args.out} ({Path(args.out).stat().st_size / 2**20:.1f} MiB, {n} tensors)")
    return 0


def add_export_parser(sub) -> None:
    x = sub.add_parser("export", help="ONNX export (dynamic batch, H, W), checked with onnxruntime")
    x.add_argument("--checkpoint", required=True)
    x.add_argument("--out", required=True, help="model.onnx path")
    x.add_argument("--force", action="store_true", help="replace --out if it exists (default: refuse)")
    x.add_argument("--size", type=MIN_SIZE, nargs=2, default=[512, 512], metavar=("H", "W"), help="tracing example size")
    x.add_argument("--output-stride", type=int, choices=(8, 16, 32))
    x.add_argument("--input", choices=("rgb8", "float"), default="rgb8",
                   help="rgb8: (N, H, W, 3) uint8 RGB in, normalised inside the graph (default); "
                        "float: (N, 3, H, W) normalised float32 (the model's own input)")
    x.add_argument("--outputs", choices=("labels", "logits", "both"), default="labels",
                   help="labels: (N, H, W) class ids (default); logits: (N, K, H, W) float32; both")
    x.add_argument("--check", action=argparse.BooleanOptionalAction, default=True,
                   help="compare with PyTorch under onnxruntime at two sizes (needs onnxruntime)")
    x.set_defaults(func=_export)


def _quantize(args) -> int:
    from ..api import resolve_model
    from ..deploy.quantize import run_quantize

    info = run_quantize(resolve_model(args.checkpoint), args.out, config=args.config, overrides=args.overrides, split=args.split,
                        num_images=args.num_images, seed=args.seed, progress=not args.no_progress, force=args.force)
    cal = info["calibration"]
    print(f"wrote {args.out} (+ .bin): int8 OpenVINO IR, calibrated on {cal['num_images']} {cal['dataset']} "
          f"{cal['split']} images (seed {cal['seed']}) in {info['seconds']:.0f} s; use it as --checkpoint in "
          "evaluate / predict / benchmark")
    return 0


def add_quantize_parser(sub) -> None:
    q = sub.add_parser("quantize", help="int8 post-training quantization (NNCF + OpenVINO, calibrated on training "
                                        "images) -> an OpenVINO IR every command takes as --checkpoint")
    q.add_argument("--checkpoint", required=True, help="checkpoint, packed file or packaged model name")
    q.add_argument("--out", required=True, help="OUT.xml (OUT.bin is written beside it)")
    q.add_argument("overrides", nargs="*", help="key=value overrides, e.g. data.root=/data/camvid")
    q.add_argument("--config", help="YAML to override the checkpoint's config (e.g. another data root)")
    q.add_argument("--split", help="calibration split (default: data.train_split)")
    q.add_argument("--num-images", type=POSITIVE, default=128, help="calibration images")
    q.add_argument("--seed", type=int, default=0, help="which calibration images")
    q.add_argument("--no-progress", action="store_true", help="no progress bars (logs and files only)")
    q.add_argument("--force", action="store_true", help="replace OUT.xml and OUT.bin if it exists (default: refuse)")
    q.set_defaults(func=_quantize)


def add_pack_parser(sub) -> None:
    k = sub.add_parser("pack", help="strip a checkpoint to deployment weights")
    k.add_argument("checkpoint")
    k.add_argument("out", help="OUT.pt (torch, loaded weights-only) or OUT.safetensors (tensors + JSON metadata, "
                               "no pickle; every command reads it as --checkpoint)")
    k.add_argument("--fp16", action="store_true")
    k.add_argument("--force", action="store_true", help="replace OUT if it exists (default: refuse)")
    k.add_argument("--metrics", help="metrics JSON to embed")
    k.set_defaults(func=_pack)
