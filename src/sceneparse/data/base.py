"""Base dataset: (image, label) file pairs -> normalised tensors, with label checking."""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from torch.utils.data import Dataset
from torchvision import tv_tensors

from ..constants import IGNORE_INDEX, MAX_IMAGE_PIXELS  # noqa: F401  (re-exported: data.base.IGNORE_INDEX)
from ..utils.errors import first_line


class DataError(ValueError):
    """A data file is missing, unreadable or holds values the dataset does not allow."""


def read_image(path: str | Path, max_pixels: int | None = None) -> np.ndarray:
    """Read an image file as ``(H, W, 3)`` uint8 RGB, applying EXIF orientation.

    ``max_pixels`` (default ``MAX_IMAGE_PIXELS``; ``0``: no limit): an image whose header declares more
    pixels is refused before anything is decoded.

    Grayscale, palette and RGBA images are converted to RGB (alpha dropped). 16-bit images are
    scaled to 8 bits (``v >> 8``), not clipped: PIL's own conversion saturates every value above
    255, which would turn a 16-bit photo white.

    Raises:
        DataError: the file is missing, unreadable or truncated, larger than ``max_pixels``, or a
            floating-point / 32-bit image with values beyond 16 bits (message names the file).
    """
    path = Path(path)
    limit = MAX_IMAGE_PIXELS if max_pixels is None else max_pixels
    if path.is_dir():
        raise DataError(f"{path} is a directory, not an image (give an image file)")
    if not path.is_file():
        raise DataError(f"image not found: {path}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own limit decides
            im_file = Image.open(path)
    except Image.DecompressionBombError as e:
        raise DataError(f"image {path} is too large to decode safely ({e})") from e
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise DataError(f"cannot read image {path}: {e}") from e
    w, h = im_file.size
    if limit and w * h > limit:
        im_file.close()
        raise DataError(f"image {path} is {w}x{h} = {w * h / 1e6:.0f} MP, above the limit of {limit / 1e6:.0f} MP "
                        "(a decompression bomb, or raise the limit: predict --max-image-pixels)")
    try:
        with im_file as im:
            return pil_to_rgb(ImageOps.exif_transpose(im), f"image {path}")
    except DataError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise DataError(f"cannot read image {path}: {e}") from e


def read_text(path: str | Path, what: str = "list file") -> str:
    """A dataset's text file (split list, class names) as ``str``.

    Raises:
        DataError: missing, unreadable or not UTF-8 text (one line naming the file, the line and the byte).
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise DataError(f"cannot read {what} {path}: {e.strerror or e}") from e
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise DataError(f"{what} {path}:{line}: not UTF-8 text (byte 0x{data[e.start]:02x} at offset {e.start})") from e


def pil_to_rgb(im: Image.Image, name: str = "image") -> np.ndarray:
    """A PIL image as ``(H, W, 3)`` uint8 RGB: grayscale, palette and RGBA converted (alpha dropped),
    16-bit scaled to 8 bits (``v >> 8``; PIL's own conversion would saturate above 255).

    Raises:
        DataError: a floating-point or 32-bit image with values beyond 16 bits (message starts with ``name``).
    """
    if im.mode.startswith("I") or im.mode == "F":
        arr = np.asarray(im)
        if im.mode == "F" or arr.min(initial=0) < 0 or arr.max(initial=0) > 65535:
            raise DataError(f"{name} has mode {im.mode} with values "
                            f"{arr.min(initial=0)}..{arr.max(initial=0)}; expected 8- or 16-bit")
        wide = im.mode.startswith("I;16") or arr.max(initial=0) > 255
        gray = (arr.astype(np.uint32) >> 8 if wide else arr).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=2)
    return np.asarray(im.convert("RGB"))


def require_layout(root: Path, folder: str, lists: Sequence[str], what: str, hint: str = "") -> Path:
    """``root/folder`` must be a directory and ``root/<each of lists>`` files (dataset converters).

    Raises:
        DataError: naming the first missing one (``hint``: where it should come from).
    """
    if not (root / folder).is_dir():
        raise DataError(f"{what} not found: {root / folder}{f' ({hint})' if hint else ''}")
    for name in lists:
        if not (root / name).is_file():
            raise DataError(f"split list not found: {root / name}")
    return root / folder


def read_mat(path: str | Path, **kwargs) -> dict:
    """``scipy.io.loadmat`` (MATLAB data only; it runs no code) with errors that name the file.

    Raises:
        DataError: missing, truncated or not a MATLAB file.
    """
    import scipy.io

    path = Path(path)
    if not path.is_file():
        raise DataError(f"annotation not found: {path}")
    try:
        return scipy.io.loadmat(path, **kwargs)
    except Exception as e:
        raise DataError(f"cannot read MATLAB file {path}: {first_line(e)}") from e


def read_label(path: str | Path) -> np.ndarray:
    """Read a single-channel label PNG as ``(H, W)`` uint8 (palette PNGs give their indices).

    Raises:
        DataError: missing/unreadable file, or a multi-channel (RGB) label.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"label not found: {path}")
    try:
        with Image.open(path) as im:
            if MAX_IMAGE_PIXELS and im.size[0] * im.size[1] > MAX_IMAGE_PIXELS:
                raise DataError(f"label {path} is {im.size[0]}x{im.size[1]}, above {MAX_IMAGE_PIXELS / 1e6:.0f} MP")
            if im.mode not in ("L", "P", "I", "I;16"):
                raise DataError(f"label {path} has mode {im.mode}; expected a single-channel or palette PNG "
                                "of class ids (an RGB colour label must be converted to ids first)")
            arr = np.asarray(im)
    except DataError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise DataError(f"cannot read label {path}: {e}") from e
    if arr.max(initial=0) > 255:
        raise DataError(f"label {path} has values > 255")
    return arr.astype(np.uint8)


def _value_ranges(values: np.ndarray) -> str:
    """Sorted integers as runs: ``[0, 1, 2, 11, 255]`` -> ``"0-2, 11, 255"``."""
    runs, start = [], None
    for i, v in enumerate(values.tolist()):
        if start is None:
            start = v
        if i + 1 == len(values) or values[i + 1] != v + 1:
            runs.append(str(start) if start == v else f"{start}-{v}")
            start = None
    return ", ".join(runs)


class SegmentationDataset(Dataset):
    """Image/label pairs with a label lookup table.

    Subclasses set ``CLASSES`` (names), ``PALETTE`` (RGB per class) and build
    ``self.pairs`` (list of ``(image_path, label_path)``) and ``self.label_map``
    (``uint8[256]``: raw label value -> train id or 255; raw values mapped to
    ``INVALID`` are reported as errors).

    ``__getitem__(i)`` returns ``{"image": float32 (3, H, W) normalised,
    "label": int64 (H, W) in [0, K) or 255, "name": str}``. ``i`` may also be an
    ``(epoch, index)`` pair: the augmentation RNG is then seeded from
    ``(seed, epoch, index)``, which makes training reproducible and exactly
    resumable whatever the number of loader workers.
    """

    CLASSES: Sequence[str] = ()
    PALETTE: Sequence[tuple[int, int, int]] = ()
    INVALID = 254  # internal marker in label_map for values that must not occur

    def __init__(self, transform: Callable | None = None, seed: int = 0):
        self.transform, self.seed = transform, seed
        self.pairs: list[tuple[Path, Path]] = []
        self.label_map = np.full(256, self.INVALID, dtype=np.uint8)

    @property
    def num_classes(self) -> int:
        return len(self.CLASSES)

    def extra_scores(self, scores: dict, conf: torch.Tensor) -> dict:
        """Benchmark-specific scores from the split's ``scores`` and ``(K, K)`` confusion matrix (rows:
        ground truth), added to the evaluation results; none by default."""
        return {}

    def __len__(self) -> int:
        return len(self.pairs)

    def _check_pairs(self, source: str) -> None:
        if not self.pairs:
            raise DataError(f"no image/label pairs found in {source}")

    def load_label(self, path: Path) -> np.ndarray:
        """Read a label and map it to train ids; raise ``DataError`` naming the file on bad values."""
        raw = read_label(path)
        mapped = self.label_map[raw]
        if (mapped == self.INVALID).any():
            bad = np.unique(raw[mapped == self.INVALID])
            allowed = np.flatnonzero(self.label_map != self.INVALID)
            ignored = np.flatnonzero(self.label_map == IGNORE_INDEX)
            raise DataError(f"label {path} has values {bad.tolist()[:10]} outside the {self.num_classes} "
                            f"classes of {type(self).__name__} (allowed: {_value_ranges(allowed)}; "
                            f"{_value_ranges(ignored)} = ignore)")
        return mapped

    def cache_decoded(self, max_bytes: int = 2 << 30) -> bool:
        """Decode every pair once and keep the uint8 arrays (image + mapped label) in memory, so that training
        epochs stop decoding files; DataLoader workers forked afterwards share them. Only when their decoded
        size (from the file headers) is at most ``max_bytes``. Returns whether the pairs are cached.

        Raises:
            DataError: a file that cannot be read (as :meth:`load_pair`).
        """
        total = 0
        for img_path, _ in self.pairs:
            try:
                with Image.open(img_path) as im:
                    total += im.size[0] * im.size[1] * 4  # RGB + label bytes per pixel
            except (UnidentifiedImageError, OSError) as e:
                raise DataError(f"cannot read image {img_path}: {e}") from e
            if total > max_bytes:
                return False
        cache = getattr(self, "_decoded", {})
        for index, pair in enumerate(self.pairs):
            if pair not in cache:
                cache[pair] = self.load_pair(index)
        self._decoded = cache
        return True

    def load_pair(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        pair = self.pairs[index]
        cached = getattr(self, "_decoded", {}).get(pair)
        if cached is not None:
            return cached
        img_path, lbl_path = pair
        image, label = read_image(img_path), self.load_label(lbl_path)
        if image.shape[:2] != label.shape:
            raise DataError(f"size mismatch: image {img_path} is {image.shape[1]}x{image.shape[0]}, "
                            f"label {lbl_path} is {label.shape[1]}x{label.shape[0]}")
        return image, label

    def __getitem__(self, item):
        epoch, index = item if isinstance(item, tuple) else (0, item)
        image, label = self.load_pair(index)
        img = tv_tensors.Image(torch.from_numpy(image.copy()).permute(2, 0, 1))
        lbl = tv_tensors.Mask(torch.from_numpy(label.copy()))
        if self.transform is not None:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed((self.seed * 1_000_003 + epoch * 100_003 + index) % (2**63))
                img, lbl = self.transform(img, lbl)
        return {"image": img.as_subclass(torch.Tensor), "label": lbl.as_subclass(torch.Tensor).long(),
                "name": Path(self.pairs[index][0]).name}
