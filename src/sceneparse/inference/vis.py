"""Pictures of a label map: palette PNGs, colour overlays with class boundaries, and the legend of the
classes present (colours, names, pixel shares), placed where it hides least."""
from __future__ import annotations

from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont


def palette_image(label: np.ndarray, palette: Sequence[Sequence[int]]) -> Image.Image:
    """``(H, W)`` ids -> palette ('P' mode) PIL image; the ids stay readable as pixel values. Above 256
    classes (a palette PNG holds 256 colours): a 16-bit greyscale PNG of the ids instead.

    Raises:
        ValueError: ids above 65535.
    """
    if len(palette) > 256 or int(label.max(initial=0)) > 255:
        if int(label.max(initial=0)) > 65535:
            raise ValueError("class ids above 65535 do not fit a 16-bit PNG")
        return Image.fromarray(label.astype(np.uint16))
    img = Image.fromarray(label.astype(np.uint8), mode="P")
    flat = [c for rgb in palette for c in rgb]
    img.putpalette(flat + [0] * (768 - len(flat)))
    return img


def class_boundaries(label: np.ndarray) -> np.ndarray:
    """``(H, W)`` bool: pixels whose right or lower neighbour has another class id."""
    edge = np.zeros(label.shape, dtype=bool)
    edge[:, :-1] |= label[:, :-1] != label[:, 1:]
    edge[:-1, :] |= label[:-1, :] != label[1:, :]
    return edge


def overlay(image: np.ndarray, label: np.ndarray, palette: Sequence[Sequence[int]], alpha: float = 0.5,
            boundaries: bool = True) -> np.ndarray:
    """Blend class colours over an ``(H, W, 3)`` uint8 image; ids outside the palette (e.g. 255) stay unblended.
    ``boundaries``: class borders drawn as 1-px dark lines, so that a class whose colour is close to what it
    covers (CamVid's grey Sky over a grey sky) still shows where it is."""
    lut = np.zeros((max(256, len(palette), int(label.max(initial=0)) + 1), 3), dtype=np.float32)
    lut[: len(palette)] = np.asarray(palette, dtype=np.float32)
    colour = lut[label]
    valid = (label < len(palette))[..., None]
    blended = np.where(valid, (1 - alpha) * image + alpha * colour, image)
    if boundaries and alpha > 0:
        blended[class_boundaries(label)] *= 0.25
    return blended.clip(0, 255).astype(np.uint8)


def class_shares(label: np.ndarray, num_classes: int) -> np.ndarray:
    """Share of the pixels of ``label`` ``(H, W)`` in each class ``(num_classes,)`` float64 in [0, 1];
    ids outside ``[0, num_classes)`` (e.g. 255) count towards no class but towards the total."""
    counts = np.bincount(label.ravel(), minlength=max(num_classes, int(label.max(initial=0)) + 1))
    return counts[:num_classes] / max(label.size, 1)


def draw_legend(image: Image.Image, label: np.ndarray, classes: Sequence[str],
                palette: Sequence[Sequence[int]]) -> Image.Image:
    """A copy of ``image`` (the overlay) with a legend box: one row per class present in ``label``, largest
    pixel share first, with its colour, name and share in percent. The font scales with the image
    (``min(H, W) / 36``, at least 9 px: about a tenth of a 480x360 image for 11 classes); rows that do not
    fit become ``+N more``. The box goes into the corner where it hides the fewest class borders (the
    least detail; top-left on ties). The image size is unchanged."""

    shares = class_shares(label, len(classes))
    present = [c for c in np.argsort(-shares, kind="stable") if shares[c] > 0]
    if not present:
        return image.copy()
    size = max(9, round(min(image.size) / 36))
    font = ImageFont.load_default(size=size)
    row, pad = round(size * 1.3), max(2, size // 3)
    fit = max(1, (image.size[1] - 2 * pad) // row)
    lines = [(palette[c], f"{classes[c]} {100 * shares[c]:.1f}%" if shares[c] >= 0.0005 else f"{classes[c]} <0.1%")
             for c in present]
    if len(lines) > fit:
        lines = lines[:fit - 1] + [(None, f"+{len(lines) - fit + 1} more")]
    measure = ImageDraw.Draw(image)
    w = min(int(max(measure.textlength(text, font=font) for _, text in lines) + size + 3 * pad), image.size[0])
    h = min(len(lines) * row + pad, image.size[1])
    x0, y0 = _quiet_corner(label, w, h)
    box = Image.new("RGBA", image.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(box)
    draw.rectangle([x0, y0, x0 + w - 1, y0 + h - 1], fill=(0, 0, 0, 150))
    for i, (colour, text) in enumerate(lines):
        y = y0 + pad + i * row
        if colour is not None:
            draw.rectangle([x0 + pad, y + 1, x0 + pad + size, y + size], fill=tuple(int(v) for v in colour) + (255,),
                           outline=(255, 255, 255, 255))
        draw.text((x0 + 2 * pad + size, y), text, font=font, fill=(255, 255, 255, 255))
    return Image.alpha_composite(image.convert("RGBA"), box).convert("RGB")


def _quiet_corner(label: np.ndarray, w: int, h: int) -> tuple[int, int]:
    """``(x, y)`` of the ``w`` x ``h`` corner box of ``label`` holding the fewest class-border pixels."""
    H, W = label.shape
    edge = class_boundaries(label)
    corners = [(0, 0), (W - w, 0), (0, H - h), (W - w, H - h)]  # top-left first: the tie winner
    return min(corners, key=lambda c: int(edge[c[1]:c[1] + h, c[0]:c[0] + w].sum()))
