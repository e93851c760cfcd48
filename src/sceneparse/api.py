"""The Python inference API: ``seg = sceneparse.load(); labels = seg("photo.jpg")``.

``load`` builds a :class:`Segmenter` from a packaged model (``list_models()``) or any checkpoint /
packed file, with the inference engine's settings (whole / slide, scales, flip, bf16) as keywords.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence, Union

import numpy as np
import torch
from PIL import Image

from .constants import DEFAULT_MODEL

ImageLike = Union[str, Path, Image.Image, np.ndarray, torch.Tensor]


def _summary(path: Path, ckpt: dict) -> dict:
    from .hub import output_stride_of, retrain_command

    cfg, meta = ckpt.get("config", {}), ckpt.get("meta", {})
    m, metrics = cfg.get("model", {}), ckpt.get("metrics") or {}
    out = {"path": str(path), "size_mb": round(path.stat().st_size / 2**20, 1), "dataset": meta.get("dataset"),
           "num_classes": len(meta.get("classes", [])), "arch": m.get("arch"), "backbone": m.get("backbone"),
           "output_stride": output_stride_of(m), "crop_size": cfg.get("data", {}).get("crop_size"),
           "train_splits": meta.get("train_splits", [cfg.get("data", {}).get("train_split", "train")])}
    if metrics:
        out["metrics"] = {k: round(float(metrics[k]), 2) for k in ("mIoU", "aAcc", "mAcc") if k in metrics}
        if isinstance(metrics.get("boundary"), dict) and "F" in metrics["boundary"]:
            out["metrics"]["boundary_F"] = round(float(metrics["boundary"]["F"]), 2)
        out["metrics"]["split"] = metrics.get("split")
        if isinstance(metrics.get("IoU"), dict):
            out["metrics"]["IoU"] = {k: None if v is None else round(float(v), 2) for k, v in metrics["IoU"].items()}
    if "recipe" in meta:
        out["recipe"] = meta["recipe"]
    if m and (command := retrain_command(cfg)):
        out["retrain"] = command
    return out


def list_models() -> dict[str, dict]:
    """The models of the zoo (:func:`sceneparse.hub.available_models`: packaged, then the model folders):
    ``{name: summary}``, the summary holding ``path``, ``size_mb`` (MiB), ``dataset``, ``num_classes``, ``arch``,
    ``backbone``, ``output_stride``, ``crop_size``, ``train_splits``, the validation ``metrics`` (mIoU / aAcc /
    mAcc / boundary_F in percent, per-class ``IoU``, and the split) and the ``recipe`` when the file carries
    them, ``retrain`` (the ``sceneparse train`` command, :func:`sceneparse.hub.retrain_command`) where a shipped
    config has the model's config name, ``packaged`` (inside the package or from a model folder) and ``default: True`` for the one
    ``load()`` uses without a name. A file that cannot be read is listed with its ``error`` only."""
    from .checkpoint import load_checkpoint
    from .hub import available_models, packaged_weights
    from .utils.errors import first_line

    packaged = packaged_weights()
    out = {}
    for name, path in available_models().items():
        try:
            summary = _summary(path, load_checkpoint(path))
        except (ValueError, OSError) as e:  # one bad file in a model folder must not hide the others
            summary = {"path": str(path), "error": first_line(e)}
        out[name] = {**summary, "packaged": name in packaged, "default": name == DEFAULT_MODEL}
    return out


def model_speed(name_or_path: str | Path | None = None, repeats: int = 5, warmup: int = 1,
                image: ImageLike | None = None) -> dict:
    """Median seconds per image of ``load(name)(image)`` on this machine (fp32, BN folded, whole image, single
    scale: decode-free, from an RGB array to the label map), with the CPU model and thread count. ``image``:
    default the packaged 480x360 street photo (:func:`sample_image`).

    Returns:
        ``{"s_per_image": median, "image": [H, W], "repeats", "threads", "cpu"}``.
    """
    import statistics
    import time

    from .utils.sysinfo import cpu_model

    seg = load(name_or_path, device="cpu")
    rgb = np.asarray(Image.open(image or sample_image()).convert("RGB")) if not isinstance(image, np.ndarray) else image
    times = []
    for i in range(warmup + repeats):
        t0 = time.perf_counter()
        seg(rgb)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return {"s_per_image": statistics.median(times), "image": list(rgb.shape[:2]), "repeats": repeats,
            "threads": torch.get_num_threads(), "cpu": cpu_model()}


def resolve_model(name_or_path: str | Path | None = None) -> Path:
    """A packaged model's file (``None``: the default one) or an existing file path.

    Raises:
        ValueError: neither a packaged name nor an existing file (the message lists the names).
    """
    from .hub import resolve_weights

    return resolve_weights(name_or_path)


class Segmenter:
    """A model ready to parse images; made by :func:`load`.

    ``seg(image)`` -> ``(H, W)`` uint8 class ids (int32 for more than 256 classes) at the image's size;
    ``seg.probs(image)`` -> ``(K, H, W)`` float32 softmax probabilities; ``seg.overlay(image)`` -> PIL image.
    ``image``: a PIL image (any mode; converted to RGB as given, EXIF orientation not applied), an
    ``(H, W, 3)`` uint8 RGB array, or a file path (read like ``sceneparse predict`` reads it: EXIF
    orientation applied, size checked before decoding).

    Attributes:
        classes: class names ``[K]``; palette: ``[K][3]`` RGB; meta: the checkpoint's metadata (dataset,
        mean/std, classes, palette, ``train_splits``, ``crop_size``, ``metrics``, ``recipe`` where present,
        ``source`` file); inference: the :class:`~sceneparse.inference.engine.InferenceConfig` used;
        model: the ``torch.nn.Module`` prepared for inference (its eval ``"out"`` is at the decode head's
        resolution where the architecture supports it: the engine upsamples; a
        :class:`~sceneparse.deploy.backends.RuntimeModel` under ``backend="openvino"/"onnxruntime"``);
        device: its ``torch.device``.
    """

    def __init__(self, model: torch.nn.Module, ckpt: dict, device: torch.device, inference, source: Path,
                 max_whole_pixels: int = 2048 * 2048):
        self.model, self.device, self.inference = model, device, inference
        self.max_whole_pixels = max_whole_pixels
        summary = _summary(source, ckpt)
        self.meta = {**ckpt.get("meta", {}), "crop_size": summary["crop_size"], "train_splits": summary["train_splits"],
                     "source": str(source), **{k: summary[k] for k in ("metrics", "recipe") if k in summary}}
        self.classes: list[str] = list(self.meta["classes"])
        self.palette: list[list[int]] = [list(c) for c in self.meta["palette"]]

    def __repr__(self) -> str:
        i = self.inference
        return (f"Segmenter({Path(self.meta['source']).name}: {len(self.classes)} classes of "
                f"{self.meta.get('dataset')}, {i.mode}, scales {list(i.scales)}, flip {i.flip}, {self.device})")

    def _rgb(self, image: ImageLike) -> np.ndarray:
        from .data.base import pil_to_rgb, read_image

        if isinstance(image, (str, Path)):
            return read_image(image)
        if isinstance(image, Image.Image):
            return pil_to_rgb(image)
        if isinstance(image, torch.Tensor):
            return self._rgb(_tensor_to_rgb(image))
        if isinstance(image, np.ndarray):
            if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8 or min(image.shape[:2]) < 1:
                raise ValueError(f"expected an (H, W, 3) uint8 RGB array, got shape {image.shape} {image.dtype}")
            return image
        raise TypeError("expected a PIL image, an (H, W, 3) uint8 array, a (3, H, W) tensor or a path (or a list "
                        f"of them, or an (N, 3, H, W) tensor / (N, H, W, 3) array batch), got {type(image).__name__}")

    def _input(self, rgb: np.ndarray):
        from .data.transforms import normalize_image
        from .inference.engine import inference_mode_for

        x = normalize_image(rgb, self.meta["mean"], self.meta["std"])[None].to(self.device)
        return x, inference_mode_for(rgb.shape[0], rgb.shape[1], self.inference, self.max_whole_pixels)

    def _batch(self, images) -> list[np.ndarray] | None:
        """The RGB arrays of a batch (list / tuple, 4-D tensor or array), ``None`` for a single image."""
        if isinstance(images, (list, tuple)):
            if not images:
                raise ValueError("an empty list of images")
            return [self._rgb(im) for im in images]
        if isinstance(images, torch.Tensor) and images.dim() == 4:
            return [self._rgb(im) for im in images]
        if isinstance(images, np.ndarray) and images.ndim == 4:
            return [self._rgb(im) for im in images]
        return None

    @torch.inference_mode()
    def probs(self, image: ImageLike | Sequence[ImageLike]) -> np.ndarray | list[np.ndarray]:
        """``(K, H, W)`` float32 class probabilities at the image's size (averaged over the TTA views); for a
        list, a list of them; for an ``(N, 3, H, W)`` tensor or ``(N, H, W, 3)`` array, ``(N, K, H, W)``."""
        from .inference.engine import infer_probs

        batch = self._batch(image)
        if batch is not None:
            out = [self.probs(rgb) for rgb in batch]
            return out if isinstance(image, (list, tuple)) else np.stack(out)
        x, mode = self._input(self._rgb(image))
        return infer_probs(self.model, x, mode)[0].float().cpu().numpy()

    @torch.inference_mode()
    def __call__(self, image: ImageLike | Sequence[ImageLike]) -> np.ndarray | list[np.ndarray]:
        """``(H, W)`` class ids (uint8; int32 above 256 classes) at the image's size. A list of images (any
        sizes) gives a list of label maps; an ``(N, 3, H, W)`` tensor (uint8 0-255, or float in [0, 1] as
        torchvision's ``to_tensor`` makes) or an ``(N, H, W, 3)`` uint8 array gives ``(N, H, W)``.

        Raises:
            ValueError / TypeError: an input of another shape, dtype or type (message says which).
        """
        from .inference.engine import predict_labels

        batch = self._batch(image)
        if batch is not None:
            out = [self(rgb) for rgb in batch]
            return out if isinstance(image, (list, tuple)) else np.stack(out)
        x, mode = self._input(self._rgb(image))
        labels = predict_labels(self.model, x, mode)[0].cpu().numpy()
        return labels.astype(np.uint8 if len(self.classes) <= 256 else np.int32)

    def overlay(self, image: ImageLike, alpha: float = 0.5, legend: bool = True) -> Image.Image:
        """The image with the class colours blended in (``alpha`` in [0, 1]: the colours' weight) and, with
        ``legend``, a box listing the classes present, their colours and pixel shares. Same size as the image.

        Raises:
            ValueError: ``alpha`` outside [0, 1].
        """
        from .inference.vis import draw_legend, overlay

        if not 0 <= alpha <= 1:
            raise ValueError(f"alpha must be in [0, 1], got {alpha}")
        rgb = self._rgb(image)
        labels = self(rgb)
        out = Image.fromarray(overlay(rgb, labels, self.palette, alpha))
        return draw_legend(out, labels, self.classes, self.palette) if legend else out


def sample_image() -> Path:
    """The path of a photo that ships with the package (a 480x360 CamVid validation street scene, CC BY-NC
    4.0; see ``sceneparse/assets/README.md``): a first ``seg(sceneparse.sample_image())`` needs no file."""
    return Path(__file__).parent / "assets" / "street.jpg"


def _tensor_to_rgb(t: torch.Tensor) -> np.ndarray:
    """A ``(3, H, W)`` tensor (uint8 0-255, or floating point in [0, 1]) as an ``(H, W, 3)`` uint8 array.

    Raises:
        ValueError: another shape, or floating-point values outside [0, 1] (e.g. an already normalised tensor).
    """
    if t.dim() != 3 or t.shape[0] != 3:
        raise ValueError(f"expected a (3, H, W) or (N, 3, H, W) RGB tensor, got shape {tuple(t.shape)}")
    t = t.detach().cpu()
    if t.dtype == torch.uint8:
        return t.permute(1, 2, 0).contiguous().numpy()
    if not t.is_floating_point():
        raise ValueError(f"expected a uint8 or floating-point tensor, got {t.dtype}")
    lo, hi = float(t.min()), float(t.max())
    if not (0.0 <= lo and hi <= 1.0):
        raise ValueError(f"a floating-point image tensor must hold values in [0, 1] (torchvision's to_tensor), "
                         f"got {lo:.3g}..{hi:.3g}; the model normalises images itself")
    return (t.float() * 255).round().to(torch.uint8).permute(1, 2, 0).contiguous().numpy()


def load(name_or_path: str | Path | None = None, *, device: str | torch.device | None = None,
         mode: str | None = None, crop_size: Sequence[int] | None = None, stride: Sequence[int] | None = None,
         scales: Sequence[float] | None = None, flip: bool | None = None, bf16: bool = False,
         output_stride: int | None = None, fold_bn: bool = True, backend: str = "torch") -> Segmenter:
    """Load a model for parsing images from Python.

    Args:
        name_or_path: a packaged model's name (:func:`list_models`; ``None``: the default, a Specialize-and-Fuse pyramid on
            CamVid's 11 road-scene classes) or a checkpoint / packed ``.pt`` / ``.safetensors`` file.
            Files are read with ``weights_only`` loading: no code in them runs.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:N"``; ``None``: CUDA if available, else CPU.
        mode, crop_size, stride, scales, flip: the inference engine's settings (``"whole"`` or ``"slide"``
            with ``crop_size``/``stride`` ``(h, w)`` in pixels; multi-scale + flip TTA averages
            probabilities); ``None`` keeps the checkpoint's ``eval`` section. An image above 4 MP under
            ``"whole"`` is parsed with a 1024x1024 sliding window instead (bounded memory).
        bf16: bfloat16 weights and inputs (faster on CPUs with AMX / AVX512-bf16 and on GPUs; labels
            may differ from float32 on a few pixels).
        output_stride: run at another output stride than the model was trained with (8 or 16; same weights).
        fold_bn: fold BatchNorm into the convolutions (same outputs up to float rounding, faster).
        backend: ``"torch"``, ``"openvino"`` or ``"onnxruntime"`` (CPU; see
            :mod:`sceneparse.deploy.backends`). An OpenVINO IR file (``sceneparse quantize``) runs on OpenVINO.

    Returns:
        a :class:`Segmenter`.

    Raises:
        ValueError: unknown name, bad device or inference setting; ``CheckpointError`` (a ValueError)
            for an unreadable or unsafe file; ``NonFiniteModelError`` for NaN weights.
    """
    from .inference.engine import InferenceConfig
    from .inference.pipeline import prepare
    from .utils.device import resolve_device

    source = resolve_model(name_or_path)
    dev = resolve_device("auto" if device is None else str(device))
    overrides = {k: v for k, v in {"mode": mode, "crop_size": crop_size, "stride": stride,
                                   "scales": None if scales is None else tuple(scales), "flip": flip}.items()
                 if v is not None}
    model, ckpt = prepare(source, backend=backend, bf16=bf16, fold_bn=fold_bn, output_stride=output_stride,
                          device=dev)
    infer = InferenceConfig.for_config(ckpt["config"], **overrides)
    return Segmenter(model, ckpt, dev, infer, source)
