"""Command line: ``sceneparse train | evaluate | predict | pack``."""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from .constants import BACKENDS, DEFAULT_MODEL, PACKAGED_WEIGHTS_DIR

log = logging.getLogger(__name__)

DEFAULT_WEIGHTS = PACKAGED_WEIGHTS_DIR / f"{DEFAULT_MODEL}.pt"


def _int_at_least(minimum: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {value}")
        return value
    parse.__name__ = f"integer >= {minimum}"
    return parse


def _positive_float(text: str) -> float:
    import math

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected a finite number > 0, got {text}")
    return value


POSITIVE, NON_NEGATIVE, MIN_SIZE = _int_at_least(1), _int_at_least(0), _int_at_least(32)


def _one_line(e: BaseException) -> str:
    """The message of ``e`` without the traceback text a DataLoader worker wraps around it."""
    text = str(e)
    if text.startswith("Caught ") and "Original Traceback" in text:
        lines = text.rstrip().splitlines()
        for i in range(len(lines) - 1, -1, -1):
            head, sep, rest = lines[i].partition(": ")
            if sep and head.rsplit(".", 1)[-1] == type(e).__name__:
                return "\n".join([rest] + lines[i + 1:])
    return text


def _inference_overrides(args) -> dict:
    """The inference flags given on the command line (they override the config's ``eval`` section)."""
    flags = {k: getattr(args, k) for k in ("mode", "crop_size", "stride", "scales", "flip", "window_batch")
             if getattr(args, k, None) is not None}
    if "scales" in flags:
        flags["scales"] = tuple(flags["scales"])
    if getattr(args, "crf", False):
        from .engine.crf import DenseCRF
        flags["crf"] = DenseCRF(iterations=args.crf_iterations, **_crf_params(getattr(args, "crf_param", None) or []))
    return flags


def _crf_params(items: list[str]) -> dict:
    """``["bilateral_compat=5", ...]`` -> ``{"bilateral_compat": 5.0}``; unknown keys raise ``ValueError``."""
    import dataclasses

    from .engine.crf import DenseCRF

    known = {f.name for f in dataclasses.fields(DenseCRF)} - {"iterations"}
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or key not in known:
            raise ValueError(f"--crf-param {item!r}: expected KEY=VALUE with KEY one of {sorted(known)}")
        try:
            out[key] = _positive_float(value)
        except argparse.ArgumentTypeError as e:
            raise ValueError(f"--crf-param {item!r}: {e}") from None
    return out


def _add_inference_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("inference (default: the config's eval: section; whole image, single scale unless set)")
    g.add_argument("--mode", choices=("whole", "slide"), help="default: the config's eval.mode (whole)")
    g.add_argument("--crop-size", type=POSITIVE, nargs=2, metavar=("H", "W"), help="sliding-window crop")
    g.add_argument("--stride", type=POSITIVE, nargs=2, metavar=("H", "W"), help="sliding-window stride (default 2/3 crop)")
    g.add_argument("--scales", type=_positive_float, nargs="+", help="multi-scale TTA, e.g. 0.5 0.75 1 1.25 1.5 1.75")
    g.add_argument("--flip", action="store_true", default=None, help="left-right flip TTA")
    g.add_argument("--window-batch", type=POSITIVE, help="windows per forward pass (default 4)")
    g.add_argument("--crf", action="store_true", help="dense CRF post-processing (needs pydensecrf2)")
    g.add_argument("--crf-iterations", type=NON_NEGATIVE, default=5, help="mean-field steps of --crf")
    g.add_argument("--crf-param", action="append", metavar="KEY=VALUE",
                   help="a DenseCRF kernel parameter, e.g. bilateral_compat=5 (repeatable; scripts/crf_grid.py picks them)")


def _train(args) -> int:
    from .config import load_config
    from .engine.trainer import train

    cfg = load_config(args.config, args.overrides)
    if args.work_dir:
        from omegaconf import OmegaConf
        cfg = OmegaConf.merge(cfg, {"work_dir": args.work_dir})
    scores = train(cfg, resume=args.resume, progress=not args.no_progress,
                   allow_config_change=tuple(args.allow_config_change or ()), restart=args.restart)
    if scores:
        print(f"final val mIoU {scores['mIoU']:.2f}  aAcc {scores['aAcc']:.2f}  mAcc {scores['mAcc']:.2f}")
    print(f"run written to {cfg.work_dir}")
    return 0


def _evaluate(args) -> int:
    from .engine.evaluate import prepare_split, run_evaluate
    from .constants import IGNORE_INDEX
    from .report import labelled_pixels, summary_text, write_evaluation

    from .api import resolve_model

    args.checkpoint = str(resolve_model(args.checkpoint))  # a packaged model's name works too
    job = prepare_split(args.checkpoint, args.config, args.overrides, args.split, args.out, "metrics")
    scores = run_evaluate(job, device=args.device, output_stride=args.output_stride,
                          infer_overrides=_inference_overrides(args), fold_bn=args.fold_bn, bf16=args.bf16,
                          boundary_tolerance=args.boundary_tolerance, progress=not args.no_progress,
                          backend=args.backend, compile=_compile_arg(args))
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


def _predict(args) -> int:
    from .engine.predict import run_predict

    from .api import resolve_model
    from .engine.video import VIDEO_SUFFIXES

    if not args.checkpoint and not DEFAULT_WEIGHTS.is_file():
        raise FileNotFoundError(f"no model weights at {DEFAULT_WEIGHTS}. Train one (sceneparse train "
                                "configs/camvid/pspnet_effl0.yaml), then pass --checkpoint RUN/final.pt")
    checkpoint = resolve_model(args.checkpoint)
    paths, written, failed = run_predict(checkpoint, args.inputs, args.out, device=args.device,
                                         output_stride=args.output_stride, infer_overrides=_inference_overrides(args),
                                         max_whole_pixels=args.max_whole_pixels,
                                         max_image_pixels=args.max_image_pixels, progress=not args.no_progress,
                                         legend=not args.no_legend, confidence=args.confidence,
                                         recursive=args.recursive, fold_bn=args.fold_bn, bf16=args.bf16,
                                         compile=_compile_arg(args), backend=args.backend)
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


def _analyze(args) -> int:
    from .engine.analyze import analyze_pyramid, format_analysis
    from .engine.evaluate import prepare_split
    from .engine.checkpoint import model_from_checkpoint
    from .engine.distributed import resolve_device

    job = prepare_split(args.checkpoint, None, args.overrides, args.split, args.out, "analysis")
    ckpt, ds, out = job.ckpt, job.dataset, job.out
    device = resolve_device(args.device)
    model, _ = model_from_checkpoint(ckpt, device=device)
    result = analyze_pyramid(model, ds, device, progress=not args.no_progress)
    print(format_analysis(result))
    out.write_text(json.dumps(result, indent=2))
    try:
        from .engine.analyze import plot_analysis

        plot_analysis(result, str(out.with_suffix(".png")))
    except Exception as e:  # a figure must never lose the numbers
        log.warning("could not plot the analysis: %s", e)
    print(f"analysis written to {out} (heatmap {out.with_suffix('.png')})")
    return 0


def _check_data(args) -> int:
    from .config import load_config
    from .data import build_dataset
    from .data.check import check_dataset, format_report

    cfg = load_config(args.config, args.overrides)
    if args.out:
        from .engine.outputs import check_output_file

        check_output_file(args.out, [args.config], suffixes=(".json",))
    d = cfg.data
    report = {}
    for split in args.splits or [d.train_split, d.val_split]:
        ds = build_dataset(d.dataset, d.root, split)
        report[split] = check_dataset(ds, progress=not args.no_progress)
        print(f"[{d.dataset} / {split}] " + format_report(report[split]))
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2))
    return 1 if any(r["problems"] for r in report.values()) else 0


