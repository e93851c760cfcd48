"""Checkpoints: safe loading, atomic finite-only writes, and rebuilding a model from a checkpoint alone.

A checkpoint is a ``torch.save`` dict with ``model`` (state dict), ``config``
(the resolved config as a plain dict), ``meta`` (class names, palette,
mean/std) and, for training checkpoints, ``optimizer``, ``scheduler``,
``scaler``, ``iter`` and ``rng``. Every value is a tensor or a plain Python
type, so every file loads with ``torch.load(..., weights_only=True)``: reading
a checkpoint never runs code from it. A file that can only be read by unsafe
unpickling is refused (:class:`UnsafeCheckpointError`).
"""
from __future__ import annotations

import io
import json
import pickle
import re
from pathlib import Path

import torch

from .outputs import write_bytes_atomically
from ..models import SegmentationModel, build_model

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


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def packaged_weights() -> dict[str, Path]:
    """``{name: file}`` of the models shipped in ``sceneparse/weights`` (``.pt`` and ``.safetensors``)."""
    from ..constants import PACKAGED_WEIGHTS_DIR

    files = sorted(PACKAGED_WEIGHTS_DIR.glob("*.pt")) + sorted(PACKAGED_WEIGHTS_DIR.glob("*.safetensors"))
    return {f.stem: f for f in files}


def resolve_weights(name_or_path: str | Path | None = None) -> Path:
    """A packaged model's file (``None``: the default one; also ``sceneparse/weights/<name>.pt`` given
    relative to a repository checkout, found after a wheel install too) or an existing file path.

    Raises:
        ValueError: neither a packaged name nor an existing file (the message lists the names).
    """
    from ..constants import DEFAULT_MODEL

    packaged = packaged_weights()
    name = DEFAULT_MODEL if name_or_path is None else str(name_or_path)
    if name in packaged:
        return packaged[name]
    path = Path(name)
    if path.is_file():
        return path
    if path.parent.as_posix().endswith("sceneparse/weights") and path.stem in packaged:
        return packaged[path.stem]
    raise ValueError(f"model {name!r} is neither a packaged model ({', '.join(packaged) or 'none installed'}) "
                     "nor an existing checkpoint file")


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
        raise CheckpointError(f"{path} is not a checkpoint (neither a torch.save nor a .safetensors file)")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        first_error = e
    except Exception as e:  # truncated / corrupt / not a torch file
        raise CheckpointError(f"cannot read checkpoint {path}: {_first_line(e)}") from e
    try:
        found = [str(g) for g in torch.serialization.get_unsafe_globals_in_checkpoint(path)]
    except Exception:  # not a zip checkpoint: a raw pickle, whose opcodes name its globals
        found = _pickle_globals(path) or re.findall(r"GLOBAL ([\w.]+)", str(first_error))
    if not found:  # no global named anywhere: a truncated or corrupt file, not a malicious one
        raise CheckpointError(f"cannot read checkpoint {path}: corrupt or truncated ({_first_line(first_error)})")
    unsafe = [g for g in found if g not in _LEGACY_NUMPY_GLOBALS]
    if not unsafe:
        try:
            with torch.serialization.safe_globals(_legacy_numpy_allowlist()):
                return torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as e:
            unsafe = re.findall(r"GLOBAL ([\w.]+)", str(e)) or [_first_line(e)]
        except Exception as e:
            raise CheckpointError(f"cannot read checkpoint {path}: {_first_line(e)}") from e
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


def remove_stale_temporaries(folder: str | Path) -> list[Path]:
    """Delete ``.*.tmp<pid>`` files :func:`atomic_save` left in ``folder`` (a process killed mid-write).
    Call only while holding the run directory's lock, so no live writer owns them."""
    removed = []
    folder = Path(folder)
    if folder.is_dir():
        for p in folder.glob(".*.tmp*"):
            if re.fullmatch(r"\..+\.tmp\d+", p.name) and p.is_file():
                p.unlink(missing_ok=True)
                removed.append(p)
    return removed


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
        raise CheckpointError(f"cannot read checkpoint {path}: {str(e).splitlines()[0]}") from e
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
        from .backends import load_ir_checkpoint

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


