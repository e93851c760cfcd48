"""Inference backends: the same model run by PyTorch, OpenVINO or ONNX Runtime behind one interface.

Every backend gives a module that the inference engine (``infer_probs``: whole image, sliding window,
multi-scale + flip) calls like a sceneparse model in eval mode: ``(N, 3, H, W)`` normalised float32 in,
``{"out": (N, K, h, w) float32 logits}`` out on the input's device (computed on the CPU). ``h, w``: the
decode head's resolution for a model converted here or an IR of ``sceneparse quantize``, the input's for
a file of ``sceneparse export``; the engine upsamples (for labels with its fused upsample + argmax). So
every engine mode works with every backend, and the labels agree up to the precision's tolerance (tested).

- ``torch``: :func:`optimize_for_inference` (BN folded, channels_last, bf16 weights, optionally
  ``torch.compile`` with Inductor freezing).

- ``openvino``: the model converted in memory by ``openvino.convert_model`` (or an IR ``.xml`` file, e.g.
  the int8 model of ``sceneparse quantize``), compiled for the CPU with ``PERFORMANCE_HINT=LATENCY``,
  ``INFERENCE_PRECISION_HINT`` f32 / bf16 and the torch thread count; one compiled model per input shape
  (static shapes are OpenVINO's fast path; the last ``max_shapes`` are kept). The runtimes run on the CPU;
  tensors on another device are copied.
- ``onnxruntime``: the model exported by :func:`sceneparse.deploy.export.export_onnx` (float in, logits out),
  run by ``CPUExecutionProvider`` with all graph optimisations and the torch thread count. fp32 only:
  its CPU provider has no bf16 kernels.

Extras: ``pip install "sceneparse[openvino]"`` (openvino, nncf) and ``"sceneparse[export]"`` (onnxruntime).
"""
from __future__ import annotations

import tempfile
from collections import OrderedDict
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn as nn

from ..constants import BACKENDS
from ..models.segmentor import congruent_input_size, training_geometry
from ..utils.sysinfo import require_extra


class RuntimeModel(nn.Module):
    """A model run by another runtime, called like a sceneparse model in eval mode.

    ``forward(x)``: ``x`` ``(N, 3, H, W)`` normalised float (any dtype and memory format; CPU copy taken)
    -> ``{"out": (N, K, h, w) float32}`` on ``x``'s device (``h, w``: see the module docstring). Has no parameters: ``.to()``, ``.eval()``
    are no-ops; ``input_dtype`` tells the engine to feed float32.

    ``input_geometry``: ``{"crop_size": [H, W], "output_stride": t}`` of the weights' training
    (:func:`~sceneparse.models.segmentor.training_geometry`; stored in exported files and IRs), which gives
    :meth:`input_size_for` the PyTorch model's input-size rule; None or ``{}``: inputs run at the size given.
    """

    input_dtype = torch.float32
    backend = "?"

    def __init__(self, output_stride: int | None = None, precision: str = "fp32", input_geometry: dict | None = None):
        super().__init__()
        self.output_stride = output_stride
        self.precision = precision
        self.input_geometry = input_geometry

    def input_size_for(self, height: int, width: int) -> tuple[int, int]:
        """As :meth:`SegmentationModel.input_size_for <sceneparse.models.segmentor.SegmentationModel.input_size_for>`
        from ``input_geometry``: the nearest size with the training crops' output geometry (as given without it)."""
        g = self.input_geometry
        if not g:
            return int(height), int(width)
        return congruent_input_size(height, width, g["crop_size"], g["output_stride"])

    def run(self, x: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"expected input of shape (N, 3, H, W), got {tuple(x.shape)}")
        arr = np.ascontiguousarray(x.detach().float().cpu().numpy())
        return {"out": torch.from_numpy(np.asarray(self.run(arr), dtype=np.float32)).to(x.device)}

    def extra_repr(self) -> str:
        return f"backend={self.backend}, precision={self.precision}"


def _ir_stored_geometry(ov_model) -> dict | None:
    """The ``input_geometry`` an IR of ``sceneparse quantize`` stores in its sceneparse rt_info (None without)."""
    from ..checkpoint import read_ir_info

    info = read_ir_info(ov_model)
    return info.get("input_geometry") if info is not None else None


def _low_res_logits(model: nn.Module) -> None:
    """Eval logits at the decode head's resolution where the model supports it: the runtime's graph then
    skips the (N, K, H, W) upsampling, which the engine does in float32, fused with the argmax."""
    if hasattr(model, "set_eval_logit_upsampling"):
        model.set_eval_logit_upsampling(False)