def _convert_sbd(args) -> int:
    from .data.voc import convert_sbd

    n = convert_sbd(args.sbd_root, args.voc_root)
    print(f"wrote SegmentationClassAug/ and ImageSets/Segmentation/train_aug.txt ({n} training images)")
    return 0


def _export(args) -> int:
    from .api import resolve_model
    from .engine.checkpoint import load_checkpoint, model_from_checkpoint, require_torch_weights
    from .engine.outputs import check_output_file
    from .perf.export import export_onnx, onnx_parity

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


def _convert_pascal_context(args) -> int:
    from .data.pascal_context import convert_pascal_context

    n = convert_pascal_context(args.context_root, args.voc2010_root, progress=not args.no_progress)
    print(f"wrote SegmentationClassContext/ and ImageSets/SegmentationContext/ (train {n['train']}, val {n['val']})")
    return 0


def _convert_cocostuff10k(args) -> int:
    from .data.coco_stuff import convert_cocostuff10k

    n = convert_cocostuff10k(args.root, progress=not args.no_progress)
    print(f"wrote {n} label PNGs to {Path(args.root) / 'annotations_png'}")
    return 0


def _pack(args) -> int:
    """Strip a checkpoint to deployment weights (no optimizer, no auxiliary head), optionally fp16."""
    from .engine.checkpoint import pack_checkpoint
    from .engine.outputs import check_output_file

    check_output_file(args.out, [args.checkpoint, args.metrics], flag="output", suffixes=(".pt", ".pth", ".safetensors"),
                      force=args.force)
    n = pack_checkpoint(args.checkpoint, args.out, fp16=args.fp16, metrics=args.metrics)
    print(f"wrote {args.out} ({Path(args.out).stat().st_size / 2**20:.1f} MiB, {n} tensors)")
    return 0


