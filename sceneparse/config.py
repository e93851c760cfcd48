"""Experiment configuration: one YAML per experiment, validated against typed defaults.

Built on OmegaConf. ``load_config(path, overrides)`` merges the YAML and
``key=value`` overrides (dotted keys, e.g. ``train.iters=100``) over the
dataclass defaults below; an unknown key is rejected with the closest valid
key suggested.
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, ValidationError

from .models.backbones import IMAGENET_MEAN, IMAGENET_STD


@dataclass
class ModelConfig:
    arch: str = "pspnet"
    backbone: str = "efficientnet_lite0"
    output_stride: int = 8
    pretrained: Any = True  # True (packaged weights), a .pth path (ResNet), or null
    deep_stem: bool = False
    multi_grid: Optional[List[int]] = None
    head: Dict[str, Any] = field(default_factory=dict)  # head options passed to build_model
    init_weights: Optional[str] = None  # start from this checkpoint's model weights (fine-tuning, not resume)


@dataclass
class DataConfig:
    dataset: str = "camvid"
    root: str = "../shared/data/camvid"
    train_split: str = "train"
    val_split: str = "val"
    crop_size: List[int] = field(default_factory=lambda: [360, 480])  # H, W
    scale_range: List[float] = field(default_factory=lambda: [0.5, 2.0])
    rotate: float = 10.0
    blur: float = 0.5
    hflip: float = 0.5
    mean: List[float] = field(default_factory=lambda: list(IMAGENET_MEAN))
    std: List[float] = field(default_factory=lambda: list(IMAGENET_STD))
    num_workers: int = 2
    max_train_samples: int = 0  # >0: use only the first N training pairs (smoke runs, tests)
    max_val_samples: int = 0
    bootstrap_classes: List[str] = field(default_factory=list)  # DeepLabv3 Sec. 4.4: duplicate images with these
    bootstrap_copies: int = 1  # extra copies of each such image
    check: bool = True  # scan both splits for bad files before training (refuse with a report)


@dataclass
class TrainConfig:
    batch_size: int = 8  # global batch: split over torchrun processes and accumulation steps
    accum_steps: int = 1  # gradient accumulation: micro-batches of batch_size / (processes * accum_steps)
    iters: int = 0  # total iterations; 0 -> derived from epochs
    epochs: int = 50
    lr: float = 0.01
    head_lr_mult: float = 10.0  # new layers learn 10x faster than the pretrained backbone
    momentum: float = 0.9
    weight_decay: float = 1e-4
    poly_power: float = 0.9
    aux_weight: float = 0.4
    amp: bool = True  # mixed precision on CUDA only
    upsample_logits: bool = True  # False: downsample labels to the logits instead (DeepLabv3 Table 8 "UL")
    freeze_bn: bool = False  # BN statistics and affine parameters fixed (DeepLabv3 Sec. 4.1, Table 8 "BN")
    channels_last: bool = True
    eval_interval: int = 0  # iterations between validations; 0 -> once per epoch
    ckpt_interval: int = 200
    keep_checkpoints: int = 3
    log_interval: int = 10
    seed: int = 0
    device: str = "auto"
    threads: int = 0  # torch CPU threads; 0 -> torch default
    deterministic: bool = False  # GPU: deterministic kernels (slower); CPU training is reproducible without it
    nan_skips: int = 0  # non-finite losses tolerated (step skipped) before training stops


@dataclass
class Config:
    name: str = "experiment"
    work_dir: str = "runs/${name}"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


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
    close = difflib.get_close_matches(str(key), _all_keys(schema), n=1, cutoff=0.5)
    hint = f"; did you mean '{close[0]}'?" if close and close[0] != key else ""
    return ConfigError(f"invalid config key or value '{key}': {str(err).splitlines()[0]}{hint}")


def load_config(path: str | Path | None = None, overrides: Sequence[str] = (), base: dict | None = None) -> DictConfig:
    """Defaults <- ``base`` (e.g. a checkpoint's config) <- YAML file <- ``key=value`` overrides, resolved.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ConfigError: unknown key (closest valid key suggested), bad value type or override syntax.
    """
    schema = OmegaConf.structured(Config)
    cfg = schema
    try:
        if base is not None:
            cfg = OmegaConf.merge(cfg, base)
        if path is not None:
            path = Path(path)
            if not path.is_file():
                raise FileNotFoundError(f"config file not found: {path}")
            cfg = OmegaConf.merge(cfg, OmegaConf.load(path))
        bad = [o for o in overrides if "=" not in o]
        if bad:
            raise ConfigError(f"overrides must look like key=value, got {bad}")
        if overrides:
            cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist(list(overrides)))
    except (ConfigKeyError, ConfigAttributeError, ValidationError) as e:
        raise _explain(e, schema) from e
    OmegaConf.resolve(cfg)
    return cfg


def to_dict(cfg: DictConfig) -> dict:
    return OmegaConf.to_container(cfg, resolve=True)


def save_config(cfg: DictConfig, path: str | Path) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(cfg, path, resolve=True)