def _threads(threads: int | None) -> int:
    return int(threads or torch.get_num_threads())


def openvino_config(precision: str = "fp32", threads: int | None = None) -> dict:
    """OpenVINO's recommended CPU settings for one stream of batch-1 latency: ``PERFORMANCE_HINT=LATENCY``,
    ``INFERENCE_NUM_THREADS`` (default the torch thread count) and the precision hint (f32 / bf16)."""
    return {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": _threads(threads),
            "INFERENCE_PRECISION_HINT": "bf16" if precision == "bf16" else "f32"}


def ort_session(source: str | Path | bytes, threads: int | None = None):
    """An ONNX Runtime CPU session with all graph optimisations and ``threads`` intra-op threads
    (default the torch thread count), for a file path or the model's bytes.

    Raises:
        ValueError: onnxruntime is not installed.
    """
    ort = require_extra("onnxruntime", "export")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = _threads(threads), 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(source if isinstance(source, bytes) else str(source), opts,
                                providers=["CPUExecutionProvider"])


class OpenVINOModel(RuntimeModel):
    """OpenVINO on the CPU.

    Args:
        source: a PyTorch model (converted with ``openvino.convert_model``, dynamic N, H, W), an
            ``openvino.Model``, or the path of an IR ``.xml`` file (its ``.bin`` beside it).
        precision: ``"fp32"`` or ``"bf16"`` (``INFERENCE_PRECISION_HINT``; an int8 IR keeps its int8
            layers under either, and the layers between them run in this precision).
        threads: ``INFERENCE_NUM_THREADS`` (default ``torch.get_num_threads()``).
        max_shapes: compiled networks kept (one per input shape: multi-scale TTA with 6 scales needs 6).
        input_geometry: see :class:`RuntimeModel` (default None: the model's, or the one an IR of
            ``sceneparse quantize`` stores; ``{}``: no rule).

    Raises:
        ValueError: openvino missing, unknown precision.
    """

    backend = "openvino"

    def __init__(self, source, precision: str = "fp32", threads: int | None = None, output_stride: int | None = None,
                 max_shapes: int = 8, input_geometry: dict | None = None):
        super().__init__(output_stride, precision, input_geometry)
        ov = require_extra("openvino", "openvino")
        if precision not in ("fp32", "bf16"):
            raise ValueError(f"openvino precision must be fp32 or bf16, got {precision!r}")
        self._core = ov.Core()
        if isinstance(source, nn.Module):
            import warnings

            from .export import DeployGraph

            _low_res_logits(source)
            graph = DeployGraph(source.eval(), "float", "logits", upsample=False)
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")  # TorchScript tracing's deprecation and tracer warnings
                self.ov_model = ov.convert_model(graph, example_input=torch.randn(1, 3, 64, 64))
        elif isinstance(source, (str, Path)):
            self.ov_model = self._core.read_model(str(source))
        else:
            self.ov_model = source
        if input_geometry is None:  # the model's, or the one an IR of sceneparse quantize stores
            self.input_geometry = (training_geometry(source) if isinstance(source, nn.Module)
                                   else _ir_stored_geometry(self.ov_model))
        self.ov_model.reshape([-1, 3, -1, -1])  # dynamic N, H, W; each call compiles its static shape once
        self.config = openvino_config(precision, threads)
        self.max_shapes = max_shapes
        self._compiled: OrderedDict[tuple, object] = OrderedDict()

    def set_precision(self, precision: str) -> None:
        """Switch ``INFERENCE_PRECISION_HINT`` (``"fp32"`` or ``"bf16"``); compiled shapes are dropped."""
        if precision not in ("fp32", "bf16"):
            raise ValueError(f"openvino precision must be fp32 or bf16, got {precision!r}")
        self.precision = precision
        self.config["INFERENCE_PRECISION_HINT"] = "bf16" if precision == "bf16" else "f32"
        self._compiled.clear()

    def request(self, shape: Sequence[int]):
        """The infer request compiled for the static input ``shape`` (compiled on first use, ~0.2-2 s; the
        ``max_shapes`` most recently used are kept)."""
        key = tuple(int(s) for s in shape)
        if key in self._compiled:
            self._compiled.move_to_end(key)
            return self._compiled[key]
        model = self.ov_model.clone()
        model.reshape(list(key))
        req = self._core.compile_model(model, "CPU", self.config).create_infer_request()
        self._compiled[key] = req
        while len(self._compiled) > self.max_shapes:
            self._compiled.popitem(last=False)
        return req

    def run(self, x: np.ndarray) -> np.ndarray:
        req = self.request(x.shape)
        req.infer({0: x})
        return req.get_output_tensor(0).data.copy()


