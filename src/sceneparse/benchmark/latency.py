"""End-to-end latency of ``sceneparse predict`` for one image: file in -> label PNG out, stage by stage.

Stages (medians over ``repeats`` runs, seconds): ``decode`` (read + decode the image file, RGB uint8),
``normalise`` (to the model's normalised float CHW tensor), ``network`` (the model's forward; logits at the
decode head's resolution when the model supports it), ``upsample_argmax`` (labels at the image's
resolution: :func:`~sceneparse.inference.engine.upsample_argmax`, for every backend), ``palette_encode``
(the palette PNG, encoded in memory), ``write`` (the PNG bytes written atomically). ``total`` is their sum. The overlay JPEG that ``predict`` also writes is timed apart
(``overlay``) and not in ``total``.

The upsampling + argmax is also timed the way the engine did it before (logits upsampled to the full
resolution, softmax, argmax: ``upsample_argmax_before``) on the same logits, and the labels of both ways are
compared (``labels_equal``, and ``labels_agreement``: the fraction of equal pixels of the last run, below 1
only where two classes tie within a rounding error).
"""
from __future__ import annotations

import io
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F


def _timed(fn, times: list[float]):
    t0 = time.perf_counter()
    out = fn()
    times.append(time.perf_counter() - t0)
    return out


def predict_latency(model, meta: dict, image_path: str | Path, repeats: int = 10, warmup: int = 2,
                    channels_last: bool = True, legend: bool = True) -> dict:
    """Stage medians (s) of parsing ``image_path`` with ``model`` (prepared: :func:`sceneparse.inference.pipeline.prepare`)
    into a palette label PNG, as ``predict`` does (whole image, single scale).

    Returns:
        ``{"stages_s_median": {stage: s}, "total_s_median", "share": {stage: fraction of total},
        "overlay_s_median", "upsample_argmax_before_s_median", "labels_equal", "image": [H, W],
        "logits": [K, h, w], "repeats"}``.

    Raises:
        DataError: the image cannot be read.
    """
    from PIL import Image

    from ..data.base import read_image
    from ..data.transforms import normalize_image
    from ..inference.engine import _logits, upsample_argmax
    from ..inference.vis import draw_legend, overlay, palette_image
    from ..utils.io import write_bytes_atomically

    stages = ("decode", "normalise", "network", "upsample_argmax", "palette_encode", "write")
    times: dict[str, list[float]] = {s: [] for s in stages + ("overlay", "upsample_argmax_before")}
    equal = True
    with tempfile.TemporaryDirectory() as tmp, torch.inference_mode():
        target = Path(tmp) / "label.png"
        for i in range(warmup + repeats):
            t = times if i >= warmup else {k: [] for k in times}
            image = _timed(lambda: read_image(image_path), t["decode"])
            x = _timed(lambda: normalize_image(image, meta["mean"], meta["std"])[None], t["normalise"])
            logits = _timed(lambda: _logits(model, x, channels_last, float32=False), t["network"])
            size = image.shape[:2]
            labels = _timed(lambda: upsample_argmax(logits, size)[0].numpy(), t["upsample_argmax"])

            def before():
                full = logits.float() if logits.shape[-2:] == size else F.interpolate(
                    logits.float(), size=size, mode="bilinear", align_corners=False)
                return full.softmax(1).argmax(1)[0].numpy()

            old = _timed(before, t["upsample_argmax_before"])
            equal &= bool(np.array_equal(old, labels))
            agree = float((old == labels).mean())

            def encode():
                buf = io.BytesIO()
                palette_image(labels, meta["palette"]).save(buf, format="PNG")
                return buf.getvalue()

            data = _timed(encode, t["palette_encode"])
            _timed(lambda: write_bytes_atomically(target, data), t["write"])

            def over():
                blend = Image.fromarray(overlay(image, labels, meta["palette"]))
                if legend and "classes" in meta:
                    blend = draw_legend(blend, labels, meta["classes"], meta["palette"])
                buf = io.BytesIO()
                blend.save(buf, format="JPEG", quality=90)
                return buf

            _timed(over, t["overlay"])
    med = {k: statistics.median(v) for k, v in times.items()}
    total = sum(med[s] for s in stages)
    return {"image": list(image.shape[:2]), "logits": list(logits.shape[1:]), "repeats": repeats,
            "stages_s_median": {s: med[s] for s in stages}, "total_s_median": total,
            "share": {s: med[s] / total for s in stages}, "overlay_s_median": med["overlay"],
            "upsample_argmax_before_s_median": med["upsample_argmax_before"], "labels_equal": equal,
            "labels_agreement": agree,
            "stages_s_all": {k: v for k, v in times.items()}}


def latency_summary(result: dict) -> str:
    """Lines for the console: each stage in ms and its share, the total, the upsampling + argmax before / after."""
    lines = [f"{s:>16}: {1000 * v:7.2f} ms ({100 * result['share'][s]:4.1f}%)" for s, v in result["stages_s_median"].items()]
    lines.append(f"{'total':>16}: {1000 * result['total_s_median']:7.2f} ms (file in -> label PNG out; overlay JPEG "
                 f"{1000 * result['overlay_s_median']:.1f} ms more)")
    lines.append(f"upsampling + argmax: {1000 * result['stages_s_median']['upsample_argmax']:.2f} ms fused, "
                 f"{1000 * result['upsample_argmax_before_s_median']:.2f} ms as before (full-resolution logits + "
                 f"softmax); labels equal: {result['labels_equal']} ({100 * result['labels_agreement']:.2f}% of pixels)")
    return "\n".join(lines)