def front_spec(ckpt: dict) -> dict:
    """The architecture of a checkpoint's model as the ``front`` of a refinement cascade: its
    ``config.model`` entries plus ``num_classes`` and the input normalisation (``mean``/``std``)."""
    m, meta = ckpt["config"]["model"], ckpt.get("meta", {})
    spec = {k: m[k] for k in ("arch", "backbone", "output_stride", "head", "deep_stem", "multi_grid") if k in m}
    spec["num_classes"] = len(meta["classes"]) if "classes" in meta else int(ckpt["num_classes"])
    spec.update({k: list(meta[k]) for k in ("mean", "std") if k in meta})
    return spec


def build_model_from_config(m: dict, num_classes: int, pretrained=None, front: dict | None = None,
                            weights_follow: bool = False) -> tuple[SegmentationModel, dict | None]:
    """The one place a ``config.model`` section becomes a model.

    For ``arch: refine`` the front comes from ``front`` (a :func:`front_spec`, e.g. stored in a
    refinement checkpoint's ``meta.front``) or else from the checkpoint file named by
    ``model.head.front``, whose weights are then loaded into ``model.front``.

    Returns:
        ``(model, front spec or None)``; the spec is what a checkpoint must keep to be rebuilt alone.

    Raises:
        ValueError / CheckpointError: bad options, or an unreadable front checkpoint.
    """
    head = dict(m.get("head") or {})
    front_state = None
    if m["arch"] == "refine":
        if front is None:
            if not isinstance(head.get("front"), str):
                raise ValueError("model.head.front must name the front model's checkpoint")
            front_ckpt = load_checkpoint(resolve_weights(head["front"]))
            if front_ckpt["config"]["model"]["arch"] == "refine":
                raise ValueError(f"model.head.front={head['front']} is itself a refinement cascade; the front must "
                                 "be a single model (fcn, pspnet, deeplabv3, ...): continue a cascade with "
                                 "model.init_weights instead")
            require_finite(front_ckpt["model"], f"model.head.front={head['front']}")
            front, front_state = front_spec(front_ckpt), front_ckpt["model"]
        head["front"] = front
    model = build_model(m["arch"], m["backbone"], num_classes, m["output_stride"], pretrained=pretrained,
                        deep_stem=m.get("deep_stem", False), multi_grid=m.get("multi_grid"),
                        weights_follow=weights_follow, **head)
    if front_state is not None:
        load_model_weights(model.front, {k: v.float() if v.is_floating_point() else v for k, v in front_state.items()})
    return model, front


def require_torch_weights(ckpt: dict, path: str | Path, command: str) -> None:
    """Raise ``CheckpointError`` when ``ckpt`` is an OpenVINO IR (no PyTorch weights; ``command`` needs them)."""
    if "openvino_ir" in ckpt:
        raise CheckpointError(f"{path} is an OpenVINO IR (a compiled graph, no PyTorch weights): {command} needs "
                              "the PyTorch checkpoint it was made from (.pt / .safetensors or a packaged model name)")


