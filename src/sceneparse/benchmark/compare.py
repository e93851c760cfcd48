"""Side-by-side inference benchmark against the models users would pick instead.

- ``torchvision``: ``deeplabv3_resnet50`` run as its users run it by default (eval, ``torch.no_grad``,
  NCHW float32) against **the same weights** converted to sceneparse (``models/convert.py``), run with our
  inference path (BN folded, channels_last, ``torch.inference_mode``; optionally bf16 weights).
  The outputs are compared, so the speed-up is for the same function.
- ``smp``: segmentation_models_pytorch ``PSPNet`` and ``DeepLabV3`` (ResNet-50 encoder, random
  weights) against our PSPNet / DeepLabv3 on ResNet-50. The architectures differ (smp's PSPNet reads
  stride-8 features of a 3-stage encoder; its DeepLabV3 has no extra 3x3 conv), so these rows
  report FLOPs next to the timings and the ratio is of throughput, not of equal work.

Timed runs alternate between the two models (A, B, A, B, ...) in one process with the same thread
count and input, so that drift of the machine (turbo, other load) hits both equally.
"""
from __future__ import annotations

import platform
import statistics
import time
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..utils.sysinfo import cpu_flags, cpu_model
from .throughput import count_flops, padding_flops


def _median_rate(fn, flops: float, repeats: int) -> float:
    for _ in range(2):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return flops / statistics.median(times) / 1e9


