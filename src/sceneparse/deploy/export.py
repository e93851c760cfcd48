"""ONNX export of any sceneparse model (eval mode, dynamic batch, height and width) and a parity
check with onnxruntime.

Two input formats: ``"float"``: a normalised batch ``input`` ``(N, 3, H, W)`` float32 (the model's own
input); ``"rgb8"``: ``(N, H, W, 3)`` uint8 RGB as images are decoded, the scaling to [0, 1], the
mean/std normalisation and the NHWC -> NCHW transpose inside the graph. Outputs, selectable: ``logits``
``(N, K, H, W)`` float32 and/or ``labels`` ``(N, H, W)`` (argmax; uint8 up to 256 classes, else int64).
The class names, palette, mean/std, input format, dataset and the input geometry of the training crops are
stored as ONNX metadata (``metadata_props``, JSON values). Uses ``torch.onnx.export(dynamo=True)`` (needs ``onnxscript``); the
exporter's progress output is captured, not printed. The parity check needs ``onnxruntime``
(``pip install "sceneparse[export]"``).
"""
from __future__ import annotations

import contextlib
import io
import json
import logging
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn as nn

from ..models.segmentor import training_geometry

INPUTS = ("float", "rgb8")
OUTPUTS = ("logits", "labels", "both")


class DeployGraph(nn.Module):
    """The exported function: optional uint8 RGB NHWC input handling, the model, and the selected outputs.

    ``upsample=False`` (the runtime backends of our engine only): a model with low-resolution eval logits
    keeps them, and the engine upsamples them (fused with the argmax for labels); exported files always
    carry logits at the input's size."""

    def __init__(self, model: nn.Module, input_format: str = "float", outputs: str = "logits",
                 mean: Sequence[float] = (0.485, 0.456, 0.406), std: Sequence[float] = (0.229, 0.224, 0.225),
                 num_classes: int = 256, upsample: bool = True):
        super().__init__()
        if input_format not in INPUTS or outputs not in OUTPUTS:
            raise ValueError(f"input format must be one of {INPUTS} and outputs one of {OUTPUTS}, "
                             f"got {input_format!r}, {outputs!r}")
        self.model, self.input_format, self.outputs, self.upsample = model, input_format, outputs, upsample
        self.label_dtype = torch.uint8 if num_classes <= 256 else torch.int64
        # folded into one multiply-add: (x / 255 - mean) / std
        self.register_buffer("scale", (1.0 / (255.0 * torch.tensor(std, dtype=torch.float32))).view(1, 3, 1, 1))
        self.register_buffer("shift", (-torch.tensor(mean) / torch.tensor(std)).float().view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor):
        if self.input_format == "rgb8":
            x = x.permute(0, 3, 1, 2).float() * self.scale + self.shift
        logits = self.model(x)["out"]
        if self.upsample and logits.shape[-2:] != x.shape[-2:]:  # a model prepared for the engine (low-res logits)
            logits = nn.functional.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)
        if self.outputs == "logits":
            return logits
        labels = logits.argmax(1).to(self.label_dtype)
        return labels if self.outputs == "labels" else (logits, labels)


def output_names(outputs: str) -> list[str]:
    return {"logits": ["out"], "labels": ["labels"], "both": ["out", "labels"]}[outputs]