def _benchmark(args) -> int:
    import torch

    from .api import resolve_model

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.checkpoint:
        args.checkpoint = str(resolve_model(args.checkpoint))  # a packaged model's name works too
    if args.out:
        from .engine.outputs import check_output_file

        check_output_file(args.out, [args.checkpoint], suffixes=(".json",))
    if args.train:
        from .config import load_config
        from .perf.train_bench import benchmark_training, summary_text

        cfg = load_config(args.train, args.overrides)
        result = benchmark_training(cfg, variants=tuple(args.variants), steps=args.repeats, warmup=args.warmup,
                                    profile=not args.no_profile,
                                    own_process_reference=not args.no_own_process_reference)
        print(summary_text(result))
        if args.out:
            Path(args.out).write_text(json.dumps(result, indent=2))
        return 0
    if args.overrides:
        raise ValueError(f"key=value overrides ({' '.join(args.overrides)}) apply to benchmark --train CONFIG only")
    if args.end_to_end:
        from .engine.backends import prepare_model
        from .engine.checkpoint import model_from_checkpoint
        from .engine.distributed import resolve_device
        from .perf.compare import cpu_flags, cpu_model
        from .perf.latency import latency_summary, predict_latency

        checkpoint = args.checkpoint or str(resolve_model(None))
        dev = resolve_device(args.device)
        model, ckpt = model_from_checkpoint(checkpoint, output_stride=args.output_stride, device=dev)
        model = prepare_model(model, args.backend, bf16=args.bf16, fold_bn=args.fold_bn, compile=_compile_arg(args),
                              device=dev)
        result = predict_latency(model, ckpt["meta"], args.end_to_end, repeats=args.repeats, warmup=args.warmup,
                                 channels_last=args.channels_last and args.backend == "torch")
        result.update(checkpoint=checkpoint, image_path=args.end_to_end, backend=getattr(model, "backend", "torch"),
                      bf16=args.bf16, compile=_compile_arg(args), fold_bn=args.fold_bn, int8="quantization" in ckpt,
                      threads=torch.get_num_threads(), cpu=cpu_model(), cpu_flags=cpu_flags(),
                      machine=f"{cpu_model()}, torch {torch.__version__}")
        print(latency_summary(result))
        if args.out:
            Path(args.out).write_text(json.dumps(result, indent=2))
        return 0
    if args.compare in ("openvino", "onnxruntime"):
        from .engine.backends import RuntimeModel
        from .engine.checkpoint import model_from_checkpoint
        from .perf.benchmark import build_untrained
        from .perf.compare import compare_with_runtime, runtime_summary_line

        if args.checkpoint:
            model, _ = model_from_checkpoint(args.checkpoint, output_stride=args.output_stride)
            if isinstance(model, RuntimeModel):
                raise ValueError("--compare needs a PyTorch checkpoint (give an int8 IR with --int8)")
            desc = f"{model.__class__.__name__} {args.checkpoint}"
        else:
            model = build_untrained(args.arch, args.backbone, args.num_classes, args.output_stride)
            desc = f"{args.arch} {args.backbone} OS{model.output_stride} ({args.num_classes} classes, random weights)"
        result = compare_with_runtime(args.compare, model, desc, tuple(args.size), args.batch, bf16=args.bf16,
                                      repeats=args.repeats, warmup=args.warmup, compile=not args.no_compile,
                                      int8_ir=args.int8, output="labels" if args.labels else "logits",
                                      settle=args.settle)
        print(runtime_summary_line(result))
    elif args.compare:
        from .perf.compare import compare_with_peer, summary_line

        result = compare_with_peer(args.compare, args.arch, tuple(args.size), args.batch, args.num_classes,
                                   args.repeats, args.warmup, bf16=args.bf16, compile=_compile_arg(args))
        print(summary_line(result))
    else:
        from .perf.benchmark import benchmark_model

        result = benchmark_model(args.checkpoint, args.arch, args.backbone, args.num_classes, args.output_stride,
                                 tuple(args.size), args.batch, _inference_overrides(args), args.repeats,
                                 args.warmup, device=args.device, fold_bn=args.fold_bn,
                                 channels_last=args.channels_last, bf16=args.bf16, compile=_compile_arg(args),
                                 backend=args.backend, labels=args.labels)
    text = json.dumps(result, indent=2)
    if args.out:
        Path(args.out).write_text(text)
    print(text)
    return 0


