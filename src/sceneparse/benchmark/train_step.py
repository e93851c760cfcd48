"""Training-step benchmark (``sceneparse benchmark --train CONFIG``): the trainer's own step, timed per path.

Each variant is a :class:`~sceneparse.training.trainer.Trainer` of the config (in a temporary run folder, data
scan off), so what is timed is the real step: forward, loss, backward, the guarded optimiser update and the
scheduler. Variants: ``reference`` (PyTorch's kernels, ``train.fast=false``) and ``fast`` (``train.fast=true``),
each in fp32 and bf16 autocast. All variants start from the same weights and step on the same augmented
training batch, alternating round by round so that each sees the same machine state; medians are reported.
The malloc setting of the fast path (:func:`~sceneparse.training.fast_train.keep_freed_memory`) is
process-wide, so the reference variants of the same process get it too (their in-process ratios understate
the fast path's gain); ``own_process_reference`` times the reference fp32 step once more in a fresh child
process with glibc's defaults, as a training run without ``train.fast`` has it ("reference fp32, own
process"); the reference bf16 (autocast) step runs only in such a child ("reference bf16, own process"):
autocast never runs beside the fast path's malloc setting (see :func:`~sceneparse.training.fast_train.enable`). Data loading is timed separately (the configured workers, batches per second).

Counting: a training step is charged 3x the forward FLOPs of the model (``torch.utils.flop_counter``; the
backward costs about twice the forward), against the fp32 peak of a dense 3x3 convolution measured in the
same run (``peak_gflops``).
"""
from __future__ import annotations

import statistics
import os
import tempfile
import time

import torch
from omegaconf import DictConfig, OmegaConf

VARIANTS = ("reference fp32", "fast fp32", "reference bf16", "fast bf16")


def conv_peak_gflops(dtype: torch.dtype = torch.float32, repeats: int = 5) -> float:
    """GFLOP/s of a dense 3x3 convolution (256 -> 256 channels, 8 x 46 x 60, channels_last) on this CPU: the
    machine's practical convolution peak in ``dtype``."""
    conv = torch.nn.Conv2d(256, 256, 3, padding=1, bias=False).to(dtype).to(memory_format=torch.channels_last)
    x = torch.randn(8, 256, 46, 60, dtype=dtype).contiguous(memory_format=torch.channels_last)
    flops = 2 * 8 * 46 * 60 * 256 * 256 * 9
    times = []
    with torch.no_grad():
        conv(x)
        for _ in range(repeats):
            t0 = time.perf_counter()
            conv(x)
            times.append(time.perf_counter() - t0)
    return flops / statistics.median(times) / 1e9


def _trainer(cfg: DictConfig, work_dir: str, fast: bool, bf16: bool, first: bool = True):
    from ..training.trainer import Trainer

    data = {"check": False} if first else {"check": False, "cache": False}  # the first one's loader is timed
    c = OmegaConf.merge(cfg, {"work_dir": work_dir, "data": data,
                              "train": {"fast": fast, "amp": "bf16" if bf16 else False, "keep_best": False,
                                        "tensorboard": False}})
    return Trainer(c, progress=False)


def _step(tr, batches: list) -> None:
    finite, parts = tr._forward_backward(batches)
    if not finite:
        raise FloatingPointError("non-finite loss in the benchmark step")
    tr._guarded_update(parts)
    tr.scheduler.step()


def _top_ops(tr, batches: list, n: int = 12) -> list[dict]:
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        _step(tr, batches)
    rows = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)[:n]
    total = sum(e.self_cpu_time_total for e in prof.key_averages()) or 1
    return [{"op": e.key, "self_ms": round(e.self_cpu_time_total / 1e3, 2), "share": round(e.self_cpu_time_total / total, 4),
             "calls": e.count} for e in rows]


def _forward_flops(tr, images: torch.Tensor) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter, torch.no_grad():
        tr.net(images)  # train mode (what is trained), two images: BatchNorm needs more than one value
    return int(counter.get_total_flops()) // images.shape[0]