def matmul_peak_gflops(threads: int | None = None, dtype: torch.dtype = torch.float32, repeats: int = 10) -> dict:
    """This machine's measured dense matrix-multiply rate (GFLOP/s, 2 FLOPs per multiply-add).

    Several GEMM paths are timed, because they differ by 2x on some CPUs (MKL's ``torch.mm`` takes a
    slow path on AMD processors, oneDNN does not), and the peak is the fastest of them:
    ``mm`` (``torch.mm`` of 2048 x 2048 matrices), ``conv1x1`` (a 1024 -> 1024 channel 1x1
    convolution on 64 x 64 pixels, oneDNN, channels_last; the same GEMM shape as a 4096 x 1024 by
    1024 x 1024 product) and ``conv3x3`` (256 -> 256 channels, 3x3, 128 x 128 pixels: an implicit GEMM,
    the best case for a convolution network). Returns ``{"mm", "conv1x1", "conv3x3", "peak"}``.
    """
    if threads:
        torch.set_num_threads(threads)
    n = 2048
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    rates = {}
    with torch.inference_mode():
        rates["mm"] = _median_rate(lambda: a @ b, 2 * n ** 3, repeats)
        for name, cin, cout, k, side in (("conv1x1", 1024, 1024, 1, 64), ("conv3x3", 256, 256, 3, 128)):
            x = torch.randn(1, cin, side, side, dtype=dtype).contiguous(memory_format=torch.channels_last)
            conv = nn.Conv2d(cin, cout, k, padding=k // 2, bias=False).to(dtype)
            conv = conv.to(memory_format=torch.channels_last).eval()
            rates[name] = _median_rate(lambda: conv(x), 2 * cin * cout * k * k * side * side, repeats)
    rates["peak"] = max(rates.values())
    return rates


def alternate_timings(fns: dict[str, Callable[[], object]], repeats: int = 10, warmup: int = 2,
                      settle: int = 0) -> dict[str, list[float]]:
    """Call each function ``warmup`` times, then ``repeats`` rounds calling each once per round;
    returns the per-call wall times (s) per name.

    ``settle``: untimed calls of a function right before each of its timed calls. Use 1 when the
    functions run on different thread pools (PyTorch's OpenMP, OpenVINO's TBB, ONNX Runtime's own):
    a pool's threads spin for a while after its last parallel region and slow the next pool's first
    call down (measured: OpenVINO int8 right after compiled PyTorch at 78 img/s, 97 img/s settled).
    """
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            for _ in range(settle):
                fn()
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
    return times


def _peer_models(peer: str, arch: str, num_classes: int) -> tuple[nn.Module, nn.Module, str]:
    """(peer model, our model, description); both eval mode, float32."""
    from .. import build_model

    if peer == "torchvision":
        from torchvision.models.segmentation import deeplabv3_resnet50

        from ..models.convert import from_torchvision_deeplabv3

        torch.manual_seed(0)
        ref = deeplabv3_resnet50(weights=None, weights_backbone=None, num_classes=num_classes, aux_loss=False)
        for m in ref.modules():  # non-trivial BN statistics, as trained weights would have
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
        ours = from_torchvision_deeplabv3(ref.eval().state_dict())
        return ref.eval(), ours.eval(), "torchvision deeplabv3_resnet50 vs the same weights in sceneparse"
    if peer == "smp":
        import segmentation_models_pytorch as smp

        torch.manual_seed(0)
        if arch == "pspnet":
            ref = smp.PSPNet("resnet50", encoder_weights=None, classes=num_classes)
        elif arch == "deeplabv3":
            ref = smp.DeepLabV3("resnet50", encoder_weights=None, classes=num_classes)
        else:
            raise ValueError(f"--compare smp supports arch pspnet or deeplabv3, got {arch!r}")
        ours = build_model(arch, "resnet50", num_classes, output_stride=8, aux_head=False)
        return ref.eval(), ours.eval(), f"smp {type(ref).__name__}(resnet50) vs sceneparse {arch} resnet50 OS8"
    raise ValueError(f"unknown peer {peer!r}; choose torchvision or smp")


def _out(y):
    return y["out"] if isinstance(y, dict) else y


def compare_with_peer(peer: str, arch: str = "deeplabv3", size: tuple[int, int] = (512, 512), batch: int = 1,
                      num_classes: int = 21, repeats: int = 10, warmup: int = 2, bf16: bool = False,
                      compile: bool = False) -> dict:
    """Time the peer model (its default way of running) against ours (``optimize_for_inference``).

    Returns a JSON-ready dict: medians (s), images/s, the throughput ratio ours / peer, GFLOPs per
    image of each, achieved GFLOP/s, the machine's fp32 matmul peak and the fraction of it reached,
    and (torchvision, same weights) the max |difference| of the logits and the argmax agreement.
    """
    from ..deploy.optimize import optimize_for_inference

    peer_model, ours, desc = _peer_models(peer, arch, num_classes)
    x = torch.randn(batch, 3, *size)
    peer_flops, our_flops = count_flops(peer_model, x[:1]), count_flops(ours, x[:1])
    peer_pad, our_pad = padding_flops(peer_model, x[:1]), padding_flops(ours, x[:1])
    fast = optimize_for_inference(ours, dtype=torch.bfloat16 if bf16 else torch.float32, compile=compile,
                                  example=x[:1])
    x_cl = x.contiguous(memory_format=torch.channels_last).to(torch.bfloat16 if bf16 else torch.float32)

    def run_peer():
        with torch.no_grad():
            return _out(peer_model(x))

    def run_ours():
        with torch.inference_mode():
            return _out(fast(x_cl))

    ref_out, our_out = run_peer().float(), run_ours().float()
    times = alternate_timings({"peer": run_peer, "ours": run_ours}, repeats, warmup)
    med = {k: statistics.median(v) for k, v in times.items()}
    peak = matmul_peak_gflops()
    result = {
        "peer": peer, "comparison": desc, "input": [batch, 3, *size], "threads": torch.get_num_threads(),
        "machine": f"{platform.processor() or platform.machine()}, torch {torch.__version__}",
        "ours_path": {"fold_bn": True, "channels_last": True, "inference_mode": True,
                      "dtype": "bfloat16" if bf16 else "float32", "compile": compile},
        "latency_s_median": med, "latency_s_all": times,
        "images_per_s": {k: batch / v for k, v in med.items()},
        "speedup_ours_over_peer": med["peer"] / med["ours"],
        "gflops_per_image": {"peer": peer_flops / 1e9, "ours": our_flops / 1e9},
        "achieved_gflops_per_s": {"peer": peer_flops * batch / med["peer"] / 1e9,
                                  "ours": our_flops * batch / med["ours"] / 1e9},
        "matmul_peak_fp32_gflops_per_s": peak["peak"], "matmul_fp32_gflops_per_s": peak,
    }
    result["fraction_of_fp32_peak"] = {k: v / peak["peak"] for k, v in result["achieved_gflops_per_s"].items()}
    # the same without the FLOPs charged to taps on zero padding (which oneDNN skips): the work done
    result["gflops_per_image_on_padding"] = {"peer": peer_pad / 1e9, "ours": our_pad / 1e9}
    result["achieved_gflops_per_s_excluding_padding"] = {
        "peer": (peer_flops - peer_pad) * batch / med["peer"] / 1e9,
        "ours": (our_flops - our_pad) * batch / med["ours"] / 1e9}
    result["fraction_of_fp32_peak_excluding_padding"] = {
        k: v / peak["peak"] for k, v in result["achieved_gflops_per_s_excluding_padding"].items()}
    if peer == "torchvision":
        result["max_abs_diff_logits"] = (our_out - ref_out).abs().max().item()
        result["argmax_agreement"] = (our_out.argmax(1) == ref_out.argmax(1)).float().mean().item()
    return result


def summary_line(result: dict) -> str:
    """One line for the console: images/s of both, the speed-up and the fraction of the matmul peak."""
    return (f"{result['comparison']}: ours {result['images_per_s']['ours']:.3f} img/s, peer "
            f"{result['images_per_s']['peer']:.3f} img/s, speed-up {result['speedup_ours_over_peer']:.2f}x; "
            f"{100 * result['fraction_of_fp32_peak']['ours']:.0f}% of the fp32 matmul peak "
            f"({result['matmul_peak_fp32_gflops_per_s']:.0f} GFLOP/s), "
            f"{100 * result['fraction_of_fp32_peak_excluding_padding']['ours']:.0f}% counting only "
            "convolution taps off the zero padding")


RUNTIMES = ("openvino", "onnxruntime")


def _runtime_runner(runtime: str, onnx_path, precision: str, shape, threads: int):
    """(callable feeding a float32 NCHW array -> the graph's first output, settings used) for ``runtime``
    on ``onnx_path``, with the settings of our backends (:func:`~sceneparse.deploy.backends.openvino_config`,
    :func:`~sceneparse.deploy.backends.ort_session`)."""
    from ..deploy.backends import openvino_config, ort_session
    from ..utils.sysinfo import require_extra

    if runtime == "openvino":
        ov = require_extra("openvino", "openvino")
        core = ov.Core()
        model = core.read_model(str(onnx_path))
        model.reshape(list(shape))  # static shape: OpenVINO's fast path, as its benchmark_app uses
        settings = openvino_config(precision, threads)
        req = core.compile_model(model, "CPU", settings).create_infer_request()

        def run(a):
            req.infer({0: a})
            return req.get_output_tensor(0).data

        return run, {**settings, "version": ov.__version__}
    sess = ort_session(onnx_path, threads)
    name = sess.get_inputs()[0].name
    return (lambda a: sess.run(None, {name: a})[0]), {
        "intra_op_num_threads": threads, "graph_optimization_level": "ORT_ENABLE_ALL",
        "provider": "CPUExecutionProvider", "version": require_extra("onnxruntime", "export").__version__}


def compare_with_runtime(runtime: str, model: nn.Module, description: str, size: tuple[int, int] = (512, 512),
                         batch: int = 1, bf16: bool = False, repeats: int = 10, warmup: int = 2,
                         compile: bool = True, int8_ir: str | None = None, output: str = "logits",
                         settle: int = 1) -> dict:
    """Our best path against ``runtime`` (``"openvino"`` or ``"onnxruntime"``) on **the same weights**:
    ``model`` exported by our ``export`` (float NCHW in) and run by the runtime with its recommended CPU
    settings (OpenVINO: static shape, ``PERFORMANCE_HINT=LATENCY``, precision hint; ONNX Runtime: all graph
    optimisations), in the same precision, same threads, same input, timed alternately in one process.
    Ours: :func:`optimize_for_inference` eager, and with ``compile`` also ``torch.compile`` (Inductor
    freezing, C++ wrapper) and AOTInductor (``compile="aot"``); the fastest is "ours". Each timed call
    follows ``settle`` untimed ones of the same path (the thread pools differ; a deployment runs one of
    them, so more settling calls come closer to it: on the light model's bf16 labels settle 0 / 1 / 3
    gave 1.07x / 0.96x / 0.97x, blocks of 30 calls 0.97x). With ``int8_ir`` (an IR from ``sceneparse
    quantize``) that model is timed in the same rounds (OpenVINO; the layers between int8 ones in this
    precision).

    ``output``: the function compared. ``"logits"``: ``(N, K, H, W)`` logits at the input size from every
    path. ``"labels"``: ``(N, H, W)`` class ids, what ``predict`` needs: the runtime's graph upsamples and
    takes the argmax inside (``export --outputs labels``); ours (and the int8 IR) compute logits at the
    decode head's resolution and the engine's fused :func:`~sceneparse.inference.engine.upsample_argmax`.
    Against OpenVINO, ``"labels"`` also times our engine with the OpenVINO backend
    (``engine_openvino_backend``: what ``predict --backend openvino`` runs), reported apart from "ours".

    Returns:
        a JSON-ready dict: medians (s) and images/s per path, ``ratio_ours_over_runtime`` (throughput),
        logits ``max_abs_diff`` (logits only) and ``argmax_agreement`` of each path against the fp32 PyTorch
        model, the settings of each path, CPU model, flags and threads.

    Raises:
        ValueError: unknown runtime or output; bf16 with onnxruntime.
    """
    import copy
    import tempfile
    from pathlib import Path

    from ..deploy.export import export_onnx
    from ..deploy.optimize import optimize_for_inference, rewrite_counts
    from ..inference.engine import InferenceConfig, _logits, predict_labels, upsample_argmax

    if runtime not in RUNTIMES:
        raise ValueError(f"--compare runtime must be one of {RUNTIMES}, got {runtime!r}")
    if output not in ("logits", "labels"):
        raise ValueError(f"output must be 'logits' or 'labels', got {output!r}")
    labels = output == "labels"
    precision = "bf16" if bf16 else "fp32"
    if runtime == "onnxruntime" and bf16:
        raise ValueError("onnxruntime's CPU provider has no bf16 kernels: --compare onnxruntime needs fp32 (no --bf16)")
    threads = torch.get_num_threads()
    model = model.float().eval()
    x = torch.randn(batch, 3, *size, generator=torch.Generator().manual_seed(0))
    xn = x.numpy()
    with torch.inference_mode():
        ref = model(x)["out"].float()
    dtype = torch.bfloat16 if bf16 else torch.float32
    fns, outputs, settings = {}, {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        onnx_path = export_onnx(model, Path(tmp) / "model.onnx", size, input_format="float",
                                outputs="labels" if labels else "logits")
        run, settings[runtime] = _runtime_runner(runtime, onnx_path, precision, x.shape, threads)
    fns[runtime] = lambda: run(xn)
    outputs[runtime] = torch.from_numpy(run(xn).copy())
    for comp in ((False, True, "aot") if compile else (False,)):
        mine = copy.deepcopy(model)
        if labels and hasattr(mine, "set_eval_logit_upsampling"):
            mine.set_eval_logit_upsampling(False)
        fast = optimize_for_inference(mine, dtype=dtype, compile=comp, example=x[:1, :, :64, :64])
        xi = x.contiguous(memory_format=torch.channels_last).to(dtype)
        name = {False: "ours_eager", True: "ours_compile", "aot": "ours_aot"}[comp]

        def ours(fast=fast, xi=xi):
            with torch.inference_mode():
                return upsample_argmax(_logits(fast, xi, False, float32=False), size) if labels else fast(xi)["out"]

        outputs[name] = ours()  # compiles (5-30 s) before the timed rounds
        fns[name] = ours
        settings[name] = {"fold_bn": True, "channels_last": True, "dtype": str(dtype).replace("torch.", ""),
                          "compile": comp, "inference_mode": True, "layer_rewrites": rewrite_counts(fast),
                          **({"logits": "decode-head resolution, fused upsample_argmax"} if labels else {})}
    engine = InferenceConfig(channels_last=False)  # whole image, as predict runs a runtime backend
    if int8_ir:
        from ..deploy.backends import OpenVINOModel

        q = OpenVINOModel(int8_ir, precision)

        def int8():  # the IR's logits are at the decode head's resolution: upsampled here for "logits"
            with torch.inference_mode():
                if labels:  # as predict runs it
                    return predict_labels(q, x, engine)
                low = _logits(q, x, False)
                return low if low.shape[-2:] == tuple(size) else F.interpolate(low, size=size, mode="bilinear",
                                                                                align_corners=False)

        fns["ours_int8"] = int8
        outputs["ours_int8"] = int8()
        settings["ours_int8"] = {"ir": str(int8_ir), **q.config}
    if runtime == "openvino" and labels:  # what `predict --backend openvino` runs: OpenVINO inside our engine
        from ..deploy.backends import prepare_model

        inside = prepare_model(copy.deepcopy(model), "openvino", bf16=bf16, threads=threads)

        def engine_openvino():  # OpenVINO's network to decode-head logits, then our native upsample + argmax
            return predict_labels(inside, x, engine)

        fns["engine_openvino_backend"] = engine_openvino
        outputs["engine_openvino_backend"] = engine_openvino()
        settings["engine_openvino_backend"] = {**inside.config, "logits": "decode-head resolution, fused upsample_argmax"}
    times = alternate_timings(fns, repeats, warmup, settle=settle)
    med = {k: statistics.median(v) for k, v in times.items()}
    ours_best = min((k for k in med if k in ("ours_eager", "ours_compile", "ours_aot")), key=med.get)
    ref_labels = ref.argmax(1)

    def as_labels(v):
        return v.long() if labels else v.float().argmax(1)

    result = {
        "runtime": runtime, "precision": precision, "output": output, "comparison": description,
        "input": [batch, 3, *size], "threads": threads, "cpu": cpu_model(), "cpu_flags": cpu_flags(),
        "machine": f"{cpu_model()}, torch {torch.__version__}", "settings": settings, "repeats": repeats,
        "settle": settle,
        "latency_s_median": med, "latency_s_all": times, "images_per_s": {k: batch / v for k, v in med.items()},
        "ours_best": ours_best, "ratio_ours_over_runtime": med[runtime] / med[ours_best],
        "argmax_agreement_vs_fp32_torch": {k: (as_labels(v) == ref_labels).float().mean().item()
                                           for k, v in outputs.items()},
        "argmax_agreement_ours_vs_runtime": (as_labels(outputs[ours_best]) ==
                                             as_labels(outputs[runtime])).float().mean().item(),
    }
    if not labels:
        result["max_abs_diff_vs_fp32_torch"] = {k: (v.float() - ref).abs().max().item() for k, v in outputs.items()}
        result["ref_max_abs_logit"] = ref.abs().max().item()
    if int8_ir:
        result["ratio_int8_over_ours_best"] = med[ours_best] / med["ours_int8"]
    if "engine_openvino_backend" in med:
        result["ratio_engine_openvino_backend_over_runtime"] = med[runtime] / med["engine_openvino_backend"]
    return result


def runtime_summary_line(result: dict) -> str:
    """One line for the console: images/s of each path and the ratio ours / runtime."""
    rates = ", ".join(f"{k} {v:.2f}" for k, v in result["images_per_s"].items())
    line = (f"{result['comparison']} {result['precision']} {result.get('output', 'logits')} {'x'.join(map(str, result['input'][2:]))}: {rates} img/s; "
            f"ours ({result['ours_best']}) / {result['runtime']} = {result['ratio_ours_over_runtime']:.2f}x; "
            f"argmax agreement {100 * result['argmax_agreement_ours_vs_runtime']:.2f}%")
    if "ratio_int8_over_ours_best" in result:
        line += f"; int8 / ours {result['precision']} = {result['ratio_int8_over_ours_best']:.2f}x"
    if "ratio_engine_openvino_backend_over_runtime" in result:
        line += (f"; our engine with --backend openvino / {result['runtime']} = "
                 f"{result['ratio_engine_openvino_backend_over_runtime']:.2f}x")
    return line
