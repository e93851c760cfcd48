"""Checkpoint files: safe loading, atomic finite-only writes, ``.safetensors`` and OpenVINO IR metadata.

A checkpoint is a ``torch.save`` dict with ``model`` (state dict), ``config``
(the resolved config as a plain dict), ``meta`` (class names, palette,
mean/std) and, for training checkpoints, ``optimizer``, ``scheduler``,
``scaler``, ``iter`` and ``rng``. Every value is a tensor or a plain Python
type, so every file loads with ``torch.load(..., weights_only=True)``: reading
a checkpoint never runs code from it. A file that can only be read by unsafe
unpickling is refused (:class:`UnsafeCheckpointError`).

Rebuilding a model from a checkpoint is :mod:`sceneparse.models.factory`; the packaged models are
:mod:`sceneparse.hub`.
"""
from __future__ import annotations

import io
import json
import pickle
import re
from pathlib import Path

import torch

from .utils.errors import first_line
from .utils.io import temporary_path, write_bytes_atomically
from .utils.sysinfo import require_extra

# the only non-tensor objects in the training checkpoints of sceneparse <= 0.x (the numpy RNG state): array
# reconstruction, whose contents are unpickled by the same restricted unpickler, so allowing it runs no code
_LEGACY_NUMPY_GLOBALS = ("numpy.core.multiarray._reconstruct", "numpy._core.multiarray._reconstruct",
                         "numpy.ndarray", "numpy.dtype")


class UnsafeCheckpointError(ValueError):
    """A file that only unsafe unpickling (which can run arbitrary code) could read; it is not loaded."""


class CheckpointError(ValueError):
    """A file that is not a usable sceneparse checkpoint (corrupt, wrong structure, non-finite weights)."""


def _legacy_numpy_allowlist() -> list:
    import numpy as np

    core = getattr(np, "_core", None) or np.core
    rebuild = core.multiarray._reconstruct
    # by name too: a file written under numpy 1.x names numpy.core..., one written under 2.x numpy._core...
    return [rebuild, *[(rebuild, name) for name in _LEGACY_NUMPY_GLOBALS if name.endswith("_reconstruct")],
            np.ndarray, np.dtype,
            *{type(np.dtype(t)) for t in (np.uint32, np.int64, np.float64)}]  # the dtype classes (numpy >= 1.25)


def _pickle_globals(path: Path) -> list[str]:
    """The ``module.name`` globals a pickle file, or the ``data.pkl`` of a ``torch.save`` zip, imports, read
    from its opcodes (nothing is executed; any pickle protocol)."""
    import io
    import pickletools
    import zipfile

    names, strings = [], []
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as z:
                member = next(n for n in z.namelist() if n.endswith("data.pkl"))
                data = z.read(member)
        else:
            data = path.read_bytes()
        with io.BytesIO(data) as f:
            for op, arg, _ in pickletools.genops(f):
                if isinstance(arg, str):
                    strings = (strings + [arg])[-2:]
                if op.name == "GLOBAL":
                    names.append(arg.replace(" ", "."))
                elif op.name == "STACK_GLOBAL" and len(strings) == 2:
                    names.append(".".join(strings))
    except Exception:
        pass
    return [n for n in dict.fromkeys(names) if not n.startswith(("torch.", "collections.OrderedDict"))]