def model_from_checkpoint(ckpt: dict | str | Path, output_stride: int | None = None,
                          device: str | torch.device = "cpu") -> tuple[SegmentationModel, dict]:
    """Rebuild the model a checkpoint was trained with and load its weights (float32, eval mode).

    Args:
        ckpt: a checkpoint dict or path.
        output_stride: evaluate at another output_stride than training (same weights).

    Returns:
        ``(model, ckpt)``.

    Raises:
        CheckpointError: unreadable / not a checkpoint (see :func:`load_checkpoint`).
        NonFiniteModelError: weights hold NaN/inf (such a model predicts one class everywhere).
        ValueError: the weights do not fit the architecture in the checkpoint's config
            (the message lists missing / unexpected / mis-shaped keys).
    """
    source = "checkpoint"
    if not isinstance(ckpt, dict):
        source = str(ckpt)
        ckpt = load_checkpoint(ckpt)
    if "openvino_ir" in ckpt:  # run by OpenVINO (engine.backends); fp32 layers between the int8 ones
        from .backends import OpenVINOModel

        if output_stride and output_stride != ckpt["config"]["model"]["output_stride"]:
            raise ValueError(f"{ckpt['openvino_ir']} is a compiled graph at output_stride "
                             f"{ckpt['config']['model']['output_stride']}; it cannot run at {output_stride}")
        return OpenVINOModel(ckpt["openvino_ir"], output_stride=ckpt["config"]["model"]["output_stride"]), ckpt
    require_finite(ckpt["model"], f"{source} (a diverged training)")
    meta = ckpt.get("meta", {})
    num_classes = len(meta["classes"]) if "classes" in meta else ckpt["num_classes"]
    # a refinement checkpoint keeps its front's architecture in meta.front (its weights are front.*); one
    # written before that reads the front's file named in its config (which must still exist)
    model, _ = build_model_from_config(ckpt["config"]["model"], num_classes, front=meta.get("front"),
                                       weights_follow=True)
    state = {k: v.float() if v.is_floating_point() else v for k, v in ckpt["model"].items()}
    load_model_weights(model, state)
    # built as trained, then switched as a whole: a model made of several strided parts (a refinement
    # cascade's front and GRN) must not end up with the parts at different strides
    if output_stride and output_stride != getattr(model, "output_stride", output_stride):
        model.set_output_stride(output_stride)
    return model.to(device).eval(), ckpt


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


def load_model_weights(model: torch.nn.Module, state: dict, allow_missing: tuple[str, ...] = ("aux_head.",)) -> list:
    """Strict load with a readable mismatch report; returns the missing keys that were allowed.

    Keys starting with a prefix in ``allow_missing`` may be absent (deployment checkpoints drop
    the auxiliary head; a refinement stage starts from the previous stage without its new network).
    """
    own = model.state_dict()
    allowed = [k for k in own if k not in state and k.startswith(allow_missing)]
    missing = [k for k in own if k not in state and not k.startswith(allow_missing)]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k}: {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in state
              if k in own and state[k].shape != own[k].shape]
    if missing or unexpected or shapes:
        raise ValueError("checkpoint does not fit this model:\n"
                         + (f"  missing: {missing[:8]}{'...' if len(missing) > 8 else ''}\n" if missing else "")
                         + (f"  unexpected: {unexpected[:8]}\n" if unexpected else "")
                         + (f"  shape mismatch: {shapes[:8]}\n" if shapes else ""))
    model.load_state_dict(state, strict=False)
    return allowed