def _compile_arg(args):
    """``--compile`` / ``--compile-mode aot`` -> the ``compile`` argument of ``optimize_for_inference``."""
    return "aot" if getattr(args, "compile_mode", None) == "aot" else bool(getattr(args, "compile", False))


def _add_run_flags(p: argparse.ArgumentParser, handler) -> None:
    """What every command that runs a trained model takes: output stride, device, progress, inference."""
    p.add_argument("--output-stride", type=int, choices=(8, 16, 32), help="run at another output_stride")
    p.add_argument("--device", default="auto")
    p.add_argument("--backend", choices=BACKENDS, default="torch",
                   help="who runs the network: torch (default), openvino or onnxruntime (CPU; extras 'openvino' / "
                        "'export'); an OpenVINO IR --checkpoint (sceneparse quantize) always runs on openvino")
    p.add_argument("--compile-mode", choices=("inductor", "aot"),
                   help="aot: AOTInductor instead of torch.compile (implies --compile; no guards, a few percent "
                        "faster on CPU, 15-25 s to compile each new input size)")
    p.add_argument("--no-progress", action="store_true")
    _add_inference_flags(p)
    p.set_defaults(func=handler)


def _add_train_parser(sub) -> None:
    t = sub.add_parser("train", help="train a model from a YAML config")
    t.add_argument("config")
    t.add_argument("overrides", nargs="*", help="key=value overrides, e.g. train.iters=100")
    t.add_argument("--resume", help="checkpoint path, or 'auto' for the newest in the run's checkpoints/")
    t.add_argument("--work-dir", help="run directory (default runs/<name>)")
    t.add_argument("--restart", action="store_true",
                   help="start over in a work_dir that holds an earlier run: delete its checkpoints and outputs")
    t.add_argument("--allow-config-change", nargs="+", metavar="KEY",
                   help="with --resume: config keys (e.g. train.lr train.iters) allowed to differ from the "
                        "checkpoint's; the new values are used and recorded in resumes.jsonl")
    t.add_argument("--no-progress", action="store_true")
    t.set_defaults(func=_train)


def _add_evaluate_parser(sub) -> None:
    e = sub.add_parser("evaluate", help="mIoU / aAcc / mAcc of a checkpoint on a split")
    e.add_argument("--checkpoint", required=True)
    e.add_argument("--config", help="YAML to override the checkpoint's config (e.g. another data root)")
    e.add_argument("overrides", nargs="*", help="key=value overrides, e.g. data.root=/data/camvid")
    e.add_argument("--split", help="split name (default: data.val_split)")
    e.add_argument("--out", help="metrics JSON path (default: beside the checkpoint)")
    e.add_argument("--boundary-tolerance", type=NON_NEGATIVE, default=3, help="pixels, for the boundary F-score")
    e.add_argument("--fold-bn", action="store_true", help="fold BatchNorm into convolutions (inference speed)")
    e.add_argument("--bf16", action="store_true", help="the bf16 fast path (BN folded, bf16 weights and inputs)")
    e.add_argument("--compile", action="store_true", help="torch.compile with Inductor freezing (torch backend)")
    _add_run_flags(e, _evaluate)


def _add_predict_parser(sub) -> None:
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
    _add_run_flags(r, _predict)


