"""int8 post-training static quantization: NNCF on the OpenVINO graph, calibrated on training images.

Why this flow: on the 2-core Xeon with AMX we measured the CamVid PSPNet-Lite0 (zoo) at 360x480 (one process,
alternating runs): OpenVINO int8 (NNCF) 96 img/s, our bf16 path with ``torch.compile`` 61 img/s, torchao's
PT2E flow with the x86 Inductor quantizer 57 img/s (its int8 convolutions did not beat bf16 here).

``nncf.quantize`` inserts per-channel symmetric int8 weight and per-tensor activation quantizers
(``preset=PERFORMANCE``), sets their ranges from statistics of ``num_images`` calibration images run at
their own size through the eval transform (the training split by default: the validation split then
measures the int8 model honestly), and applies fast bias correction. The result is an OpenVINO IR
(``.xml`` + ``.bin``) carrying the checkpoint's config and meta, read by ``evaluate`` / ``predict`` /
``benchmark`` as ``--checkpoint`` (:func:`sceneparse.checkpoint.load_ir_checkpoint`).
"""
from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import torch

log = logging.getLogger(__name__)


def calibration_images(dataset, num_images: int, seed: int = 0) -> list[np.ndarray]:
    """``num_images`` images of ``dataset`` (eval transform: normalised ``(1, 3, H, W)`` float32 arrays),
    drawn without replacement with ``seed``; all of them when it has fewer."""
    order = np.random.default_rng(seed).permutation(len(dataset))[:num_images]
    return [dataset[int(i)]["image"][None].numpy().astype(np.float32) for i in sorted(order)]


def quantize_openvino(model: torch.nn.Module, calibration: list[np.ndarray], fast_bias_correction: bool = True):
    """int8 OpenVINO model of ``model`` (float32, eval) calibrated on ``calibration`` (NCHW float arrays).

    Raises:
        ValueError: openvino / nncf missing, or no calibration image.
    """
    from ..utils.sysinfo import require_extra
    from .backends import OpenVINOModel

    nncf = require_extra("nncf", "openvino")
    if not calibration:
        raise ValueError("quantization needs at least one calibration image")
    ov_model = OpenVINOModel(model.float().eval()).ov_model
    return nncf.quantize(ov_model, nncf.Dataset(calibration), subset_size=len(calibration),
                         preset=nncf.QuantizationPreset.PERFORMANCE, fast_bias_correction=fast_bias_correction)


def run_quantize(checkpoint: str | Path, out: str | Path, *, config: str | Path | None = None, overrides=(),
                 split: str | None = None, num_images: int = 128, seed: int = 0, progress: bool = True,
                 force: bool = False) -> dict:
    """``sceneparse quantize``: the checkpoint's model as an int8 OpenVINO IR at ``out`` (``.xml``).

    Calibration images come from ``split`` (default ``data.train_split``) of the checkpoint's dataset
    (``config`` / ``overrides`` on top, e.g. ``data.root=...``).

    Returns:
        what was done: ``{"out", "calibration": {"split", "num_images", "seed"}, "nncf", "openvino", "seconds"}``.

    ``force``: replace an existing ``out`` (and its ``.bin``); without it an existing file is refused.

    Raises:
        ValueError: ``out`` is not ``.xml``, is an input, or exists without ``force``; a bad split / data
            root (``DataError``).
    """
    from ..checkpoint import check_classes, load_checkpoint, save_ir
    from ..config import load_config, to_dict
    from ..data import build_dataset, build_eval_transform
    from ..models.factory import model_from_checkpoint
    from ..models.segmentor import training_geometry
    from ..utils.io import check_output_file
    from ..utils.sysinfo import require_extra

    nncf, ov = require_extra("nncf", "openvino"), require_extra("openvino", "openvino")
    check_output_file(out, [checkpoint, config], suffixes=(".xml",), force=force)
    check_output_file(Path(out).with_suffix(".bin"), [checkpoint, config], flag="--out (its .bin)", suffixes=(".bin",),
                      force=force)
    ckpt = load_checkpoint(checkpoint)
    if "openvino_ir" in ckpt:
        raise ValueError(f"{checkpoint} is already an OpenVINO IR; quantize the PyTorch checkpoint")
    cfg = load_config(config, list(overrides), base=ckpt["config"])
    split = split or cfg.data.train_split
    ds = build_dataset(cfg.data.dataset, cfg.data.root, split, build_eval_transform(cfg.data.mean, cfg.data.std))
    check_classes(ckpt, ds, source=str(checkpoint))
    t0 = time.perf_counter()
    calib = calibration_images(ds, num_images, seed)
    model, _ = model_from_checkpoint(ckpt)
    log.info("calibrating on %d images of %s/%s", len(calib), cfg.data.dataset, split)
    q = quantize_openvino(model, calib)
    info = {"calibration": {"split": split, "num_images": len(calib), "seed": seed, "dataset": cfg.data.dataset},
            "nncf": nncf.__version__, "openvino": ov.__version__, "preset": "performance", "source": str(checkpoint)}
    # the IR stops at the decode head (like the engine's OpenVINO backend): sceneparse upsamples, fused with the
    # argmax for labels; anyone running the IR directly gets logits at this resolution, recorded here
    stride = getattr(model, "output_stride", None)
    save_ir(q, out, {"config": to_dict(cfg), "meta": ckpt.get("meta", {})},
            {"quantization": info, "logits": f"decode-head resolution (1/{stride} of the input)" if stride
             else "decode-head resolution", "input_geometry": training_geometry(model)})
    info.update(out=str(out), seconds=time.perf_counter() - t0)
    return info
