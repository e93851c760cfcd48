"""ONNX export of any sceneparse model (eval mode, dynamic batch, height and width) and a parity
check with onnxruntime.

The exported graph maps a normalised image batch ``input`` ``(N, 3, H, W)`` float32 to the logits
``out`` ``(N, K, H, W)`` float32 (the model's ``{"out": ...}``). Uses ``torch.onnx.export(dynamo=True)``
(needs ``onnxscript``); the parity check needs ``onnxruntime`` (``pip install "sceneparse[export]"``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn as nn


class _LogitsOnly(nn.Module):
    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)["out"]


def export_onnx(model: nn.Module, path: str | Path, example_size: Sequence[int] = (512, 512),
                min_size: int = 64, max_size: int = 8192) -> Path:
    """Write ``model`` (put in eval mode) to ``path`` as ONNX with dynamic N, H, W.

    Args:
        example_size: ``(H, W)`` of the tracing example (any size in range works afterwards).
        min_size, max_size: the range of H and W the graph is valid for, in pixels.

    Raises:
        RuntimeError: the exporter failed (its message is kept).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    x = torch.randn(1, 3, *example_size)
    dims = {0: torch.export.Dim("batch", min=1, max=256), 2: torch.export.Dim("height", min=min_size, max=max_size),
            3: torch.export.Dim("width", min=min_size, max=max_size)}
    with torch.no_grad():
        program = torch.onnx.export(_LogitsOnly(model).eval(), (x,), dynamo=True, dynamic_shapes={"x": dims},
                                    input_names=["input"], output_names=["out"], verbose=False)
    program.save(str(path))
    return path


def onnx_parity(path: str | Path, model: nn.Module, sizes: Sequence[Sequence[int]] = ((512, 512),),
                batch: int = 1, seed: int = 0) -> dict:
    """Max absolute difference between onnxruntime (CPU) and PyTorch logits on random inputs.

    Returns:
        ``{"max_abs_diff": float, "per_size": {"HxW": float}, "ref_max_abs": float (largest |logit|
        of PyTorch's output, the scale to judge the difference by), "argmax_agreement": float (fraction)}``.
    """
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    gen = torch.Generator().manual_seed(seed)
    model = model.eval()
    per_size, agree, total, scale = {}, 0, 0, 0.0
    for h, w in sizes:
        x = torch.randn(batch, 3, h, w, generator=gen)
        with torch.no_grad():
            ref = model(x)["out"].float().numpy()
        out = sess.run(None, {name: x.numpy()})[0]
        if out.shape != ref.shape:
            raise AssertionError(f"ONNX output {out.shape} != PyTorch {ref.shape} at {h}x{w}")
        per_size[f"{h}x{w}"] = float(np.abs(out - ref).max())
        scale = max(scale, float(np.abs(ref).max()))
        agree += int((out.argmax(1) == ref.argmax(1)).sum())
        total += ref.shape[0] * h * w
    return {"max_abs_diff": max(per_size.values()), "per_size": per_size, "ref_max_abs": scale,
            "argmax_agreement": agree / total}