def safe_torch_load(path: str | Path):
    """``torch.load(path, weights_only=True)`` on CPU; numpy arrays (older training checkpoints) allowed.

    Raises:
        FileNotFoundError: no such file.
        UnsafeCheckpointError: the file references other Python globals (e.g. ``os.system``); the
            message names the file and the globals. Nothing in the file is executed.
        CheckpointError: a directory, truncated or corrupt, or not a ``torch.save`` file.
    """
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"{path} is a directory, not a checkpoint file")
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError as e:  # e.g. /proc/self/mem: EIO on read, whose message names no file
        raise CheckpointError(f"cannot read checkpoint {path}: {e.strerror or e}") from e
    if not (head.startswith(b"PK\x03\x04") or head.startswith(b"\x80")):  # torch.save zip, or a pickle
        hint = ("; an exported graph (sceneparse export) runs in onnxruntime itself, see docs/deployment.md"
                if path.suffix.lower() == ".onnx" else "")
        raise CheckpointError(f"{path} is not a checkpoint (neither a torch.save nor a .safetensors file){hint}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        first_error = e
    except Exception as e:  # truncated / corrupt / not a torch file
        raise CheckpointError(f"cannot read checkpoint {path}: {first_line(e)}") from e
    try:
        found = [str(g) for g in torch.serialization.get_unsafe_globals_in_checkpoint(path)]
    except Exception:  # not a zip checkpoint: a raw pickle, whose opcodes name its globals
        found = _pickle_globals(path) or re.findall(r"GLOBAL ([\w.]+)", str(first_error))
    if not found:  # no global named anywhere: a truncated or corrupt file, not a malicious one
        raise CheckpointError(f"cannot read checkpoint {path}: corrupt or truncated ({first_line(first_error)})")
    unsafe = [g for g in found if g not in _LEGACY_NUMPY_GLOBALS]
    if not unsafe:
        try:
            with torch.serialization.safe_globals(_legacy_numpy_allowlist()):
                return torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as e:
            unsafe = re.findall(r"GLOBAL ([\w.]+)", str(e)) or [first_line(e)]
        except Exception as e:
            raise CheckpointError(f"cannot read checkpoint {path}: {first_line(e)}") from e
    raise UnsafeCheckpointError(
        f"refusing to load {path}: reading it needs unsafe unpickling of {', '.join(unsafe[:5])}, which can run "
        "arbitrary code (sceneparse checkpoints hold only tensors and plain values). Nothing in it was executed.")


class NonFiniteModelError(FloatingPointError):
    """Refused to save (or use) model weights that hold NaN or infinity."""


def nonfinite_tensors(state: dict) -> list[str]:
    """Names of the floating-point tensors of a state dict that hold NaN or +-inf."""
    return [k for k, v in state.items()
            if isinstance(v, torch.Tensor) and v.is_floating_point() and not bool(torch.isfinite(v).all())]


def require_finite(state: dict, what: str) -> None:
    """Raises ``NonFiniteModelError("<what>: N weight tensor(s) hold NaN/inf (names)")`` if any tensor does."""
    bad = nonfinite_tensors(state)
    if bad:
        raise NonFiniteModelError(f"{what}: {len(bad)} weight tensor(s) hold NaN/inf "
                                  f"({', '.join(bad[:4])}{', ...' if len(bad) > 4 else ''})")


def atomic_save(obj, path: str | Path) -> None:
    """``torch.save`` to a temporary file in the same folder, then rename: never a half-written file.

    The checkpoint is serialised in memory first (peak host memory: about twice its size), so that a
    failed write reports its errno and path instead of a stream error.

    A dict with a ``"model"`` state dict is saved only if every floating-point tensor is finite.

    Raises:
        NonFiniteModelError: ``obj["model"]`` holds NaN/inf (message lists the tensors); nothing written.
        OSError: writing failed, e.g. ``"no space left on device writing PATH"``; the temporary file is
            removed and an existing file at ``path`` is left as it was.
    """
    path = Path(path)
    if isinstance(obj, dict) and isinstance(obj.get("model"), dict):
        require_finite(obj["model"], f"not saving {path}")
    buf = io.BytesIO()
    torch.save(obj, buf)  # serialise in memory: the file write then reports a real OSError (errno, path)
    write_bytes_atomically(path, buf.getbuffer())


def list_checkpoints(ckpt_dir: str | Path) -> list[Path]:
    """``iter_XXXXXXXX.pt`` files in ``ckpt_dir``, oldest first."""
    files = [p for p in Path(ckpt_dir).glob("iter_*.pt") if re.fullmatch(r"iter_\d+\.pt", p.name)]
    return sorted(files, key=lambda p: int(p.stem.split("_")[1]))


SAFETENSORS_KEY = "sceneparse"  # the metadata entry holding config, meta, iter and metrics as JSON


def _safetensors():
    try:
        import safetensors.torch as st
    except ImportError as e:
        raise CheckpointError("reading or writing .safetensors needs the safetensors package: "
                              "pip install 'sceneparse[safetensors]'") from e
    return st


def save_safetensors(ckpt: dict, path: str | Path) -> None:
    """Write a model checkpoint (``model`` + ``config``/``meta``/``iter``/``metrics``) as ``.safetensors``:
    tensors plus one JSON metadata entry, a format that holds no code by construction.

    Raises:
        NonFiniteModelError: NaN/inf weights (nothing written). OSError: as :func:`atomic_save`.
    """
    st = _safetensors()
    path = Path(path)
    require_finite(ckpt["model"], f"not saving {path}")
    extra = {k: ckpt[k] for k in ("config", "meta", "iter", "metrics") if k in ckpt}
    tensors = {k: v.detach().contiguous().clone() for k, v in ckpt["model"].items()}  # no shared storage
    write_bytes_atomically(path, st.save(tensors, metadata={SAFETENSORS_KEY: json.dumps(extra)}))


def _load_safetensors(path: Path) -> dict:
    st = _safetensors()
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
        state = st.load_file(str(path))
        extra = json.loads(metadata.get(SAFETENSORS_KEY, "{}"))
    except Exception as e:
        raise CheckpointError(f"cannot read checkpoint {path}: {first_line(e)}") from e
    if not isinstance(extra, dict):
        raise CheckpointError(f"{path}: the '{SAFETENSORS_KEY}' metadata is not a JSON object")
    return {"model": state, **extra}


def load_checkpoint(path: str | Path) -> dict:
    """Load and validate a checkpoint dict on CPU, safely: ``.safetensors`` files (see :func:`save_safetensors`),
    everything else with ``weights_only=True`` (see :func:`safe_torch_load`).

    Raises:
        FileNotFoundError: no such file.
        UnsafeCheckpointError: only unsafe unpickling could read it (nothing is executed).
        CheckpointError: corrupt, or not a sceneparse checkpoint (the message names the file and the
            missing or malformed entry).
    """
    path = Path(path)
    if path.suffix == ".xml":  # an OpenVINO IR written by sceneparse (quantize): config + meta, no torch weights
        from .checkpoint import load_ir_checkpoint

        return load_ir_checkpoint(path)
    if path.suffix == ".safetensors" and path.is_file():
        ckpt = _load_safetensors(path)
    else:
        ckpt = safe_torch_load(path)
    if not isinstance(ckpt, dict) or "model" not in ckpt or "config" not in ckpt:
        raise CheckpointError(f"{path} is not a sceneparse checkpoint (needs 'model' and 'config')")
    if not isinstance(ckpt["model"], dict) or not all(isinstance(v, torch.Tensor) for v in ckpt["model"].values()):
        raise CheckpointError(f"{path}: 'model' is not a state dict of tensors")
    m = ckpt["config"].get("model") if isinstance(ckpt["config"], dict) else None
    if not isinstance(m, dict):
        raise CheckpointError(f"{path} is not a sceneparse checkpoint: it has no config.model section")
    for key in ("arch", "backbone", "output_stride"):
        if key not in m:
            raise CheckpointError(f"{path}: config.model.{key} is missing")
    meta = ckpt.get("meta")
    if not isinstance(meta, dict) or not ("classes" in meta or "num_classes" in ckpt):
        raise CheckpointError(f"{path}: meta.classes is missing (the class names the model predicts)")
    return ckpt


def is_training_checkpoint(ckpt: dict) -> bool:
    """Whether ``ckpt`` holds what ``--resume`` needs (optimizer, scheduler, iteration, RNG states)."""
    return all(k in ckpt for k in ("optimizer", "scheduler", "scaler", "iter", "rng"))


def require_torch_weights(ckpt: dict, path: str | Path, command: str) -> None:
    """Raise ``CheckpointError`` when ``ckpt`` is an OpenVINO IR (no PyTorch weights; ``command`` needs them)."""
    if "openvino_ir" in ckpt:
        raise CheckpointError(f"{path} is an OpenVINO IR (a compiled graph, no PyTorch weights): {command} needs "
                              "the PyTorch checkpoint it was made from (.pt / .safetensors or a packaged model name)")


def check_classes(ckpt: dict, dataset, source: str = "checkpoint") -> None:
    """Refuse to score a model on a dataset with other classes.

    The checkpoint's ``meta.classes`` must equal the dataset's ``CLASSES`` or one of its
    ``LEGACY_CLASS_NAMES`` (names an earlier sceneparse version used); a checkpoint with only
    ``num_classes`` is compared by count.

    Raises:
        ValueError: the class counts differ, or both have names and they differ (first differences listed).
    """
    classes = list(ckpt.get("meta", {}).get("classes") or [])
    count = len(classes) if classes else int(ckpt.get("num_classes", 0))
    ds_classes = list(getattr(dataset, "CLASSES", []))
    name = type(dataset).__name__
    if count != len(ds_classes):
        raise ValueError(f"{source} predicts {count} classes but {name} has {len(ds_classes)}: the "
                         "scores would be meaningless (evaluate a model trained on this dataset)")
    if not classes or any(classes == list(old) for old in getattr(dataset, "LEGACY_CLASS_NAMES", ())):
        return
    diff = [f"{i}: {a!r} vs {b!r}" for i, (a, b) in enumerate(zip(classes, ds_classes)) if a != b]
    if diff:
        raise ValueError(f"{source} and {name} name their classes differently ({'; '.join(diff[:5])}"
                         f"{'; ...' if len(diff) > 5 else ''}): the class ids would not mean the same things")


#: key of the sceneparse metadata (config, meta) in an OpenVINO IR's rt_info
IR_META_KEY = "sceneparse"


def save_ir(ov_model, path: str | Path, ckpt: dict, extra: dict | None = None) -> Path:
    """Write an OpenVINO IR (``path`` ``.xml`` and its ``.bin``) carrying the checkpoint's config and
    meta (JSON in ``rt_info``), so that every command reads it as ``--checkpoint``. Written to temporary
    names and renamed: never a partial pair.

    Raises:
        ValueError: ``path`` does not end in ``.xml``.
    """
    ov = require_extra("openvino", "openvino")
    path = Path(path)
    if path.suffix != ".xml":
        raise ValueError(f"an OpenVINO IR path ends in .xml, got {path}")
    info = {"config": ckpt["config"], "meta": ckpt.get("meta", {}), **(extra or {})}
    ov_model = ov_model.clone()
    ov_model.set_rt_info(json.dumps(info), [IR_META_KEY])
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_path(path)  # .xml, and its .bin beside it
    ov.save_model(ov_model, str(tmp), compress_to_fp16=False)
    tmp.with_suffix(".bin").replace(path.with_suffix(".bin"))
    tmp.replace(path)
    return path


def _openvino_reason(e: Exception) -> str:
    """The informative line of an OpenVINO exception (its first lines name C++ source files)."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    useful = [ln for ln in lines if not ln.startswith(("Exception from", "Check '")) and ".cpp:" not in ln]
    return (useful or lines or [type(e).__name__])[-1][:300]


def read_ir_info(ov_model) -> dict | None:
    """The sceneparse metadata dict :func:`save_ir` stored in an ``openvino.Model``'s rt_info (config, meta,
    extras such as ``quantization`` / ``input_geometry``); None for an IR of another tool or non-JSON metadata."""
    try:
        info = json.loads(str(ov_model.get_rt_info([IR_META_KEY]).astype(str)))
    except Exception:  # no such rt_info key, or not JSON
        return None
    return info if isinstance(info, dict) else None


def load_ir_checkpoint(path: str | Path) -> dict:
    """A checkpoint-like dict for an IR written by :func:`save_ir`: ``config``, ``meta``, ``num_classes``,
    ``openvino_ir`` (the path) and the extra entries (e.g. ``quantization``). No weights are read yet.

    Raises:
        FileNotFoundError: the ``.xml`` or the ``.bin`` beside it is missing (the message names it).
        CheckpointError: not readable, or an IR without sceneparse metadata.
    """
    ov = require_extra("openvino", "openvino")
    path = Path(path)
    for f in (path, path.with_suffix(".bin")):  # the weights live beside the graph
        if not f.is_file():
            raise FileNotFoundError(2, "No such file or directory", str(f))
    weights = path.with_suffix(".bin")
    if weights.stat().st_size == 0:
        raise CheckpointError(f"{path}: its weights file {weights} is empty")
    try:
        ov_model = ov.Core().read_model(str(path))
    except Exception as e:
        raise CheckpointError(f"cannot read OpenVINO IR {path} (weights {weights}, {weights.stat().st_size} bytes): "
                              f"{_openvino_reason(e)}") from None
    info = read_ir_info(ov_model)
    if info is None:
        raise CheckpointError(f"{path}: an OpenVINO IR without sceneparse metadata (written by another tool?); "
                              "make one with sceneparse quantize")
    if "config" not in info or "classes" not in info.get("meta", {}):
        raise CheckpointError(f"{path}: its sceneparse metadata has no config / meta.classes")
    info.update(openvino_ir=str(path), num_classes=len(info["meta"]["classes"]), model={})
    return info