def _add_benchmark_parser(sub) -> None:
    b = sub.add_parser("benchmark", help="inference latency / throughput / peak memory / FLOPs as JSON")
    b.add_argument("--checkpoint", help="benchmark a trained checkpoint (else --arch/--backbone)")
    b.add_argument("--arch", default="pspnet")
    b.add_argument("--backbone", default="efficientnet_lite0")
    b.add_argument("--num-classes", type=POSITIVE, default=19)
    b.add_argument("--size", type=MIN_SIZE, nargs=2, default=[512, 512], metavar=("H", "W"))
    b.add_argument("--batch", type=POSITIVE, default=1)
    b.add_argument("--repeats", type=POSITIVE, default=10)
    b.add_argument("--warmup", type=NON_NEGATIVE, default=2)
    b.add_argument("--threads", type=NON_NEGATIVE, default=0)
    b.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=True)
    b.add_argument("--fold-bn", action=argparse.BooleanOptionalAction, default=True,
                   help="fold BatchNorm into the preceding convolutions")
    b.add_argument("--bf16", action="store_true", help="bf16 weights and inputs (fast path; AMX / tensor cores)")
    b.add_argument("--compile", action="store_true", help="torch.compile with Inductor freezing (conv + ReLU/add fused; first call 5-10 s)")
    b.add_argument("--compare", choices=("torchvision", "smp", "openvino", "onnxruntime"),
                   help="time a peer in the same process (alternating runs), report ratios: torchvision / smp "
                        "models, or the same weights exported by our export and run by OpenVINO / ONNX Runtime")
    b.add_argument("--end-to-end", metavar="IMAGE",
                   help="time predict on this image file, stage by stage (decode, normalise, network, upsampling + "
                        "argmax, palette encode, write); --checkpoint defaults to the packaged model")
    b.add_argument("--labels", action="store_true",
                   help="time class ids (what predict computes) instead of full-resolution probabilities "
                        "(infer_probs) / logits (--compare); with --compare openvino|onnxruntime the runtime's "
                        "graph upsamples and takes the argmax inside, ours keeps low-resolution logits and uses the "
                        "engine's fused upsample_argmax")
    b.add_argument("--settle", type=int, default=1, metavar="N",
                   help="--compare openvino|onnxruntime: untimed calls of a path right before each of its timed "
                        "calls (default 1; the thread pools of the paths differ)")
    b.add_argument("--no-compile", action="store_true",
                   help="--compare openvino|onnxruntime: time our eager path only (default: eager and compiled)")
    b.add_argument("--int8", metavar="IR.xml",
                   help="--compare openvino|onnxruntime: also time this int8 IR (sceneparse quantize) in the same rounds")
    b.add_argument("--train", metavar="CONFIG",
                   help="time the training step of this config (a file or a shipped name, then key=value overrides): "
                        "PyTorch's kernels against train.fast, fp32 and bf16, alternating; --repeats steps each after "
                        "--warmup rounds")
    b.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides for --train")
    b.add_argument("--variants", nargs="+", default=["reference fp32", "fast fp32", "reference bf16", "fast bf16"],
                   help="--train: which of 'reference fp32', 'fast fp32', 'reference bf16', 'fast bf16' to time")
    b.add_argument("--no-profile", action="store_true", help="--train: skip the torch.profiler step per variant")
    b.add_argument("--no-own-process-reference", action="store_true",
                   help="--train: skip timing the reference fp32 step again in a fresh child process (glibc's "
                        "default malloc, as a run without train.fast has it)")
    b.add_argument("--out", help="JSON path")
    _add_run_flags(b, _benchmark)


def _add_analyze_parser(sub) -> None:
    a = sub.add_parser("analyze", help="pyramidal output: mIoU per (assigned, predicting) level, pixel shares")
    a.add_argument("--checkpoint", required=True)
    a.add_argument("overrides", nargs="*")
    a.add_argument("--split")
    a.add_argument("--out")
    a.add_argument("--device", default="auto")
    a.add_argument("--no-progress", action="store_true")
    a.set_defaults(func=_analyze)


def _add_check_data_parser(sub) -> None:
    c = sub.add_parser("check-data", help="scan a dataset's splits for bad files and report class frequencies")
    c.add_argument("config")
    c.add_argument("overrides", nargs="*")
    c.add_argument("--splits", nargs="+", help="default: data.train_split and data.val_split")
    c.add_argument("--out", help="JSON report path")
    c.add_argument("--no-progress", action="store_true")
    c.set_defaults(func=_check_data)


