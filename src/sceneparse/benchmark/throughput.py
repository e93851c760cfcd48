"""Inference benchmark: latency, throughput, peak memory, parameters, FLOPs -> JSON.

Peak memory is ``torch.cuda.max_memory_allocated`` on CUDA; on CPU it is the
process's peak resident set size (``ru_maxrss``), which only grows, so the
benchmark reports the peak *increase* over the RSS measured before the timed
runs: run one configuration per process to compare modes (the CLI does).
"""
from __future__ import annotations

import platform
import resource
import statistics
import time

import torch

from ..inference.engine import InferenceConfig, infer_probs, predict_labels


def _rss_mib() -> float:
    # ru_maxrss is KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _current_rss_mib() -> float:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * resource.getpagesize() / 2**20
    except OSError:  # pragma: no cover - non-Linux
        return float("nan")


def count_flops(model: torch.nn.Module, x: torch.Tensor) -> int:
    """FLOPs of one forward pass (``torch.utils.flop_counter``; a multiply-add counts 2)."""
    from torch.utils.flop_counter import FlopCounterMode

    x = x.to(next(model.parameters()).dtype)
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        model(x)
    return int(counter.get_total_flops())


def _valid_taps(size: int, kernel: int, stride: int, padding: int, dilation: int) -> tuple[int, int]:
    """(taps that read the input, all taps) summed over the output positions of one spatial axis."""
    out = (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1
    valid = sum(1 for o in range(out) for t in range(kernel) if 0 <= o * stride - padding + t * dilation < size)
    return valid, out * kernel


def padding_flops(model: torch.nn.Module, x: torch.Tensor) -> int:
    """FLOPs that ``count_flops`` charges to convolution taps reading zero padding.

    Standard counters (``torch.utils.flop_counter``, fvcore) charge every output position the full
    kernel, ``2 * C_in/groups * k_h * k_w`` per output value. Taps that land in the zero padding
    compute nothing, and oneDNN skips them. For a large dilation this is most of the kernel:
    DeepLabv3's ASPP rate 36 on a 64x64 map has 61% of its taps in padding. Subtract this from
    ``count_flops`` to get the work actually done; a rate computed from the full count can exceed
    the machine's GEMM peak.

    Args:
        model: any module; every ``nn.Conv2d`` with zero padding used in one forward pass is counted.
        x: the input, (N, 3, H, W).
    Returns:
        FLOPs (multiply-add = 2) on padding taps, an int >= 0.
    """
    wasted = []

    def hook(mod: torch.nn.Conv2d, inp, out):
        if mod.padding_mode != "zeros" or isinstance(mod.padding, str) and mod.padding == "valid":
            return
        h, w = inp[0].shape[-2:]
        pad = mod.padding if not isinstance(mod.padding, str) else tuple(
            d * (k - 1) // 2 for d, k in zip(mod.dilation, mod.kernel_size))  # "same" (odd kernels)
        vh, th = _valid_taps(h, mod.kernel_size[0], mod.stride[0], pad[0], mod.dilation[0])
        vw, tw = _valid_taps(w, mod.kernel_size[1], mod.stride[1], pad[1], mod.dilation[1])
        per_pair = 2 * inp[0].shape[0] * mod.out_channels * (mod.in_channels // mod.groups)
        wasted.append(per_pair * (th * tw - vh * vw))

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    try:
        with torch.inference_mode():
            model(x.to(next(model.parameters()).dtype))
    finally:
        for h in handles:
            h.remove()
    return int(sum(wasted))


def benchmark_inference(model: torch.nn.Module, size: tuple[int, int], batch: int = 1,
                        infer: InferenceConfig | None = None, repeats: int = 10, warmup: int = 2,
                        device: str | torch.device = "cpu", labels: bool = False) -> dict:
    """Median latency (s per batch) and throughput (images/s) of ``infer_probs`` (class probabilities at
    the input's size, upsampled as the model given does it) or, with ``labels``, of ``predict_labels``
    (class ids, what ``predict`` computes: a single pass skips the softmax and fuses upsampling with the
    argmax) on random input.

    Returns a JSON-ready dict (``"output"``: ``"probs"`` or ``"labels"``); timings are medians of
    ``repeats`` timed runs after ``warmup``.
    """
    device = torch.device(device)
    infer = infer or InferenceConfig()
    model = model.to(device).eval()
    x = torch.randn(batch, 3, *size, device=device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    # FLOPs are counted by running the torch graph: not for a runtime backend (no parameters, not torch ops)
    countable = infer.mode == "whole" and infer.scales == (1.0,) and not infer.flip and \
        next(model.parameters(), None) is not None
    flops = count_flops(model, x[:1]) if countable else None
    pad_flops = padding_flops(model, x[:1]) if countable else None
    run = predict_labels if labels else infer_probs
    for _ in range(warmup):
        run(model, x, infer)
    sync()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    rss_before = _current_rss_mib()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        run(model, x, infer)
        sync()
        times.append(time.perf_counter() - t0)
    median = statistics.median(times)
    result = {
        "input": [batch, 3, *size], "output": "labels" if labels else "probs", "device": str(device),
        "threads": torch.get_num_threads(),
        "inference": {"mode": infer.mode, "crop_size": infer.crop_size, "stride": infer.stride,
                      "scales": list(infer.scales), "flip": infer.flip, "window_batch": infer.window_batch},
        "repeats": repeats, "latency_s_median": median, "latency_s_all": times,
        "images_per_s": batch / median, "params_M": sum(p.numel() for p in model.parameters()) / 1e6,
        "gflops_per_image": flops / 1e9 if flops is not None else None,
        "gflops_per_image_on_padding": pad_flops / 1e9 if pad_flops is not None else None,
        "machine": f"{platform.processor() or platform.machine()}, torch {torch.__version__}",
    }
    if flops is not None:
        result["achieved_gflops_per_s"] = flops * batch / median / 1e9
        result["achieved_gflops_per_s_excluding_padding"] = (flops - pad_flops) * batch / median / 1e9
    if device.type == "cuda":
        result["peak_memory_MiB"] = torch.cuda.max_memory_allocated(device) / 2**20
        result["gpu"] = torch.cuda.get_device_name(device)
    else:
        result["peak_rss_MiB"] = _rss_mib()
        result["peak_rss_increase_MiB"] = _rss_mib() - rss_before
    return result


def benchmark_model(checkpoint: str | None, arch: str, backbone: str, num_classes: int, output_stride: int | None,
                    size: tuple[int, int], batch: int, infer_overrides: dict, repeats: int, warmup: int, *,
                    device: str = "auto", fold_bn: bool = True, channels_last: bool = True, bf16: bool = False,
                    compile: bool = False, backend: str = "torch", labels: bool = False) -> dict:
    """``sceneparse benchmark`` without ``--compare``: a trained checkpoint (an OpenVINO IR from
    ``sceneparse quantize`` included), or an untrained ``arch``/``backbone``, prepared for inference as
    asked (:func:`~sceneparse.deploy.backends.prepare_model`), timed by :func:`benchmark_inference`
    (``labels``: ``predict_labels``; the torch model then returns decode-head logits where it can, as
    ``predict`` runs it).

    Raises:
        ValueError: an output stride the architecture cannot run at; a backend that cannot run as asked.
    """
    from ..deploy.backends import RuntimeModel, prepare_model
    from ..deploy.optimize import rewrite_counts
    from ..inference.engine import InferenceConfig
    from ..inference.pipeline import load_model
    from ..utils.device import resolve_device
    from ..utils.sysinfo import cpu_flags, cpu_model

    dev = resolve_device(device)
    model = build_untrained(arch, backbone, num_classes, output_stride) if not checkpoint else \
        load_model(checkpoint, output_stride=output_stride, device=dev)[0]
    # labels: decode-head logits where the model can (as predict runs it); logits: full resolution
    model = prepare_model(model, backend, bf16=bf16, fold_bn=fold_bn, compile=compile, device=dev,
                          channels_last=channels_last, low_res_logits=labels)
    infer = InferenceConfig.for_config(None, **infer_overrides)
    if isinstance(model, RuntimeModel):
        infer.channels_last = False
    result = benchmark_inference(model, size, batch, infer, repeats, warmup, dev, labels=labels)
    result.update(arch=arch if not checkpoint else f"checkpoint:{checkpoint}", backbone=backbone,
                  output_stride=getattr(model, "output_stride", None), fold_bn=fold_bn or bf16, bf16=bf16, compile=compile,
                  backend=getattr(model, "backend", "torch"), cpu=cpu_model(), cpu_flags=cpu_flags(),
                  layer_rewrites=None if isinstance(model, RuntimeModel) else rewrite_counts(model))
    return result


def build_untrained(arch: str, backbone: str, num_classes: int, output_stride: int | None) -> torch.nn.Module:
    """An untrained ``arch`` on ``backbone`` (eval mode) whose BatchNorm statistics are drawn at random
    (means in [-0.1, 0.1], variances in [0.5, 1.5], seed 0), as trained weights would have: folding and
    runtime comparisons then see non-trivial BN. Timing-only stand-in for a trained model.

    Raises:
        ValueError: an output stride the architecture cannot run at.
    """
    from ..models import FIXED_OUTPUT_STRIDE, build_model

    fixed = FIXED_OUTPUT_STRIDE.get(arch)
    if fixed and output_stride and output_stride != fixed:
        raise ValueError(f"--arch {arch} always runs at output_stride {fixed}; --output-stride {output_stride} "
                         "does not apply")
    torch.manual_seed(0)
    model = build_model(arch, backbone, num_classes, output_stride or 8, aux_head=False)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d) and m.running_mean is not None:
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    return model.eval()