def _own_process(cfg: DictConfig, variant: str, steps: int, warmup: int) -> dict:
    """A reference ``variant`` timed in a fresh ``python -m sceneparse benchmark --train`` child process."""
    import json
    import subprocess
    import sys

    with tempfile.TemporaryDirectory(prefix="sceneparse_bench_ref_") as tmp:
        OmegaConf.save(cfg, f"{tmp}/config.yaml")
        cmd = [sys.executable, "-m", "sceneparse", "benchmark", "--train", f"{tmp}/config.yaml", "--variants",
               variant, "--no-own-process-reference", "--repeats", str(steps), "--warmup",
               str(warmup), "--threads", str(torch.get_num_threads()), "--out", f"{tmp}/ref.json"]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode:  # e.g. PyTorch's bf16 autocast step diverging: recorded, the other variants stand
            lines = [ln for ln in proc.stderr.strip().splitlines() if ln.startswith("error:")]
            return {"error": (lines[-1] if lines else proc.stderr.strip()[-400:])}
        with open(f"{tmp}/ref.json") as f:
            return json.load(f)["variants"][variant]


# several models' convolutions in one process (fwd, bwd-data, bwd-weights per layer and dtype) overflow oneDNN's
# default cache of 1024 primitives, so that each step rebuilds them: measured 1.47 instead of 1.23 s per pyramid
# step on AMD EPYC. A single trainer measured no different (1.21 default vs 1.24 s, separate processes, noisy).
# Read at oneDNN's first use:
# set by the CLI before any convolution runs (and inherited by the own-process references).
CACHE_ENV, CACHE_CAPACITY = "ONEDNN_PRIMITIVE_CACHE_CAPACITY", "8192"