# the dataset converters: (command, help, [(positional, help)], progress flag, handler)
_CONVERTERS = [
    ("convert-sbd", "SBD .mat annotations -> VOC SegmentationClassAug + train_aug.txt",
     [("sbd_root", "benchmark_RELEASE/dataset (holds cls/, train.txt, val.txt)"), ("voc_root", "VOCdevkit/VOC2012")],
     False, _convert_sbd),
    ("convert-pascal-context", "Pascal-Context trainval/*.mat -> 60-class PNGs + split lists",
     [("context_root", "extracted trainval.tar.gz (holds trainval/*.mat, labels.txt)"),
      ("voc2010_root", "VOCdevkit/VOC2010")], True, _convert_pascal_context),
    ("convert-cocostuff10k", "COCO-Stuff 10k annotations/*.mat -> annotations_png/*.png",
     [("root", "the extracted cocostuff-10k-v1.1 folder (images/, annotations/, imageLists/)")], True,
     _convert_cocostuff10k),
]


def _add_converter_parsers(sub) -> None:
    for name, help_text, positionals, progress, handler in _CONVERTERS:
        c = sub.add_parser(name, help=help_text)
        for arg, arg_help in positionals:
            c.add_argument(arg, help=arg_help)
        if progress:
            c.add_argument("--no-progress", action="store_true")
        c.set_defaults(func=handler)


def _add_export_parser(sub) -> None:
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
    from .api import resolve_model
    from .perf.quantize import run_quantize

    info = run_quantize(resolve_model(args.checkpoint), args.out, config=args.config, overrides=args.overrides, split=args.split,
                        num_images=args.num_images, seed=args.seed, progress=not args.no_progress, force=args.force)
    cal = info["calibration"]
    print(f"wrote {args.out} (+ .bin): int8 OpenVINO IR, calibrated on {cal['num_images']} {cal['dataset']} "
          f"{cal['split']} images (seed {cal['seed']}) in {info['seconds']:.0f} s; use it as --checkpoint in "
          "evaluate / predict / benchmark")
    return 0


def _add_quantize_parser(sub) -> None:
    q = sub.add_parser("quantize", help="int8 post-training quantization (NNCF + OpenVINO, calibrated on training "
                                        "images) -> an OpenVINO IR every command takes as --checkpoint")
    q.add_argument("--checkpoint", required=True, help="checkpoint, packed file or packaged model name")
    q.add_argument("--out", required=True, help="OUT.xml (OUT.bin is written beside it)")
    q.add_argument("overrides", nargs="*", help="key=value overrides, e.g. data.root=/data/camvid")
    q.add_argument("--config", help="YAML to override the checkpoint's config (e.g. another data root)")
    q.add_argument("--split", help="calibration split (default: data.train_split)")
    q.add_argument("--num-images", type=POSITIVE, default=128, help="calibration images")
    q.add_argument("--seed", type=int, default=0, help="which calibration images")
    q.add_argument("--no-progress", action="store_true")
    q.add_argument("--force", action="store_true", help="replace OUT.xml and OUT.bin if it exists (default: refuse)")
    q.set_defaults(func=_quantize)


def _add_pack_parser(sub) -> None:
    k = sub.add_parser("pack", help="strip a checkpoint to deployment weights")
    k.add_argument("checkpoint")
    k.add_argument("out", help="OUT.pt (torch, loaded weights-only) or OUT.safetensors (tensors + JSON metadata, "
                               "no pickle; every command reads it as --checkpoint)")
    k.add_argument("--fp16", action="store_true")
    k.add_argument("--force", action="store_true", help="replace OUT if it exists (default: refuse)")
    k.add_argument("--metrics", help="metrics JSON to embed")
    k.set_defaults(func=_pack)


def _models(args) -> int:
    from .api import list_models

    models = list_models()
    if args.json:
        print(json.dumps(models, indent=1))
        return 0
    if not models:
        print("no packaged models installed")
        return 0
    for name, m in models.items():
        score = m.get("metrics", {})
        scored = f"{score['split']} mIoU {score['mIoU']:.2f}" if "mIoU" in score else "no scores"
        print(f"{name}{' (default)' if m['default'] else ''}: {m['arch']} {m['backbone']} OS{m['output_stride']}, "
              f"{m['num_classes']} classes of {m['dataset']}, trained on {'+'.join(m['train_splits'])}, "
              f"{scored}, {m['size_mb']} MB")
        if m.get("recipe"):
            print(f"    recipe: {m['recipe']}")
    return 0