class ONNXRuntimeModel(RuntimeModel):
    """ONNX Runtime (``CPUExecutionProvider``, all graph optimisations, ``threads`` intra-op threads).

    Args:
        source: a PyTorch model (exported with :func:`~sceneparse.deploy.export.export_onnx`, float in,
            logits out) or the path of such an ``.onnx`` file.
        input_geometry: see :class:`RuntimeModel` (default None: the model's, or the file's metadata's; ``{}``:
            no rule).

    Raises:
        ValueError: onnxruntime missing; a file whose input is not float NCHW or whose output is not logits.
    """

    backend = "onnxruntime"

    def __init__(self, source, threads: int | None = None, output_stride: int | None = None,
                 input_geometry: dict | None = None):
        super().__init__(output_stride, "fp32", input_geometry)
        from .export import export_onnx, read_metadata

        if isinstance(source, nn.Module):
            if input_geometry is None:
                self.input_geometry = training_geometry(source)
            _low_res_logits(source)
            with tempfile.TemporaryDirectory() as tmp:
                path = export_onnx(source, Path(tmp) / "model.onnx", (64, 64), input_format="float", outputs="logits",
                                   upsample=False)
                self.session = ort_session(path.read_bytes(), threads)
        else:
            info = read_metadata(source)
            if info.get("input_format", "float") != "float" or info.get("outputs", "logits") != "logits":
                raise ValueError(f"{source}: the onnxruntime backend needs a file exported with "
                                 "--input float --outputs logits")
            self.session = ort_session(source, threads)
            if input_geometry is None:  # ({} : none, whatever the file says)
                self.input_geometry = info.get("input_geometry")
        self._input = self.session.get_inputs()[0].name

    def run(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self._input: x})[0]


def prepare_model(model: nn.Module, backend: str = "torch", *, bf16: bool = False, fold_bn: bool = True,
                  compile: bool | str = False, threads: int | None = None, device: str | torch.device = "cpu",
                  channels_last: bool = True, low_res_logits: bool = True) -> nn.Module:
    """The model ready to run under ``backend`` (one of :data:`BACKENDS`), in fp32 or bf16.

    A :class:`RuntimeModel` is returned as is (an IR file's model already has its backend; ``bf16`` sets an
    OpenVINO model's precision hint: an int8 IR then runs its float layers in bf16). The runtimes run
    on the CPU whatever ``device`` is (tensors on another device are copied). ``model`` is changed in
    place; under torch (:func:`~sceneparse.deploy.optimize.optimize_for_inference`: BN folded, always in
    bf16; ``channels_last``), a model that supports it returns eval logits at the decode head's resolution
    when ``low_res_logits`` (``set_eval_logit_upsampling(False)``): the engine upsamples them in float32,
    fused with the argmax when only labels are wanted.

    Raises:
        ValueError: unknown backend; bf16 with onnxruntime; ``compile`` with a runtime backend or an IR;
            another runtime asked for an IR; the runtime not installed.
    """
    if isinstance(model, RuntimeModel):  # an IR file's model: its backend is fixed, its precision is not
        if compile:
            raise ValueError(f"--compile applies to the torch backend; this model runs on {model.backend}")
        if backend not in ("torch", model.backend):
            raise ValueError(f"this model is an {model.backend} graph; --backend {backend} cannot run it")
        if bf16 and isinstance(model, OpenVINOModel):
            model.set_precision("bf16")
        return model
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "torch":
        from .optimize import optimize_for_inference

        dev = torch.device(device)
        if low_res_logits and hasattr(model, "set_eval_logit_upsampling"):
            model.set_eval_logit_upsampling(False)
        return optimize_for_inference(model.to(dev), fold_bn=fold_bn or bf16, channels_last=channels_last,
                                      dtype=torch.bfloat16 if bf16 else torch.float32,
                                      compile=compile, example=torch.randn(1, 3, 64, 64, device=dev))
    if compile:
        raise ValueError(f"--compile applies to the torch backend, not {backend}")
    stride = getattr(model, "output_stride", None)
    model = model.float().eval()
    # (each runtime takes the model's input geometry: the engine sizes the inputs as for the torch model)
    if backend == "openvino":
        return OpenVINOModel(model, "bf16" if bf16 else "fp32", threads, output_stride=stride)
    if bf16:
        raise ValueError("onnxruntime's CPU provider has no bf16 kernels: use --backend openvino or torch for bf16")
    return ONNXRuntimeModel(model, threads, output_stride=stride)


