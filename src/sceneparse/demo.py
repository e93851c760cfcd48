"""``sceneparse demo``: a local web page (gradio, the ``demo`` extra) to parse a photo with a packaged model
or a checkpoint: overlay with legend, per-class pixel shares, the class-id map, inference settings.

The page is a server, so every request is treated as hostile: uploads are limited in bytes
(:data:`MAX_UPLOAD`) and pixels (:data:`MAX_PIXELS`, checked from the header before anything is decoded),
one request is parsed at a time with at most :data:`QUEUE_SIZE` waiting, only the models offered on the page
can be asked for, and example files must be readable images. Nothing is sent anywhere: gradio's analytics
and version check and the Hugging Face hub's telemetry are switched off, and the page uses the browser's
own fonts. It binds ``127.0.0.1`` unless told otherwise."""
from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path
from typing import Sequence

import numpy as np

TTA_SCALES = (0.75, 1.0, 1.25)
MAX_PIXELS = 16_000_000  # a 16 MP photo; the CLI's limit (100 MP) would let one request take ~10 GB here
MAX_UPLOAD = "20mb"
QUEUE_SIZE = 8
_OFFLINE_ENV = {"GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_DISABLE_TELEMETRY": "1", "HF_HUB_OFFLINE": "1"}


def _offline() -> None:
    """Switch off every call home gradio and huggingface_hub make: the environment for what reads it at
    use, and huggingface_hub's constants for an already imported hub (timm imports it; it reads the
    environment once, at import)."""
    os.environ.update(_OFFLINE_ENV)
    import sys

    hub = sys.modules.get("huggingface_hub.constants")
    if hub is not None:
        hub.HF_HUB_OFFLINE = hub.HF_HUB_DISABLE_TELEMETRY = True


def check_examples(paths: Sequence[str | Path]) -> list[Path]:
    """``paths`` as a list, each checked to be a readable image of at most :data:`MAX_PIXELS` (gradio serves
    example files to any browser, so a text file, a device or a folder must never become one).

    Raises:
        DataError: the first path that is not such an image (one line naming it).
    """
    from .data.base import read_image

    for p in paths:
        read_image(p, max_pixels=MAX_PIXELS)  # raises DataError naming the file
    return [Path(p) for p in paths]


class _Models:
    """Loaded models by (name, tta, bf16): switching settings back and forth does not reload."""

    def __init__(self, extra: Sequence[str | Path] = ()):
        from .api import list_models

        self.choices = list(list_models()) + [str(p) for p in extra]
        self.cache: dict = {}
        self._labels = tempfile.TemporaryDirectory(prefix="sceneparse_demo_")  # removed with the page

    def label_file(self, keep_s: float = 600.0) -> str:
        """A new path for a class-id PNG in the page's own folder; files older than ``keep_s`` seconds
        (gradio has copied them to its cache by then) are removed, so a long-running page does not fill
        the disk."""
        import time
        import uuid

        folder = Path(self._labels.name)
        for old in folder.glob("*.png"):
            try:
                if time.time() - old.stat().st_mtime > keep_s:
                    old.unlink()
            except OSError:
                pass
        return str(folder / f"labels_{uuid.uuid4().hex[:12]}.png")

    def get(self, name: str, tta: bool, bf16: bool):
        from . import api

        key = (name, tta, bf16)
        if key not in self.cache:
            self.cache[key] = api.load(name, bf16=bf16, **({"scales": TTA_SCALES, "flip": True} if tta else {}))
        return self.cache[key]


def parse_for_page(models: _Models, image: str | None, name: str, tta: bool, bf16: bool, alpha: float):
    """The page's action: ``(overlay PIL image, [[class, pixel %], ...] largest first, info markdown,
    path of the class-id PNG)``. ``image`` is the uploaded file's path (decoded here, after the pixel check).

    Raises:
        gradio.Error: no image, an image above :data:`MAX_PIXELS` or unreadable, a model not offered on the
            page, or one that cannot be used (shown on the page; one line).
    """
    import gradio as gr

    from .data.base import DataError, read_image
    from .inference.vis import class_shares, draw_legend, overlay, palette_image

    if image is None:
        raise gr.Error("choose or upload a photo first")
    if name not in models.choices:  # the API takes any string: never load a path the page did not offer
        raise gr.Error(f"unknown model {str(name)[:80]!r}; choose one of the page's models")
    try:
        alpha = float(alpha)
    except (TypeError, ValueError):
        alpha = math.nan
    if not 0.0 <= alpha <= 1.0:
        raise gr.Error("opacity must be between 0 and 1")
    try:
        rgb = read_image(image, max_pixels=MAX_PIXELS)
    except DataError as e:
        msg = str(e).replace(f"image {image}", "the photo").replace(str(image), "the photo")  # not the temp path
        raise gr.Error(msg.split(" (a decompression bomb")[0]) from e
    try:
        seg = models.get(name, bool(tta), bool(bf16))
        labels = seg(rgb)
    except Exception as e:
        raise gr.Error(f"{type(e).__name__}: {e}") from e
    from PIL import Image

    shares = class_shares(labels, len(seg.classes))
    rows = [[seg.classes[c], round(100 * float(shares[c]), 2)] for c in np.argsort(-shares) if shares[c] > 0]
    out = draw_legend(Image.fromarray(overlay(rgb, labels, seg.palette, alpha)), labels, seg.classes, seg.palette)
    ids = models.label_file()
    with open(ids, "wb") as f:
        palette_image(labels, seg.palette).save(f, format="PNG")
    score = seg.meta.get("metrics", {})
    info = (f"**{Path(seg.meta['source']).stem}**: {len(seg.classes)} classes of {seg.meta.get('dataset')}"
            + (f", {score.get('split')} mIoU {score['mIoU']:.2f}" if "mIoU" in score else "")
            + f"; {rgb.shape[1]}x{rgb.shape[0]} px, {'multi-scale + flip' if tta else 'single scale'}"
            + (", bf16" if bf16 else ""))
    return out, rows, info, ids