@contextlib.contextmanager
def _quiet():
    """Capture the exporter's prints and warnings (hundreds of lines); kept for an error message."""
    buf = io.StringIO()
    loggers = [logging.getLogger(n) for n in ("torch", "torch.onnx", "torch._guards", "torch.export", "onnxscript", "onnx_ir")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:  # torch logs its tracing errors through handlers of its own, past redirect_stderr
        lg.setLevel(logging.CRITICAL)
    try:
        with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield buf
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def export_onnx(model: nn.Module, path: str | Path, example_size: Sequence[int] = (512, 512),
                min_size: int = 64, max_size: int = 8192, input_format: str = "float", outputs: str = "logits",
                meta: dict | None = None, upsample: bool = True, name: str | None = None,
                metrics: dict | None = None) -> Path:
    """Write ``model`` (put in eval mode) to ``path`` as ONNX with dynamic N, H, W.

    Args:
        example_size: ``(H, W)`` of the tracing example (any size in range works afterwards).
        min_size, max_size: the range of H and W the graph is valid for, in pixels.
        input_format: ``"float"`` (normalised NCHW float32) or ``"rgb8"`` (NHWC uint8 RGB, normalised
            in the graph with ``meta["mean"]``/``["std"]``).
        outputs: ``"logits"`` (output ``out``), ``"labels"`` (output ``labels``) or ``"both"``.
        meta: the checkpoint's metadata; classes, palette, mean, std and dataset are stored in the file,
            with ``input_geometry`` (``{"crop_size": [H, W], "output_stride": t}``,
            :func:`~sceneparse.models.segmentor.training_geometry`; absent where the model has no input-size
            rule): sized with :func:`~sceneparse.models.segmentor.congruent_input_size`, an input gives the
            labels sceneparse's own engine gives (the graph itself runs the size it is given).
        upsample: see :class:`DeployGraph` (``False`` only for the engine's ONNX Runtime backend).
        name: the model's name (``sceneparse.name``; also the graph's ``doc_string``).
        metrics: its scores (e.g. a packaged model's ``{"split": "val", "mIoU": ...}``), stored as
            ``sceneparse.evaluation.metrics``. The file's ``producer_name`` / ``producer_version`` are ``sceneparse`` and
            its version; ``model_version`` is 1.

    Raises:
        ValueError: unknown input format / outputs.
        RuntimeError: the exporter failed (its message and the tail of its output are kept).
    """
    meta = meta or {}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    graph = DeployGraph(model.eval(), input_format, outputs, meta.get("mean", (0.485, 0.456, 0.406)),
                        meta.get("std", (0.229, 0.224, 0.225)), len(meta.get("classes", [])) or 2**31,
                        upsample).eval()
    h, w = example_size
    if input_format == "rgb8":
        x = torch.randint(0, 256, (2, h, w, 3), dtype=torch.uint8)  # batch 1 would be specialised (0/1 rule)
        dims = {0: torch.export.Dim("batch", min=1, max=256), 1: torch.export.Dim("height", min=min_size, max=max_size),
                2: torch.export.Dim("width", min=min_size, max=max_size)}
    else:
        x = torch.randn(1, 3, h, w)
        dims = {0: torch.export.Dim("batch", min=1, max=256), 2: torch.export.Dim("height", min=min_size, max=max_size),
                3: torch.export.Dim("width", min=min_size, max=max_size)}
    with _quiet() as captured:
        try:
            with torch.no_grad():
                program = torch.onnx.export(graph, (x,), dynamo=True, dynamic_shapes={"x": dims},
                                            input_names=["input"], output_names=output_names(outputs), verbose=False)
        except Exception as e:
            tail = "\n".join(captured.getvalue().strip().splitlines()[-5:])
            raise RuntimeError(f"ONNX export failed: {type(e).__name__}: {e}\n{tail}") from e
    from ..utils.io import write_atomically

    def write(tmp: Path) -> None:  # graph and metadata into a temporary, then renamed: never a partial file
        with _quiet():
            program.save(str(tmp))
        _add_metadata(tmp, values)

    values = {"classes": meta.get("classes"), "palette": meta.get("palette"), "mean": list(meta.get("mean", (0.485, 0.456, 0.406))),
                         "std": list(meta.get("std", (0.229, 0.224, 0.225))), "dataset": meta.get("dataset"),
                         "input_format": input_format, "outputs": outputs, "name": name,
                         "metrics": _plain_scores(metrics), "input_geometry": training_geometry(model)}
    write_atomically(path, write)
    return path


def _plain_scores(metrics: dict | None) -> dict | None:
    """The scalar scores of a metrics dict (per-class lists and confusion matrices left out)."""
    if not metrics:
        return None
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float, str)) and not isinstance(v, bool)} or None


