"""Video in -> overlay video out: every frame through the same inference engine as images (PyAV, the
``video`` extra: ``pip install 'sceneparse[video]'``)."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image

from ..data.base import DataError
from ..utils.io import write_atomically
from .engine import InferenceConfig, predict_labels  # noqa: F401  (InferenceConfig: annotations)

log = logging.getLogger(__name__)

VIDEO_SUFFIXES = (".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v")


def _av():
    try:
        import av
    except ImportError as e:
        raise DataError("video input needs PyAV: pip install 'sceneparse[video]'") from e
    return av


def plan_video_output(path: Path, out_dir: Path, taken: Sequence[Path] = ()) -> Path:
    """``out_dir/<stem>_overlay.mp4``, or ``_2``, ``_3``... when that name exists or is ``path`` itself."""
    base, n = f"{path.stem}_overlay", 1
    target = out_dir / f"{base}.mp4"
    while target.exists() or target.resolve() == path.resolve() or target in taken:
        n += 1
        target = out_dir / f"{base}_{n}.mp4"
    return target


@torch.inference_mode()
def predict_video(model: torch.nn.Module, meta: dict, path: str | Path, out_dir: str | Path,
                  device: torch.device | str = "cpu", infer: InferenceConfig | None = None, alpha: float = 0.5,
                  legend: bool = True, progress: bool = True, max_frames: int | None = None) -> tuple[Path, int]:
    """Parse every frame of the video ``path`` and write ``out_dir/<stem>_overlay.mp4`` (H.264, the input's
    frame rate; odd frame sizes padded by one pixel for the encoder), never over an existing file.

    Returns:
        ``(output path, frames written)``.

    Raises:
        DataError: PyAV missing, or the file cannot be opened / has no video stream (message names it).
    """
    from tqdm import tqdm

    from ..data.transforms import normalize_image
    from .engine import inference_mode_for
    from .vis import draw_legend, overlay

    av = _av()
    path, out_dir = Path(path), Path(out_dir)
    target = plan_video_output(path, out_dir)
    try:
        src = av.open(str(path))
    except Exception as e:
        raise DataError(f"cannot read video {path}: {e}") from e
    frames = 0

    def write(tmp: Path) -> None:
        nonlocal frames
        with src, av.open(str(tmp), "w") as dst:
            if not src.streams.video:
                raise DataError(f"{path} has no video stream")
            stream = src.streams.video[0]
            rate = stream.average_rate or 25
            out = mode = None
            total = stream.frames or None
            if max_frames:
                total = min(total or max_frames, max_frames)
            for frame in tqdm(src.decode(stream), total=total, desc=path.name, disable=not progress):
                if max_frames and frames >= max_frames:
                    break
                rgb = frame.to_ndarray(format="rgb24")
                x = normalize_image(rgb, meta["mean"], meta["std"])[None].to(device)
                mode = inference_mode_for(rgb.shape[0], rgb.shape[1], infer, name=path) if frames == 0 else mode
                label = predict_labels(model, x, mode)[0].cpu().numpy()
                image = Image.fromarray(overlay(rgb, label, meta["palette"], alpha))
                if legend and "classes" in meta:
                    image = draw_legend(image, label, meta["classes"], meta["palette"])
                h, w = rgb.shape[:2]
                if out is None:
                    codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
                    out = dst.add_stream(codec, rate=rate)
                    out.width, out.height, out.pix_fmt = w + w % 2, h + h % 2, "yuv420p"
                array = np.asarray(image)
                if (h, w) != (out.height, out.width):
                    array = np.pad(array, ((0, out.height - h), (0, out.width - w), (0, 0)), mode="edge")
                for packet in out.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(array), format="rgb24")):
                    dst.mux(packet)
                frames += 1
            if out is None:
                raise DataError(f"{path}: no frame could be decoded")
            for packet in out.encode():
                dst.mux(packet)

    try:
        write_atomically(target, write)
    except DataError:
        raise
    except (av.error.FFmpegError if hasattr(av, "error") else Exception) as e:
        raise DataError(f"cannot read video {path}: {e}") from e
    return target, frames
