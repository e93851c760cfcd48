"""Parsing new images: palette label PNGs and colour overlays."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch
from PIL import Image

from ..data.base import DataError, read_image
from .inference import InferenceConfig, predict_labels

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}


def expand_inputs(inputs: Iterable[str | Path]) -> list[Path]:
    """Files as given, and the image files (by suffix, sorted) of any directory given."""
    out: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            out += sorted(f for f in p.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
        else:
            out.append(p)
    return out


def palette_image(label: np.ndarray, palette: Sequence[Sequence[int]]) -> Image.Image:
    """``(H, W)`` uint8 ids -> palette ('P' mode) PIL image; the ids stay readable as pixel values."""
    img = Image.fromarray(label.astype(np.uint8), mode="P")
    flat = [c for rgb in palette for c in rgb]
    img.putpalette(flat + [0] * (768 - len(flat)))
    return img


def overlay(image: np.ndarray, label: np.ndarray, palette: Sequence[Sequence[int]], alpha: float = 0.5) -> np.ndarray:
    """Blend class colours over an ``(H, W, 3)`` uint8 image; ids outside the palette (e.g. 255) stay unblended."""
    lut = np.zeros((256, 3), dtype=np.float32)
    lut[: len(palette)] = np.asarray(palette, dtype=np.float32)
    colour = lut[label]
    valid = (label < len(palette))[..., None]
    blended = np.where(valid, (1 - alpha) * image + alpha * colour, image)
    return blended.clip(0, 255).astype(np.uint8)


def normalise(image: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    x = torch.from_numpy(image.copy()).permute(2, 0, 1).float() / 255.0
    return (x - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]


def predict_files(model: torch.nn.Module, meta: dict, paths: Sequence[Path], out_dir: str | Path,
                  device: torch.device | str = "cpu", progress: bool = True,
                  infer: InferenceConfig | None = None, max_whole_pixels: int = 2048 * 2048,
                  auto_crop: tuple[int, int] = (1024, 1024)) -> tuple[list[Path], dict[Path, str]]:
    """Parse every image; write ``<stem>.png`` (palette label map) and ``<stem>_overlay.jpg``.

    A missing, corrupt or unreadable file is reported and skipped; the others are still parsed.
    An image above ``max_whole_pixels`` under whole-image inference is parsed with a sliding
    window of ``auto_crop`` instead (memory stays bounded; logged).

    Returns:
        ``(written label paths, {failed input: error message})``.
    """
    from tqdm import tqdm

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written, failed = [], {}
    model.eval()
    for path in tqdm(paths, desc="predict", disable=not progress):
        try:
            image = read_image(path)
        except DataError as e:
            log.error("%s", e)
            failed[path] = str(e)
            continue
        x = normalise(image, meta["mean"], meta["std"]).to(device)
        mode = infer or InferenceConfig()
        if mode.mode == "whole" and image.shape[0] * image.shape[1] > max_whole_pixels:
            log.info("%s is %dx%d: sliding window %dx%d instead of whole-image inference", path,
                     image.shape[1], image.shape[0], auto_crop[1], auto_crop[0])
            mode = InferenceConfig(mode="slide", crop_size=auto_crop, scales=mode.scales, flip=mode.flip,
                                   window_batch=1)
        label = predict_labels(model, x, mode)[0].cpu().numpy().astype(np.uint8)
        target = out_dir / f"{path.stem}.png"
        palette_image(label, meta["palette"]).save(target)
        Image.fromarray(overlay(image, label, meta["palette"])).save(out_dir / f"{path.stem}_overlay.jpg", quality=90)
        written.append(target)
    return written, failed
