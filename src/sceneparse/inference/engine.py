"""Inference engine shared by every model: whole image, sliding window, multi-scale + flip TTA,
optional dense-CRF post-processing.

All modes return class **probabilities** ``(N, K, H, W)`` at the input's
resolution. Multi-scale and flip average softmax probabilities over the
scaled / flipped inputs, as DeepLabv3 Sec. 4.2 ("average probabilities from
each scale and flipped images") and PSPNet Sec. 5 describe.

Memory: a sliding window pass holds the two ``(1, K, H, W)`` accumulators and
the activations of at most ``window_batch`` windows at a time.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F

from ..config import EvalConfig
from ..constants import IMAGENET_MEAN, IMAGENET_STD

log = logging.getLogger(__name__)
_EVAL = EvalConfig()


@dataclass
class InferenceConfig:
    """How to run a model on an image.

    Attributes:
        mode: ``"whole"`` (the image at once) or ``"slide"`` (crops of ``crop_size``
            every ``stride`` pixels, overlaps averaged).
        crop_size, stride: ``(h, w)`` in pixels of the (scaled) input, slide mode only.
        scales: input scale factors (e.g. 0.5, 0.75, 1.0, 1.25, 1.5, 1.75).
        flip: also run the left-right flipped input.
        window_batch: windows per forward pass in slide mode.
        channels_last: feed NHWC tensors (faster on CPU).
        crf: a ``DenseCRF`` applied to the averaged probabilities (needs ``mean``/``std`` to
            recover the RGB image from the normalised input), or None.
        mean, std: the input normalisation (RGB in [0, 1]); used by the CRF only.
    """

    # the defaults are the config's eval section's (one definition: sceneparse.config.EvalConfig)
    mode: str = _EVAL.mode
    crop_size: Sequence[int] | None = _EVAL.crop_size
    stride: Sequence[int] | None = _EVAL.stride
    scales: Sequence[float] = field(default_factory=lambda: tuple(_EVAL.scales))
    flip: bool = _EVAL.flip
    window_batch: int = _EVAL.window_batch
    channels_last: bool = True
    crf: object | None = None
    mean: Sequence[float] = IMAGENET_MEAN
    std: Sequence[float] = IMAGENET_STD

    def __post_init__(self):
        if self.mode not in ("whole", "slide"):
            raise ValueError(f"mode must be 'whole' or 'slide', got {self.mode!r}")
        if self.mode == "slide":
            if not self.crop_size:
                raise ValueError("slide mode needs crop_size")
            self.crop_size = tuple(int(c) for c in self.crop_size)
            self.stride = tuple(int(s) for s in (self.stride or [max(1, c * 2 // 3) for c in self.crop_size]))
            if min(self.stride) < 1 or any(s > c for s, c in zip(self.stride, self.crop_size)):
                raise ValueError(f"stride {self.stride} must be in [1, crop_size {self.crop_size}]")
        if not self.scales or min(self.scales) <= 0:
            raise ValueError(f"scales must be positive, got {self.scales}")


    @classmethod
    def from_cfg(cls, cfg, **overrides) -> "InferenceConfig":
        """From a config's ``eval`` section (and ``data.mean``/``std``), e.g. for validation during
        training; ``overrides`` (e.g. the command line's flags, ``channels_last``) win."""
        e, d = cfg["eval"], cfg["data"]
        values = {"mode": e["mode"], "crop_size": e["crop_size"], "stride": e["stride"],
                  "scales": tuple(e["scales"]), "flip": bool(e["flip"]), "window_batch": int(e["window_batch"]),
                  "mean": tuple(d["mean"]), "std": tuple(d["std"])}
        return cls(**{**values, **overrides})

    @classmethod
    def for_config(cls, cfg: dict | None = None, **overrides) -> "InferenceConfig":
        """:meth:`from_cfg` for a config dict that may predate the ``eval`` section (a checkpoint's, or
        none at all): missing keys take today's defaults."""
        from ..config import load_config, to_dict

        if cfg is None or "eval" not in cfg:  # only the eval section and the normalisation are read
            defaults = to_dict(load_config())
            data = {**defaults["data"], **{k: v for k, v in (cfg or {}).get("data", {}).items() if k in ("mean", "std")}}
            cfg = {"eval": defaults["eval"], "data": data}
        return cls.from_cfg(cfg, **overrides)


def _logits(model, x: torch.Tensor, channels_last: bool, float32: bool = True) -> torch.Tensor:
    """The model's ``"out"`` for ``x``: at the input size, or at the decode head's resolution for a model
    whose eval logits are not upsampled (``set_eval_logit_upsampling(False)``); float32, or the model's own
    dtype (bf16 under the bf16 fast path) with ``float32=False``."""
    # bf16 weights (the fast path) take bf16 inputs; a runtime backend (engine.backends) says what it takes
    dtype = getattr(model, "input_dtype", None) or next(model.parameters()).dtype
    if x.dtype != dtype:
        x = x.to(dtype)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    out = model(x)["out"]
    return out.float() if float32 else out


def _forward(model, x: torch.Tensor, channels_last: bool) -> torch.Tensor:
    logits = _logits(model, x, channels_last)
    if logits.shape[-2:] != x.shape[-2:]:  # low-resolution logits: upsampled in float32, as the model would
        logits = F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)
    return logits.softmax(1)