def _demo(args) -> int:
    from .demo import check_examples, launch

    if args.examples:
        check_examples(args.examples)  # one line naming the file, before anything is served
    print(f"sceneparse demo on http://{args.host}:{args.port} (Ctrl+C stops it)")
    launch(args.host, args.port, checkpoints=args.checkpoint or (), examples=args.examples)
    return 0


def _add_demo_parser(sub) -> None:
    d = sub.add_parser("demo", help="a local web page: parse a photo, see overlay, legend and pixel shares (extra 'demo')")
    d.add_argument("--host", default="127.0.0.1", help="0.0.0.0 to serve other machines too")
    d.add_argument("--port", type=POSITIVE, default=7860)
    d.add_argument("--checkpoint", nargs="+", help="checkpoint files offered besides the packaged models")
    d.add_argument("--examples", nargs="+", help="photos to pick from (default: a few CamVid val images if present)")
    d.set_defaults(func=_demo)


def _doctor(args) -> int:
    from .sysinfo import report

    r = report()
    if args.json:
        print(json.dumps(r, indent=1))
        return 1 if r["problems"] else 0
    print(f"sceneparse {r['sceneparse']}, Python {r['python']}, torch {r['torch']}, torchvision {r['torchvision']}"
          + (f", {r['threads']} threads" if "threads" in r else "") + (", CUDA available" if r.get("cuda") else ""))
    print(f"CPU: {r['cpu']} ({' '.join(r['cpu_flags']) or 'no AVX-512 / AMX'}); training precision: "
          f"{r['bf16_training']}; C compiler: {r['c_compiler'] or 'none'}")
    for name, e in r["extras"].items():
        print(f"  [{'x' if e['installed'] else ' '}] {name:12s} {e['adds']}"
              + ("" if e["installed"] else f"  (pip install 'sceneparse[{name}]')"))
    for p in r["problems"]:
        print(f"PROBLEM: {p}")
    return 1 if r["problems"] else 0


def _add_doctor_parser(sub) -> None:
    d = sub.add_parser("doctor", help="versions, CPU flags, the extras installed and what each missing one would add")
    d.add_argument("--json", action="store_true")
    d.set_defaults(func=_doctor)


def _add_models_parser(sub) -> None:
    m = sub.add_parser("models", help="list the packaged models (names for predict --checkpoint and sceneparse.load)")
    m.add_argument("--json", action="store_true", help="print the full metadata as JSON")
    m.set_defaults(func=_models)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sceneparse", description="Semantic scene parsing toolbox")
    p.add_argument("-v", "--verbose", action="store_true")
    sub = p.add_subparsers(dest="command", required=True)
    _add_train_parser(sub)
    _add_evaluate_parser(sub)
    _add_predict_parser(sub)
    _add_benchmark_parser(sub)
    _add_analyze_parser(sub)
    _add_check_data_parser(sub)
    _add_converter_parsers(sub)
    _add_export_parser(sub)
    _add_pack_parser(sub)
    _add_quantize_parser(sub)
    _add_models_parser(sub)
    _add_demo_parser(sub)
    _add_doctor_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    from .config import ConfigError
    from .data.base import DataError
    from .engine.runlock import RunLockedError
    try:
        return args.func(args)
    except BrokenPipeError:  # `sceneparse models --json | head`: the reader has what it wanted
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error when Python flushes
        return 0
    except (ConfigError, DataError, ValueError, RunLockedError) as e:
        print(f"error: {_one_line(e)}", file=sys.stderr)
        return 2
    except ImportError as e:  # a missing extra, or a torch / torchvision pair that does not fit (sysinfo)
        print(f"error: {_one_line(e)}", file=sys.stderr)
        return 2
    except OSError as e:  # file not found, permission denied, no space left (the message names the path)
        detail = str(e) if e.filename is None else f"{e.strerror}: {e.filename}"
        print(f"error: {detail}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:
        print(f"interrupted{': ' + str(e) if str(e) else ''}", file=sys.stderr)
        return 130
    except FloatingPointError as e:
        print(f"error: {e}", file=sys.stderr)
        return 3


if __name__ == "__main__":
    raise SystemExit(main())
