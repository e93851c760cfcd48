"""The model zoo: the models shipped inside the package (``sceneparse/weights``) and those in the model
folders beside it, their names, and the metadata they carry (``recipe``, ``train_splits``, validation
``metrics``); ``pack_checkpoint`` makes one from a training run.

Model folders, searched in this order (the first file of a name wins): ``sceneparse/weights`` (in the
wheel: the default model), the ``zoo/`` folder of a source checkout when it exists (for trained models kept
beside the package, so that the wheel stays small), each folder of the ``SCENEPARSE_MODELS`` environment variable
(``os.pathsep`` separated), then ``$XDG_CACHE_HOME/sceneparse/models`` (default ``~/.cache/sceneparse/models``). A file
``NAME.pt`` or ``NAME.safetensors`` there is the model ``NAME`` for ``sceneparse.load(NAME)``,
``--checkpoint NAME`` and ``sceneparse models``.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from .checkpoint import atomic_save, load_checkpoint, require_torch_weights, save_safetensors
from .constants import DEFAULT_MODEL, PACKAGED_WEIGHTS_DIR

MODELS_ENV = "SCENEPARSE_MODELS"
_CHECKOUT = Path(__file__).resolve().parents[2]
# a source checkout's zoo/ (editable install: src/sceneparse/hub.py); an installed wheel's folders are no checkout
CHECKOUT_ZOO = _CHECKOUT / "zoo" if (_CHECKOUT / "pyproject.toml").is_file() else None


def model_dirs() -> list[Path]:
    """The folders models are found in, in search order (see the module docstring); missing ones included."""
    extra = [Path(d).expanduser() for d in os.environ.get(MODELS_ENV, "").split(os.pathsep) if d.strip()]
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "sceneparse" / "models"
    return [PACKAGED_WEIGHTS_DIR, *([CHECKOUT_ZOO] if CHECKOUT_ZOO else []), *extra, cache]


def _models_in(folder: Path) -> dict[str, Path]:
    if not folder.is_dir():
        return {}
    files = sorted(folder.glob("*.pt")) + sorted(folder.glob("*.safetensors"))
    return {f.stem: f for f in files if f.is_file()}


def packaged_weights() -> dict[str, Path]:
    """``{name: file}`` of the models shipped in ``sceneparse/weights`` (``.pt`` and ``.safetensors``)."""
    return _models_in(PACKAGED_WEIGHTS_DIR)


def available_models() -> dict[str, Path]:
    """``{name: file}`` of every model in :func:`model_dirs`, the packaged ones first; a name found again in
    a later folder is left out (the earlier file wins)."""
    out: dict[str, Path] = {}
    for folder in model_dirs():
        for name, path in _models_in(folder).items():
            out.setdefault(name, path)
    return out


def resolve_weights(name_or_path: str | Path | None = None) -> Path:
    """A model's file by name (``None``: the default one; see :func:`available_models`; also
    ``[src/]sceneparse/weights/<name>.pt`` given relative to a repository checkout, found after a wheel
    install too) or an existing file path.

    Raises:
        ValueError: neither a model name nor an existing file (the message lists the names and folders).
    """
    models = available_models()
    name = DEFAULT_MODEL if name_or_path is None else str(name_or_path)
    if name in models:
        return models[name]
    path = Path(name)
    if path.is_file():
        return path
    packaged = packaged_weights()
    if path.parent.as_posix().endswith("sceneparse/weights") and path.stem in packaged:
        return packaged[path.stem]
    raise ValueError(f"model {name!r} is neither a model name ({', '.join(models) or 'none installed'}; searched "
                     f"{', '.join(str(d) for d in model_dirs())}; ${MODELS_ENV} adds folders; a source checkout's "
                     "zoo/ files can be copied into any of them) nor an existing checkpoint file")


_RECIPE_HEAD_KEYS = ("bins", "aspp_rates", "image_pooling", "cascade_blocks", "strides", "context", "relabel_policy",
                     "relabel_tau", "iterations", "grn", "lrn")


def output_stride_of(model_cfg: dict) -> int | None:
    """The stride of a model's output from its ``model`` config: ``output_stride``, except for the pyramidal
    output (an undilated backbone whose finest level, ``min(head.strides)``, is the output)."""
    strides = (model_cfg.get("head") or {}).get("strides")
    if model_cfg.get("arch") == "pyramid_output" and strides:
        return int(min(strides))
    return model_cfg.get("output_stride")


# architectures built with an auxiliary FCN head unless ``head.aux_head`` says otherwise (the others: without)
_AUX_BY_DEFAULT = ("pspnet",)


def recipe_summary(cfg: dict, iters: int | None = None, front: dict | None = None,
                   precision: str | None = None) -> str:
    """One line saying how a checkpoint was trained, from its config, e.g. ``pspnet efficientnet_lite0 OS16,
    ImageNet init, head bins 1-2-3-6; camvid train, crops 360x480, scale 0.5-2.0, rotate 10, blur 0.5; batch 8,
    2700 iterations (60 epochs), sgd lr 0.01 (head x10), poly 0.9, aux 0.4; loss CE`` (the head options the
    papers' ablations vary: PPM bins, ASPP rates, image pooling, pyramid strides, ...). ``front`` (a refinement
    cascade's ``meta["front"]``: arch, backbone, output_stride) names the frozen front it refines; ``precision``
    (``meta["train_precision"]``) adds ``bf16`` when training ran in bf16. The auxiliary weight is named only
    where it weighs something: a model with an auxiliary head, or a refinement cascade's GRN stage (the residual CE);
    the pyramidal output names its finest stride as the output stride and its own loss (Eq. 1)."""
    m, d, t = cfg.get("model", {}), cfg.get("data", {}), cfg.get("train", {})
    if m.get("arch") is None:
        return "unknown (the checkpoint's config has no model section)"
    init = ("ImageNet init" if m.get("pretrained") is True else f"init {m['pretrained']}" if m.get("pretrained")
            else "random init")
    if m.get("init_weights"):
        src = Path(str(m["init_weights"]))  # a run's final.pt / best.pt: its run folder says which run
        init += f", fine-tuned from {src.parent.name + '/' if src.name in ('final.pt', 'best.pt') and src.parent.name else ''}{src.name}"
    head = m.get("head") or {}
    shown = [(k, head[k]) for k in _RECIPE_HEAD_KEYS if k in head]  # the options the papers' ablations vary
    if shown:
        init += ", head " + " ".join(
            f"{k} {'-'.join(str(x) for x in v)}" if isinstance(v, (list, tuple)) else
            (k if v is True else f"no {k}" if v is False else f"{k} {v}") for k, v in shown)
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
    bf16 = t.get("amp") == "bf16" or str(precision or "").startswith("bf16")
    extras = [f"EMA {t['ema_decay']}" if t.get("ema_decay") else None, "bf16" if bf16 else None,
              f"warmup {t['warmup_iters']}" if t.get("warmup_iters") else None]
    length = f"{iters} iterations" if iters else (f"{t['iters']} iterations" if t.get("iters") else "")
    if t.get("epochs") and not t.get("iters"):
        length = f"{length} ({t['epochs']} epochs)" if length else f"{t['epochs']} epochs"
    schedule = f"poly {t.get('poly_power', 0.9)}"
    if t.get("lr_policy") == "step":
        drops = [f"{e:g}" for e in t.get("lr_step_epochs") or []]
        schedule = f"step x{t.get('lr_step_gamma', 0.1):g} at epoch{'s' if len(drops) > 1 else ''} {', '.join(drops)}"
    on = (f" on a frozen {front.get('arch')} {front.get('backbone')} OS{front.get('output_stride')} front"
          if front else "")
    arch, stride = m.get("arch"), output_stride_of(m)
    pyramid = arch == "pyramid_output"
    aux = ((arch == "refine" and head.get("train_stage", "grn") == "grn")  # the LRN stage has no auxiliary CE
           or (arch != "refine" and head.get("aux_head", arch in _AUX_BY_DEFAULT))) and not pyramid
    if pyramid:  # its own Eq. 1 in place of the CE; class weights and the Dice / Lovasz terms as listed above
        loss = ["Eq. 1 (CE per level + unity BCE)"] + loss[1:]
    parts = [f"{arch} {m.get('backbone')} OS{stride}{on}, {init}",
             ", ".join([f"{d.get('dataset')} {splits}"] + [a for a in aug if a]),
             ", ".join(x for x in [f"batch {t.get('batch_size')}", length,
                                   f"{t.get('optimizer', 'sgd')} lr {t.get('lr')} (head x{t.get('head_lr_mult', 10.0):g})",
                                   schedule, f"aux {t.get('aux_weight')}" if aux else None]
                        + [e for e in extras if e] if x),
             "loss " + " + ".join(loss)]
    return "; ".join(parts)


# keys that do not change what is trained (where it runs, how often it logs or evaluates)
_HOUSEKEEPING = {"name", "work_dir", "data.root", "data.num_workers", "train.eval_interval", "train.ckpt_interval",
                 "train.keep_checkpoints", "train.log_interval", "train.device", "train.threads", "train.tensorboard",
                 "train.tensorboard_images", "train.keep_best"}


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def _override_value(v) -> str:
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, (list, tuple)):
        return "[" + ",".join(_override_value(x) for x in v) + "]"
    return "null" if v is None else str(v)


def retrain_command(cfg: dict) -> str | None:
    """The ``sceneparse train`` command that trains ``cfg`` again: the shipped config of the same name
    (``camvid_pyramid_effl0`` -> ``camvid/pyramid_effl0``) and a ``key=value`` for every key that differs from
    it, less the housekeeping ones (work folder, data root, logging and evaluation intervals). ``None`` when no
    shipped config has that name. A refinement cascade's front is a path on the training machine."""
    from .config import load_config, packaged_configs, to_dict

    name = str(cfg.get("name", ""))
    shipped = [n for n in packaged_configs() if n.replace("/", "_") == name]
    if not shipped:
        return None
    base, mine = _flat(to_dict(load_config(shipped[0]))), _flat(cfg)
    missing = object()
    changed = [f"{k}={_override_value(v)}" for k, v in mine.items()
               if k not in _HOUSEKEEPING and base.get(k, missing) != v]
    return " ".join(["sceneparse train", shipped[0], *changed])


def pack_checkpoint(src: str | Path, out: str | Path, fp16: bool = False, metrics: str | Path | None = None) -> int:
    """Strip a checkpoint to deployment weights: no optimizer state, no auxiliary head; ``fp16`` halves
    the floating-point tensors; ``metrics`` (a JSON file) is embedded. ``out`` ending in
    ``.safetensors`` is written by :func:`save_safetensors`, else by :func:`atomic_save`. The metadata gains
    ``recipe`` (:func:`recipe_summary`, recomputed from the config, so repacking refreshes it) and
    ``train_splits`` when the checkpoint lacks it.

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
    if ckpt.get("config", {}).get("model") or "recipe" not in meta:  # recomputed: repacking refreshes it
        meta["recipe"] = recipe_summary(ckpt["config"], ckpt.get("iter"), meta.get("front"), meta.get("train_precision"))
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