def recipe_summary(cfg: dict, iters: int | None = None) -> str:
    """One line saying how a checkpoint was trained, from its config, e.g. ``pspnet efficientnet_lite0
    OS16, ImageNet init; camvid train, crops 360x480, scale 0.5-2.0, rotate 10, blur 0.5; batch 8, 2700
    iterations (60 epochs), sgd lr 0.01 (head x10), poly 0.9, aux 0.4; loss CE``."""
    m, d, t = cfg.get("model", {}), cfg.get("data", {}), cfg.get("train", {})
    if m.get("arch") is None:
        return "unknown (the checkpoint's config has no model section)"
    init = ("ImageNet init" if m.get("pretrained") is True else f"init {m['pretrained']}" if m.get("pretrained")
            else "random init")
    if m.get("init_weights"):
        init += f", fine-tuned from {Path(str(m['init_weights'])).name}"
    splits = "+".join(d.get("train_splits") or [d.get("train_split", "train")])
    aug = [f"crops {d['crop_size'][0]}x{d['crop_size'][1]}" if d.get("crop_size") else None,
           f"scale {d['scale_range'][0]}-{d['scale_range'][1]}" if d.get("scale_range") else None,
           f"rotate {d['rotate']:g}" if d.get("rotate") else None, f"blur {d['blur']:g}" if d.get("blur") else None,
           f"colour jitter {d['color_jitter']:g}" if d.get("color_jitter") else None]
    loss = ["CE" if not t.get("ohem_thresh") else f"OHEM CE (thresh {t['ohem_thresh']}, min_kept {t.get('ohem_min_kept')})"]
    if t.get("class_weighting", "none") != "none":
        loss.append(f"{t['class_weighting']} class weights")
    for key, name in (("dice_weight", "Dice"), ("lovasz_weight", "Lovasz")):
        if t.get(key):
            loss.append(f"{t[key]:g} {name}")
    extras = [f"EMA {t['ema_decay']}" if t.get("ema_decay") else None, f"amp {t['amp']}" if t.get("amp") == "bf16" else None,
              f"warmup {t['warmup_iters']}" if t.get("warmup_iters") else None]
    length = f"{iters} iterations" if iters else (f"{t['iters']} iterations" if t.get("iters") else "")
    if t.get("epochs") and not t.get("iters"):
        length = f"{length} ({t['epochs']} epochs)" if length else f"{t['epochs']} epochs"
    parts = [f"{m.get('arch')} {m.get('backbone')} OS{m.get('output_stride')}, {init}",
             ", ".join([f"{d.get('dataset')} {splits}"] + [a for a in aug if a]),
             ", ".join(x for x in [f"batch {t.get('batch_size')}", length,
                                   f"{t.get('optimizer', 'sgd')} lr {t.get('lr')} (head x{t.get('head_lr_mult', 10.0):g})",
                                   f"poly {t.get('poly_power', 0.9)}", f"aux {t.get('aux_weight')}"] + [e for e in extras if e] if x),
             "loss " + " + ".join(loss)]
    return "; ".join(parts)


def pack_checkpoint(src: str | Path, out: str | Path, fp16: bool = False, metrics: str | Path | None = None) -> int:
    """Strip a checkpoint to deployment weights: no optimizer state, no auxiliary head; ``fp16`` halves
    the floating-point tensors; ``metrics`` (a JSON file) is embedded. ``out`` ending in
    ``.safetensors`` is written by :func:`save_safetensors`, else by :func:`atomic_save`. The metadata gains
    ``recipe`` (:func:`recipe_summary`) and ``train_splits`` when the checkpoint lacks them.

    Returns:
        the number of tensors written.

    Raises:
        ValueError: ``metrics`` is not readable JSON; see :func:`load_checkpoint` / :func:`atomic_save`.
    """
    ckpt = load_checkpoint(src)
    require_torch_weights(ckpt, src, "pack")
    state = {k: (v.half() if fp16 and v.is_floating_point() else v)
             for k, v in ckpt["model"].items() if not k.startswith("aux_head.")}
    meta = dict(ckpt["meta"])
    data = ckpt["config"].get("data", {})
    if "train_splits" not in meta:
        meta["train_splits"] = list(data.get("train_splits") or [data.get("train_split", "train")])
    if "recipe" not in meta:
        meta["recipe"] = recipe_summary(ckpt["config"], ckpt.get("iter"))
    packed = {"model": state, "config": ckpt["config"], "meta": meta, "iter": ckpt.get("iter")}
    if not metrics and ckpt.get("metrics"):  # repacking a packed file keeps its scores
        packed["metrics"] = ckpt["metrics"]
    if metrics:
        try:
            packed["metrics"] = json.loads(Path(metrics).read_text())
        except (OSError, ValueError) as e:
            raise ValueError(f"--metrics {metrics}: cannot read it as JSON ({e})") from e
    (save_safetensors if Path(out).suffix == ".safetensors" else atomic_save)(packed, out)
    return len(state)