def benchmark_training(cfg: DictConfig, variants=VARIANTS, steps: int = 5, warmup: int = 1, profile: bool = True,
                       data_batches: int = 6, threads: int = 0, own_process_reference: bool = True) -> dict:
    """Seconds per training step of each variant of ``cfg`` (alternating, medians of ``steps`` after
    ``warmup`` rounds), images/s, GFLOP/s against the measured peak, top operators (torch.profiler), data
    loading speed, and which variant the trainer's ``train.fast=auto`` uses on this machine.

    Returns:
        a JSON-ready dict; top level ``images_per_s``, ``precision``, ``s_per_step`` (of the trainer's path),
        ``peak_gflops`` (fp32), ``cpu``, ``cpu_flags``, ``variants`` and ``speedups``.

    Raises:
        ValueError: an unknown variant, or the config's model / data cannot be built.
    """
    from ..models import FIXED_OUTPUT_STRIDE
    from ..training import fast_train
    from ..utils.sysinfo import cpu_flags, cpu_model

    bad = [v for v in variants if v not in VARIANTS]
    if bad:
        raise ValueError(f"unknown variant(s) {bad}; choose from {list(VARIANTS)}")
    # autocast never runs beside the fast path's malloc setting (fast_train.enable): in a child process
    own = []
    if any(v.startswith("fast") for v in variants):
        own = (["reference fp32"] if own_process_reference else []) + [v for v in variants if v == "reference bf16"]
        variants = tuple(v for v in variants if v != "reference bf16")
    if threads:
        torch.set_num_threads(threads)
    device_ok = torch.device("cpu")
    chosen = fast_train.choose_precision(device_ok, cfg.train.amp, cfg.train.fast)
    trainers, results = {}, {}
    with tempfile.TemporaryDirectory(prefix="sceneparse_bench_") as tmp:
        for i, v in enumerate(variants):
            path, precision = v.split()
            torch.manual_seed(0)
            trainers[v] = _trainer(cfg, f"{tmp}/{i}", fast=path == "fast", bf16=precision == "bf16", first=i == 0)
        if any(v.startswith("fast") for v in variants):
            fast_train.keep_freed_memory()  # process-wide: the reference variants of this process get it too
        first = trainers[variants[0]]
        loader = iter(first.loader)
        t0 = time.perf_counter()
        batches = [next(loader) for _ in range(first.train_cfg.accum_steps)]
        t1 = time.perf_counter()
        for _ in range(data_batches):
            next(loader)
        data_s = (time.perf_counter() - t1) / max(data_batches, 1)
        del loader
        batch = sum(len(b["name"]) for b in batches)
        flops = _forward_flops(trainers[next(v for v in variants if v.startswith("reference"))]
                               if any(v.startswith("reference") for v in variants) else first,
                               batches[0]["image"][:2].contiguous(memory_format=torch.channels_last))
        times = {v: [] for v in variants}
        for r in range(warmup + steps):
            for v in variants:
                tr = trainers[v]
                t_start = time.perf_counter()
                try:
                    _step(tr, batches)
                except FloatingPointError as e:
                    raise FloatingPointError(f"{v}, round {r}: {e}") from e
                if r >= warmup:
                    times[v].append(time.perf_counter() - t_start)
        peak32, peak16 = conv_peak_gflops(torch.float32), conv_peak_gflops(torch.bfloat16)
        for v in variants:
            med = statistics.median(times[v])
            train_flops = 3 * flops * batch
            results[v] = {"s_per_step": med, "s_all": times[v], "images_per_s": batch / med,
                          "gflops_per_s": train_flops / med / 1e9, "fraction_of_fp32_peak": train_flops / med / 1e9 / peak32,
                          "fast_plan": trainers[v].fast.describe()}
            if profile:
                results[v]["top_ops"] = _top_ops(trainers[v], batches)
    for v in own:
        results[f"{v}, own process"] = _own_process(cfg, v, steps, warmup)
    trainer_path = ("fast" if cfg.train.fast is not False else "reference") + " " + chosen
    speedups = {}
    ok = {v: r for v, r in results.items() if "error" not in r}
    for ref in ("reference fp32, own process", "reference fp32"):
        for v in ok:
            if v != ref and ref in ok and not (ref == "reference fp32" and v.endswith("own process")):
                speedups[f"{v} / {ref}"] = results[ref]["s_per_step"] / results[v]["s_per_step"]
    if "reference bf16, own process" in ok and "fast bf16" in results:
        speedups["fast bf16 / reference bf16, own process"] = (results["reference bf16, own process"]["s_per_step"]
                                                               / results["fast bf16"]["s_per_step"])
    if "fast bf16" in results and "fast fp32" in results:
        speedups["fast bf16 / fast fp32"] = results["fast fp32"]["s_per_step"] / results["fast bf16"]["s_per_step"]
    main = results.get(trainer_path) or results[variants[-1]]
    return {
        "config": cfg.name, "model": dict(arch=cfg.model.arch, backbone=cfg.model.backbone,
                                          output_stride=FIXED_OUTPUT_STRIDE.get(cfg.model.arch, cfg.model.output_stride)),
        "batch": batch, "crop_size": list(cfg.data.crop_size), "threads": torch.get_num_threads(),
        "torch": torch.__version__, "cpu": cpu_model(), "cpu_flags": cpu_flags(),
        "trainer_path": trainer_path, "precision": chosen,
        "images_per_s": main["images_per_s"], "s_per_step": main["s_per_step"],
        "gflops_per_s": main["gflops_per_s"], "fraction_of_fp32_peak": main["fraction_of_fp32_peak"],
        "peak_gflops": peak32, "peak_gflops_bf16": peak16, "forward_gflops_per_image": flops / 1e9,
        "train_gflops_per_step": 3 * flops * batch / 1e9, "steps_timed": steps, "warmup_rounds": warmup,
        "variants": results, "speedups": speedups,
        "onednn_primitive_cache_capacity": os.environ.get(CACHE_ENV),
        "data_loading": {"num_workers": int(cfg.data.num_workers), "s_per_batch": data_s,
                         "images_per_s": batch / data_s if data_s else None,
                         "first_batch_s": t1 - t0},
    }


def summary_text(result: dict) -> str:
    """One line per variant and the trainer's choice."""
    lines = [f"{result['config']} (batch {result['batch']}, {result['threads']} threads, {result['cpu']}); "
             f"fp32 conv peak {result['peak_gflops']:.0f} GFLOP/s, bf16 {result['peak_gflops_bf16']:.0f}"]
    for v, r in result["variants"].items():
        if "error" in r:
            lines.append(f"  {v:15s} failed: {r['error']}")
            continue
        lines.append(f"  {v:15s} {r['s_per_step']:.3f} s/step  {r['images_per_s']:.2f} img/s  "
                     f"{r['gflops_per_s']:.0f} GFLOP/s ({100 * r['fraction_of_fp32_peak']:.0f}% of fp32 peak)")
    for k, x in result["speedups"].items():
        lines.append(f"  {k}: {x:.2f}x")
    lines.append(f"  the trainer uses: {result['trainer_path']} ({result['images_per_s']:.2f} img/s); data loading "
                 f"{result['data_loading']['images_per_s']:.1f} img/s with {result['data_loading']['num_workers']} workers")
    return "\n".join(lines)