def _add_metadata(path: Path, values: dict) -> None:
    import onnx

    from .. import __version__

    m = onnx.load(str(path), load_external_data=False)
    m.producer_name, m.producer_version, m.model_version = "sceneparse", __version__, 1
    scores = values.get("metrics") or {}
    m.doc_string = (f"{values.get('name') or 'sceneparse model'}: {len(values.get('classes') or [])} classes of "
                    f"{values.get('dataset')}" + (f", {scores.get('split', '')} mIoU {scores['mIoU']:.2f}"
                                                  if isinstance(scores.get("mIoU"), (int, float)) else ""))
    del m.metadata_props[:]
    for key, value in values.items():
        if value is not None:
            entry = m.metadata_props.add()
            entry.key, entry.value = f"sceneparse.{key}", json.dumps(value)
    onnx.save(m, str(path))


def read_metadata(path: str | Path) -> dict:
    """The ``sceneparse.*`` metadata of an exported file, JSON-decoded (e.g. ``{"classes": [...], ...}``)."""
    import onnx

    m = onnx.load(str(path), load_external_data=False)
    return {p.key.split(".", 1)[1]: json.loads(p.value) for p in m.metadata_props if p.key.startswith("sceneparse.")}


def onnx_parity(path: str | Path, model: nn.Module, sizes: Sequence[Sequence[int]] = ((512, 512),),
                batch: int = 1, seed: int = 0) -> dict:
    """onnxruntime (CPU) against PyTorch on random inputs of each ``(H, W)`` in ``sizes``, in the file's
    input format and outputs (its metadata; files without it: normalised float in, logits out).

    Returns:
        ``{"max_abs_diff": float (logits; NaN for a labels-only file), "per_size": {"HxW": float},
        "ref_max_abs": float (largest |logit| of PyTorch's output, the scale to judge the difference by),
        "argmax_agreement": float (fraction of pixels whose class agrees)}``.

    Raises:
        AssertionError: an output of the wrong shape.
    """
    import onnxruntime as ort

    info = read_metadata(path)
    fmt, outputs = info.get("input_format", "float"), info.get("outputs", "logits")
    mean, std = info.get("mean", (0.485, 0.456, 0.406)), info.get("std", (0.229, 0.224, 0.225))
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    names = [o.name for o in sess.get_outputs()]
    gen = torch.Generator().manual_seed(seed)
    model = model.eval()
    per_size, agree, total, scale = {}, 0, 0, 0.0
    for h, w in sizes:
        if fmt == "rgb8":
            feed = torch.randint(0, 256, (batch, h, w, 3), generator=gen, dtype=torch.uint8)
            x = (feed.permute(0, 3, 1, 2).float() / 255 - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
        else:
            x = feed = torch.randn(batch, 3, h, w, generator=gen)
        with torch.no_grad():
            ref = model(x)["out"].float().numpy()
        got = dict(zip(names, sess.run(None, {name: feed.numpy()})))
        scale = max(scale, float(np.abs(ref).max()))
        if "out" in got:
            if got["out"].shape != ref.shape:
                raise AssertionError(f"ONNX output {got['out'].shape} != PyTorch {ref.shape} at {h}x{w}")
            per_size[f"{h}x{w}"] = float(np.abs(got["out"] - ref).max())
        else:
            per_size[f"{h}x{w}"] = float("nan")
        labels = got["labels"] if "labels" in got else got["out"].argmax(1)
        if labels.shape != (batch, h, w):
            raise AssertionError(f"ONNX labels {labels.shape} != {(batch, h, w)} at {h}x{w}")
        agree += int((labels == ref.argmax(1)).sum())
        total += batch * h * w
    return {"max_abs_diff": max(per_size.values()), "per_size": per_size, "ref_max_abs": scale,
            "argmax_agreement": agree / total, "input_format": fmt, "outputs": outputs}