def upsample_argmax(logits: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """``F.interpolate(logits, size, mode="bilinear", align_corners=False).argmax(1)`` without building the
    ``(N, K, H, W)`` float tensor.

    Two implementations, same labels:

    * **native** (CPU, default): :mod:`sceneparse.kernels.native`, a small C kernel compiled on first use
      (about a second, cached) that upsamples each low-resolution row along the width once, then blends two
      rows per class for every output row and keeps the running maximum, vectorised over the row. PyTorch's
      index/weight rule and two-tap arithmetic; labels equal PyTorch's except where the two best classes'
      upsampled scores are within a rounding error of each other (ulp-level ties: 47 of 11.6 M pixels in the
      random-shape test, all with a gap <= 2.4e-7). 0.45 ms for 11 classes 23x30 -> 360x480 on a Xeon core.
    * **planes** (fallback: no C compiler, ``SCENEPARSE_NATIVE=0``, GPU tensors): each class's plane is
      upsampled by ``F.interpolate`` (bitwise PyTorch's values) and compared with the running maximum. 3.1 ms.

    Both keep the lower class id on ties (strictly greater wins), as ``argmax`` does. Logits already at
    ``size`` go through the native kernel too: its argmax is exact there and 20x faster than
    ``logits.argmax(1)`` over the classes of a ``(1, K, H, W)`` tensor. Why it matters:
    ``argmax`` over the class dimension of a ``(1, K, H, W)`` tensor is a strided reduction, slow on CPU;
    with the softmax the engine used to apply first it took 35 ms for 11 classes at 360x480 on a 2-core
    Xeon, 2.5x the network's time. (Tried and dropped for the planes path: bf16 planes 4.5 ms, an
    Inductor-compiled running max 6.2, copying the class of low-resolution cells whose four corners agree
    5.1 on real logits.)

    Args:
        logits: ``(N, K, h, w)`` scores, any float dtype, upsampled in float32. The result is undefined for
            non-finite scores (the two paths and ``torch.argmax`` may disagree on NaN / inf); the models never
            produce them.
        size: ``(H, W)`` output size in pixels.

    Returns:
        ``(N, H, W)`` int64 class ids.
    """
    size = tuple(int(s) for s in size)
    from ..kernels import native  # the kernel is an engine detail: models import nothing from here

    labels = native.upsample_argmax(logits, size)
    return labels if labels is not None else upsample_argmax_planes(logits, size)


def upsample_argmax_planes(logits: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """The pure PyTorch path of :func:`upsample_argmax` (same arguments and result): per-class planes from
    ``F.interpolate`` and a running maximum; bitwise PyTorch's upsampled values, any device."""
    logits = logits.float().contiguous()
    size = tuple(int(s) for s in size)
    if logits.shape[-2:] == size:
        return logits.argmax(1)
    best = F.interpolate(logits[:, :1], size=size, mode="bilinear", align_corners=False)
    labels = torch.zeros(best.shape, dtype=torch.uint8 if logits.shape[1] <= 256 else torch.int64,
                         device=logits.device)
    for c in range(1, logits.shape[1]):
        plane = F.interpolate(logits[:, c:c + 1], size=size, mode="bilinear", align_corners=False)
        labels.masked_fill_(plane > best, c)
        torch.maximum(best, plane, out=best)
    return labels[:, 0].long()


def window_starts(size: int, crop: int, stride: int) -> list[int]:
    """Start offsets covering ``[0, size)`` with windows of ``crop`` every ``stride``; the last flush with the end."""
    if size <= crop:
        return [0]
    n = math.ceil((size - crop) / stride) + 1
    return sorted({min(i * stride, size - crop) for i in range(n)})


def slide_probs(model, x: torch.Tensor, crop_size: Sequence[int], stride: Sequence[int], window_batch: int = 4,
                channels_last: bool = True) -> torch.Tensor:
    """Sliding-window probabilities for ``x`` ``(N, 3, H, W)``; images smaller than the crop are
    zero-padded (the normalised mean colour) at the bottom/right and the padding is cut off."""
    n, _, h, w = x.shape
    ch, cw = crop_size
    ph, pw = max(ch - h, 0), max(cw - w, 0)
    if ph or pw:
        x = F.pad(x, (0, pw, 0, ph))
    H, W = x.shape[-2:]
    boxes = [(y, xx) for y in window_starts(H, ch, stride[0]) for xx in window_starts(W, cw, stride[1])]
    probs = count = None
    for i in range(n):
        for b in range(0, len(boxes), window_batch):
            chunk = boxes[b: b + window_batch]
            crops = torch.stack([x[i, :, y:y + ch, xx:xx + cw] for y, xx in chunk])
            p = _forward(model, crops, channels_last)
            if probs is None:
                probs = x.new_zeros((n, p.shape[1], H, W), dtype=torch.float32)
                count = x.new_zeros((1, 1, H, W), dtype=torch.float32)
            for (y, xx), pc in zip(chunk, p):
                probs[i, :, y:y + ch, xx:xx + cw] += pc
                if i == 0:
                    count[0, 0, y:y + ch, xx:xx + cw] += 1
    return (probs / count)[..., :h, :w]


@torch.inference_mode()
def infer_probs(model, image: torch.Tensor, cfg: InferenceConfig | None = None) -> torch.Tensor:
    """Class probabilities for ``image`` ``(3, H, W)`` or ``(N, 3, H, W)`` (normalised float, on the model's device).

    Returns:
        float32 ``(N, K, H, W)``, each pixel's probabilities summing to 1.
    """
    cfg = cfg or InferenceConfig()
    x = image[None] if image.ndim == 3 else image
    h, w = x.shape[-2:]
    total = None
    rule = geometry_rule(model) if cfg.mode == "whole" else None
    for scale in cfg.scales:
        if scale == 1:
            xs = x
        elif min(h, w) * scale >= 1:
            xs = F.interpolate(x, scale_factor=scale, mode="bilinear", align_corners=False)
        else:  # a side that would scale to 0 pixels keeps 1
            xs = F.interpolate(x, size=(max(1, int(h * scale)), max(1, int(w * scale))), mode="bilinear",
                               align_corners=False)
        if rule is not None:  # the size whose output geometry is the training crops' (whole image only)
            size = tuple(rule(*xs.shape[-2:]))
            if size != tuple(xs.shape[-2:]):
                xs = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        for flip in ((False, True) if cfg.flip else (False,)):
            xi = xs.flip(-1) if flip else xs
            if cfg.mode == "slide":
                p = slide_probs(model, xi, cfg.crop_size, cfg.stride, cfg.window_batch, cfg.channels_last)
            else:
                p = _forward(model, xi, cfg.channels_last)
            if flip:
                p = p.flip(-1)
            if p.shape[-2:] != (h, w):
                p = F.interpolate(p, size=(h, w), mode="bilinear", align_corners=False)
            total = p if total is None else total + p
    probs = total / (len(cfg.scales) * (2 if cfg.flip else 1))
    if cfg.crf is not None:
        mean = x.new_tensor(cfg.mean)[:, None, None]
        std = x.new_tensor(cfg.std)[:, None, None]
        for i in range(x.shape[0]):
            rgb = ((x[i] * std + mean) * 255).round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0)
            probs[i] = cfg.crf(probs[i], rgb.cpu().numpy())
    return probs


def geometry_rule(model):
    """The model's ``input_size_for(height, width)`` (``SegmentationModel.input_size_for``: the nearest size at
    which its output geometry is that of its training crops; runtime backends have it from their
    ``input_geometry``), or None for a model without one (the pyramid model, which resizes its input itself)."""
    return getattr(model, "input_size_for", None)


def single_pass(cfg: InferenceConfig) -> bool:
    """Whether ``cfg`` runs the network once on the whole image (no window, scale, flip or CRF)."""
    return cfg.mode == "whole" and tuple(cfg.scales) == (1.0,) and not cfg.flip and cfg.crf is None


@torch.inference_mode()
def predict_labels(model, image: torch.Tensor, cfg: InferenceConfig | None = None) -> torch.Tensor:
    """Argmax class map ``(N, H, W)`` int64 of :func:`infer_probs`.

    A single whole-image pass skips the softmax (it keeps the order of the scores) and, for a model
    with low-resolution eval logits (every runtime backend too), fuses their upsampling with the argmax
    (:func:`upsample_argmax`): the same labels, measured in ``sceneparse benchmark --end-to-end``.
    """
    cfg = cfg or InferenceConfig()
    x = image[None] if image.ndim == 3 else image
    rule = geometry_rule(model)
    if single_pass(cfg) and (rule is None or tuple(rule(*x.shape[-2:])) == tuple(x.shape[-2:])):
        return upsample_argmax(_logits(model, x, cfg.channels_last, float32=False), x.shape[-2:])
    return infer_probs(model, image, cfg).argmax(1)


def inference_mode_for(height: int, width: int, infer: InferenceConfig | None = None,
                       max_whole_pixels: int = 2048 * 2048, auto_crop: tuple[int, int] = (1024, 1024),
                       name: str | Path = "image") -> InferenceConfig:
    """``infer`` (default whole image), except that an image above ``max_whole_pixels`` under whole-image
    inference gets a sliding window of ``auto_crop`` (same scales and flip): memory stays bounded (logged)."""
    mode = infer or InferenceConfig()
    if mode.mode == "whole" and height * width > max_whole_pixels:
        log.info("%s is %dx%d: sliding window %dx%d instead of whole-image inference", name, width, height,
                 auto_crop[1], auto_crop[0])
        mode = InferenceConfig(mode="slide", crop_size=auto_crop, scales=mode.scales, flip=mode.flip, window_batch=1,
                               channels_last=mode.channels_last, mean=mode.mean, std=mode.std)
    return mode
