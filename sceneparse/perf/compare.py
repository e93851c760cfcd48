"""Side-by-side inference benchmark against the models users would pick instead.

- ``torchvision``: ``deeplabv3_resnet50`` run as its users run it by default (eval, ``torch.no_grad``,
  NCHW float32) against **the same weights** converted to sceneparse (``convert.py``), run with our
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

from .benchmark import count_flops, padding_flops


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


def alternate_timings(fns: dict[str, Callable[[], object]], repeats: int = 10, warmup: int = 2) -> dict[str, list[float]]:
    """Call each function ``warmup`` times, then ``repeats`` rounds calling each once per round;
    returns the per-call wall times (s) per name."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
    return times


def _peer_models(peer: str, arch: str, num_classes: int) -> tuple[nn.Module, nn.Module, str]:
    """(peer model, our model, description); both eval mode, float32."""
    from .. import build_model

    if peer == "torchvision":
        from torchvision.models.segmentation import deeplabv3_resnet50

        from ..convert import from_torchvision_deeplabv3

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
    from ..engine.optimize import optimize_for_inference

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
