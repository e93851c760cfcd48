"""The packaged models: their files in ``sceneparse/weights``, names, and the metadata they carry
(``recipe``, ``train_splits``, validation ``metrics``); ``pack_checkpoint`` makes one from a training run."""
from __future__ import annotations

import json
from pathlib import Path

from .checkpoint import atomic_save, load_checkpoint, require_torch_weights, save_safetensors
from .constants import DEFAULT_MODEL, PACKAGED_WEIGHTS_DIR


def packaged_weights() -> dict[str, Path]:
    """``{name: file}`` of the models shipped in ``sceneparse/weights`` (``.pt`` and ``.safetensors``)."""
    files = sorted(PACKAGED_WEIGHTS_DIR.glob("*.pt")) + sorted(PACKAGED_WEIGHTS_DIR.glob("*.safetensors"))
    return {f.stem: f for f in files}


def resolve_weights(name_or_path: str | Path | None = None) -> Path:
    """A packaged model's file (``None``: the default one; also ``sceneparse/weights/<name>.pt`` given
    relative to a repository checkout, found after a wheel install too) or an existing file path.

    Raises:
        ValueError: neither a packaged name nor an existing file (the message lists the names).
    """
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
