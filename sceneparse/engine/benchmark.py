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

from .inference import InferenceConfig, infer_probs


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


def benchmark_inference(model: torch.nn.Module, size: tuple[int, int], batch: int = 1,
                        infer: InferenceConfig | None = None, repeats: int = 10, warmup: int = 2,
                        device: str | torch.device = "cpu") -> dict:
    """Median latency (s per batch) and throughput (images/s) of ``infer_probs`` on random input.

    Returns a JSON-ready dict; timings are medians of ``repeats`` timed runs after ``warmup``.
    """
    device = torch.device(device)
    infer = infer or InferenceConfig()
    model = model.to(device).eval()
    x = torch.randn(batch, 3, *size, device=device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    flops = count_flops(model, x[:1]) if infer.mode == "whole" and infer.scales == (1.0,) and not infer.flip else None
    for _ in range(warmup):
        infer_probs(model, x, infer)
    sync()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    rss_before = _current_rss_mib()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        infer_probs(model, x, infer)
        sync()
        times.append(time.perf_counter() - t0)
    median = statistics.median(times)
    result = {
        "input": [batch, 3, *size], "device": str(device), "threads": torch.get_num_threads(),
        "inference": {"mode": infer.mode, "crop_size": infer.crop_size, "stride": infer.stride,
                      "scales": list(infer.scales), "flip": infer.flip, "window_batch": infer.window_batch},
        "repeats": repeats, "latency_s_median": median, "latency_s_all": times,
        "images_per_s": batch / median, "params_M": sum(p.numel() for p in model.parameters()) / 1e6,
        "gflops_per_image": flops / 1e9 if flops is not None else None,
        "machine": f"{platform.processor() or platform.machine()}, torch {torch.__version__}",
    }
    if flops is not None:
        result["achieved_gflops_per_s"] = flops * batch / median / 1e9
    if device.type == "cuda":
        result["peak_memory_MiB"] = torch.cuda.max_memory_allocated(device) / 2**20
        result["gpu"] = torch.cuda.get_device_name(device)
    else:
        result["peak_rss_MiB"] = _rss_mib()
        result["peak_rss_increase_MiB"] = _rss_mib() - rss_before
    return result
