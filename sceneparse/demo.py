"""``sceneparse demo``: a local web page (gradio, the ``demo`` extra) to parse a photo with a packaged model
or a checkpoint: overlay with legend, per-class pixel shares, inference settings. Runs on this machine only
(``127.0.0.1`` unless told otherwise); nothing is uploaded anywhere."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

TTA_SCALES = (0.75, 1.0, 1.25)


class _Models:
    """Loaded models by (name, tta, bf16): switching settings back and forth does not reload."""

    def __init__(self, extra: Sequence[str | Path] = ()):
        from .api import list_models

        self.choices = list(list_models()) + [str(p) for p in extra]
        self.cache: dict = {}

    def get(self, name: str, tta: bool, bf16: bool):
        from . import api

        key = (name, tta, bf16)
        if key not in self.cache:
            self.cache[key] = api.load(name, bf16=bf16, **({"scales": TTA_SCALES, "flip": True} if tta else {}))
        return self.cache[key]


def parse_for_page(models: _Models, image: np.ndarray | None, name: str, tta: bool, bf16: bool, alpha: float):
    """The page's action: ``(overlay PIL image, [[class, pixel %], ...] largest first, info markdown)``.

    Raises:
        gradio.Error: no image, or the model / image cannot be used (shown on the page).
    """
    import gradio as gr

    from .engine.predict import class_shares, draw_legend, overlay

    if image is None:
        raise gr.Error("choose or upload a photo first")
    try:
        seg = models.get(name, tta, bf16)
        rgb = seg._rgb(np.ascontiguousarray(image[..., :3]).astype(np.uint8))
        labels = seg(rgb)
    except Exception as e:
        raise gr.Error(f"{type(e).__name__}: {e}") from e
    from PIL import Image

    shares = class_shares(labels, len(seg.classes))
    rows = [[seg.classes[c], round(100 * float(shares[c]), 2)] for c in np.argsort(-shares) if shares[c] > 0]
    out = draw_legend(Image.fromarray(overlay(rgb, labels, seg.palette, alpha)), labels, seg.classes, seg.palette)
    score = seg.meta.get("metrics", {})
    info = (f"**{Path(seg.meta['source']).stem}**: {len(seg.classes)} classes of {seg.meta.get('dataset')}"
            + (f", {score.get('split')} mIoU {score['mIoU']:.2f}" if "mIoU" in score else "")
            + f"; {rgb.shape[1]}x{rgb.shape[0]} px, {'multi-scale + flip' if tta else 'single scale'}"
            + (", bf16" if bf16 else ""))
    return out, rows, info


def build_demo(checkpoints: Sequence[str | Path] = (), examples: Sequence[str | Path] = ()):
    """The gradio ``Blocks`` page; ``checkpoints``: files offered besides the packaged models;
    ``examples``: photos to pick from. Its API endpoint is ``/parse``.

    Raises:
        ImportError: gradio is not installed (``pip install 'sceneparse[demo]'``).
    """
    try:
        import gradio as gr
    except ImportError as e:
        raise ImportError("sceneparse demo needs gradio: pip install 'sceneparse[demo]'") from e
    from .constants import DEFAULT_MODEL

    models = _Models(checkpoints)
    with gr.Blocks(title="sceneparse demo") as page:
        gr.Markdown("# sceneparse: one class label per pixel\nPick or upload a photo; "
                    "the overlay shows the classes found, the table their share of the pixels.")
        with gr.Row():
            photo = gr.Image(type="numpy", label="photo", image_mode="RGB")
            parsed = gr.Image(type="pil", label="parsed")
        with gr.Row():
            model = gr.Dropdown(models.choices, value=DEFAULT_MODEL if DEFAULT_MODEL in models.choices
                                else (models.choices or [None])[0], label="model")
            tta = gr.Checkbox(False, label=f"multi-scale {list(TTA_SCALES)} + flip (slower, a little better)")
            bf16 = gr.Checkbox(False, label="bf16 (faster on AMX / AVX512-bf16 CPUs and GPUs)")
            alpha = gr.Slider(0.0, 1.0, value=0.5, step=0.05, label="colour opacity")
        button = gr.Button("Parse", variant="primary")
        info = gr.Markdown()
        table = gr.Dataframe(headers=["class", "pixels %"], label="pixel shares", interactive=False)
        button.click(lambda *a: parse_for_page(models, *a), [photo, model, tta, bf16, alpha], [parsed, table, info],
                     api_name="parse")
        if examples:
            gr.Examples([[str(p)] for p in examples], inputs=[photo])
    return page


def default_examples(limit: int = 4) -> list[Path]:
    """A few CamVid val photos when the data is where the configs expect it (``../shared/data/camvid``)."""
    folder = Path("../shared/data/camvid/val")
    return sorted(folder.glob("*.png"))[:limit] if folder.is_dir() else []


def launch(host: str = "127.0.0.1", port: int = 7860, checkpoints: Sequence[str | Path] = (),
           examples: Sequence[str | Path] | None = None, block: bool = True):
    """Serve the page at ``http://host:port`` (blocks until Ctrl+C unless ``block=False``; then returns the
    running page, stop it with ``.close()``)."""
    page = build_demo(checkpoints, default_examples() if examples is None else examples)
    page.launch(server_name=host, server_port=port, prevent_thread_lock=not block, show_error=True,
                quiet=True, inbrowser=False)
    return page