def build_demo(checkpoints: Sequence[str | Path] = (), examples: Sequence[str | Path] = ()):
    """The gradio ``Blocks`` page; ``checkpoints``: files offered besides the packaged models;
    ``examples``: photos to pick from (each checked with :func:`check_examples`). Its API endpoint is
    ``/parse(photo, model, tta, bf16, opacity)`` -> ``(overlay, pixel shares, info, class-id PNG)``.

    Raises:
        ImportError: gradio is not installed (``pip install 'sceneparse[demo]'``).
        DataError: an example is not a readable image.
    """
    examples = check_examples(examples)
    _offline()
    try:
        import gradio as gr
    except ImportError as e:
        raise ImportError("sceneparse demo needs gradio: pip install 'sceneparse[demo]'") from e
    from .constants import DEFAULT_MODEL

    models = _Models(checkpoints)

    def parse(photo, model, tta, bf16, opacity):
        return parse_for_page(models, photo, model, tta, bf16, opacity)

    with gr.Blocks(title="sceneparse demo", analytics_enabled=False) as page:
        gr.Markdown("# sceneparse: one class label per pixel\nPick or upload a photo; "
                    "the overlay shows the classes found, the table their share of the pixels.")
        with gr.Row():
            photo = gr.Image(type="filepath", label=f"photo (up to {MAX_PIXELS // 10**6} MP, {MAX_UPLOAD})")
            parsed = gr.Image(type="pil", label="parsed")
        with gr.Row():
            model = gr.Dropdown(models.choices, value=DEFAULT_MODEL if DEFAULT_MODEL in models.choices
                                else (models.choices or [None])[0], label="model")
            tta = gr.Checkbox(False, label=f"multi-scale {list(TTA_SCALES)} + flip (slower, a little better)")
            bf16 = gr.Checkbox(False, label="bf16 (faster on AMX / AVX512-bf16 CPUs and GPUs)")
            opacity = gr.Slider(0.0, 1.0, value=0.5, step=0.05, label="colour opacity")
        button = gr.Button("Parse", variant="primary")
        info = gr.Markdown()
        table = gr.Dataframe(headers=["class", "pixels %"], label="pixel shares", interactive=False)
        ids = gr.File(label="class ids (palette PNG: pixel value = class index)")
        button.click(parse, [photo, model, tta, bf16, opacity], [parsed, table, info, ids], api_name="parse")
        if examples:
            gr.Examples([[str(p)] for p in examples], inputs=[photo])
    page.queue(max_size=QUEUE_SIZE, default_concurrency_limit=1)  # one parse at a time, a bounded wait
    return page


def default_examples(limit: int = 4) -> list[Path]:
    """A few CamVid val photos when the data is where the configs expect it (``../shared/data/camvid``)."""
    folder = Path("../shared/data/camvid/val")
    return sorted(folder.glob("*.png"))[:limit] if folder.is_dir() else []


def launch(host: str = "127.0.0.1", port: int = 7860, checkpoints: Sequence[str | Path] = (),
           examples: Sequence[str | Path] | None = None, block: bool = True):
    """Serve the page at ``http://host:port`` (blocks until Ctrl+C unless ``block=False``; then returns the
    running page, stop it with ``.close()``). Uploads above :data:`MAX_UPLOAD` are refused by the server.

    Raises:
        DataError: an example is not a readable image (nothing is started).
    """
    page = build_demo(checkpoints, default_examples() if examples is None else examples)
    page.launch(server_name=host, server_port=port, prevent_thread_lock=not block, show_error=True,
                quiet=True, inbrowser=False, max_file_size=MAX_UPLOAD, enable_monitoring=False,
                mcp_server=False, ssr_mode=False)
    return page
