"""``sceneparse benchmark``: inference and training-step speed, memory, FLOPs, and comparisons with
other toolboxes and runtimes, as JSON."""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from .common import MIN_SIZE, NON_NEGATIVE, POSITIVE, add_run_flags, compile_arg, inference_overrides


def _benchmark(args) -> int:
    import torch

    if args.train:  # several models in one process: room for all their oneDNN primitives (before any runs)
        from ..benchmark.train_step import CACHE_CAPACITY, CACHE_ENV

        os.environ.setdefault(CACHE_ENV, CACHE_CAPACITY)

    from ..api import resolve_model

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.checkpoint:
        args.checkpoint = str(resolve_model(args.checkpoint))  # a packaged model's name works too
    if args.out:
        from ..utils.io import check_output_file

        check_output_file(args.out, [args.checkpoint], suffixes=(".json",))
    if args.train:
        from ..benchmark.train_step import benchmark_training, summary_text
        from ..config import load_config

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
        from ..benchmark.latency import latency_summary, predict_latency
        from ..inference.pipeline import prepare
        from ..utils.device import resolve_device
        from ..utils.sysinfo import cpu_flags, cpu_model

        checkpoint = args.checkpoint or str(resolve_model(None))
        dev = resolve_device(args.device)
        model, ckpt = prepare(checkpoint, backend=args.backend, bf16=args.bf16, fold_bn=args.fold_bn,
                              compile=compile_arg(args), output_stride=args.output_stride, device=dev)
        result = predict_latency(model, ckpt["meta"], args.end_to_end, repeats=args.repeats, warmup=args.warmup,
                                 channels_last=args.channels_last and args.backend == "torch")
        result.update(checkpoint=checkpoint, image_path=args.end_to_end, backend=getattr(model, "backend", "torch"),
                      bf16=args.bf16, compile=compile_arg(args), fold_bn=args.fold_bn, int8="quantization" in ckpt,
                      threads=torch.get_num_threads(), cpu=cpu_model(), cpu_flags=cpu_flags(),
                      machine=f"{cpu_model()}, torch {torch.__version__}")
        print(latency_summary(result))
        if args.out:
            Path(args.out).write_text(json.dumps(result, indent=2))
        return 0
    if args.compare in ("openvino", "onnxruntime"):
        from ..benchmark.compare import compare_with_runtime, runtime_summary_line
        from ..benchmark.throughput import build_untrained
        from ..deploy.backends import RuntimeModel
        from ..inference.pipeline import load_model

        if args.checkpoint:
            model, _ = load_model(args.checkpoint, output_stride=args.output_stride)
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
        from ..benchmark.compare import compare_with_peer, summary_line

        result = compare_with_peer(args.compare, args.arch, tuple(args.size), args.batch, args.num_classes,
                                   args.repeats, args.warmup, bf16=args.bf16, compile=compile_arg(args))
        print(summary_line(result))
    else:
        from ..benchmark.throughput import benchmark_model

        result = benchmark_model(args.checkpoint, args.arch, args.backbone, args.num_classes, args.output_stride,
                                 tuple(args.size), args.batch, inference_overrides(args), args.repeats,
                                 args.warmup, device=args.device, fold_bn=args.fold_bn,
                                 channels_last=args.channels_last, bf16=args.bf16, compile=compile_arg(args),
                                 backend=args.backend, labels=args.labels)
    text = json.dumps(result, indent=2)
    if args.out:
        Path(args.out).write_text(text)
    print(text)
    return 0


def add_benchmark_parser(sub) -> None:
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
    add_run_flags(b, _benchmark)
