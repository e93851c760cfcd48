"""Training loop: SGD + poly learning rate, auxiliary loss, periodic validation, exact resume.

Reproducibility and exact resume (CPU): the order of samples is a function of
``(seed, epoch)`` and each sample's augmentation of ``(seed, epoch, index)``
(see ``SegmentationDataset.__getitem__``), so a run restarted from a
checkpoint at iteration ``t`` sees the same batches as an uninterrupted run
from ``t + 1`` on; the checkpoint also restores model, optimizer, scheduler,
AMP scaler and the global RNG states (dropout).
"""
from __future__ import annotations

import contextlib
import csv
import json
import os
import logging
import math
import random
import signal
import threading
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader
from tqdm import tqdm

from ..config import save_config, to_dict
from ..data import DataError, build_dataset, build_eval_transform, build_train_transform
from ..losses import SegLoss
from .checkpoint import (NonFiniteModelError, atomic_save, build_model_from_config, is_training_checkpoint,
                         list_checkpoints,
                         load_checkpoint, load_model_weights, nonfinite_tensors, remove_stale_temporaries)
from .distributed import EpochSampler, init_distributed, resolve_device  # noqa: F401  (EpochSampler re-exported)
from .runlock import RunLock
from .evaluate import evaluate_model
from .inference import InferenceConfig

log = logging.getLogger(__name__)

# loss_front / val_mIoU_front: a refinement stage's frozen front on the same batches / at step 0, so that a
# refiner worse than its input shows in the first log lines
LOG_FIELDS = ["iter", "epoch", "lr", "loss", "loss_aux", "loss_front", "val_mIoU", "val_aAcc", "val_mAcc",
              "val_mIoU_front", "time_s"]


def poly_lr_lambda(total_iters: int, power: float = 0.9):
    """Poly policy (PSPNet Sec. 4; DeepLab): ``lr = base * (1 - iter / max_iter) ** power``."""
    return lambda it: max(0.0, 1.0 - it / total_iters) ** power


def _rng_state() -> dict:
    """The global RNG states as tensors and plain values only (loads with ``weights_only=True``)."""
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    version, mt, gauss_next = random.getstate()
    state = {"torch": torch.get_rng_state(),
             "numpy": {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                       "has_gauss": int(has_gauss), "cached_gaussian": float(gauss)},
             "python": {"version": version, "state": list(mt), "gauss_next": gauss_next}}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    npy, py = state["numpy"], state["python"]
    if isinstance(npy, dict):
        np.random.set_state((npy["name"], npy["keys"].numpy().astype(np.uint32), npy["pos"], npy["has_gauss"],
                             npy["cached_gaussian"]))
    else:  # a checkpoint written before the RNG state was stored as tensors
        np.random.set_state(npy)
    random.setstate((py["version"], tuple(py["state"]), py["gauss_next"]) if isinstance(py, dict) else py)
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def dataset_meta(ds, cfg: DictConfig) -> dict:
    return {"classes": list(ds.CLASSES), "palette": [list(c) for c in ds.PALETTE],
            "mean": list(cfg.data.mean), "std": list(cfg.data.std), "dataset": cfg.data.dataset}


def _build_datasets(cfg: DictConfig):
    d = cfg.data
    train_tf = build_train_transform(d.crop_size, d.mean, d.std, d.scale_range, d.rotate, d.blur, d.hflip)
    train_ds = build_dataset(d.dataset, d.root, d.train_split, train_tf, seed=cfg.train.seed)
    val_ds = build_dataset(d.dataset, d.root, d.val_split, build_eval_transform(d.mean, d.std))
    if d.max_train_samples:
        train_ds.pairs = train_ds.pairs[: d.max_train_samples]
    if d.max_val_samples:
        val_ds.pairs = val_ds.pairs[: d.max_val_samples]
    if d.bootstrap_classes:
        bootstrap(train_ds, d.bootstrap_classes, d.bootstrap_copies)
    return train_ds, val_ds


def bootstrap(ds, classes, copies: int = 1) -> int:
    """Duplicate (``copies`` extra times) the training pairs whose label contains any of ``classes``
    (names or ids) -- DeepLabv3 Sec. 4.4 "bootstrapping on hard images". Returns how many pairs matched.

    Raises:
        ValueError: a class name the dataset does not have.
    """
    ids = set()
    for c in classes:
        if isinstance(c, int) or str(c).isdigit():
            ids.add(int(c))
        elif c in ds.CLASSES:
            ids.add(list(ds.CLASSES).index(c))
        else:
            raise ValueError(f"bootstrap class {c!r} not in {list(ds.CLASSES)}")
    hard = [pair for pair in ds.pairs if ids & set(np.unique(ds.load_label(pair[1])).tolist())]
    ds.pairs = ds.pairs + hard * copies
    log.info("bootstrapping: %d of %d training images contain %s; each added %d more time(s)",
             len(hard), len(ds.pairs) - len(hard) * copies, sorted(ids), copies)
    return len(hard)


def set_train_mode(model: torch.nn.Module, freeze_bn: bool = False) -> None:
    """``model.train()``; with ``freeze_bn`` every BatchNorm stays in eval mode (running statistics
    fixed) and its affine parameters get no gradient (DeepLabv3 Sec. 4.1 / Table 8)."""
    model.train()
    if freeze_bn:
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.eval()
                for p in m.parameters():
                    p.requires_grad_(False)


class _StopFlag:
    """Records SIGINT/SIGTERM instead of dying, so the loop can checkpoint and stop cleanly."""

    def __init__(self):
        self.signum = 0

    @contextlib.contextmanager
    def installed(self):
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        old = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}

        def handler(signum, frame):
            if self.signum:  # a second signal: stop now
                raise KeyboardInterrupt
            self.signum = signum
            log.warning("signal %d: finishing the current iteration, then saving a checkpoint", signum)

        for sig in old:
            signal.signal(sig, handler)
        try:
            yield self
        finally:
            for sig, h in old.items():
                signal.signal(sig, h)


class TrainingInterrupted(KeyboardInterrupt):
    """SIGINT/SIGTERM stopped training after a checkpoint of the last finished iteration was saved."""


def _load_resume(resume: str, ckpt_dir: Path) -> tuple[Path | None, dict | None]:
    """The checkpoint to resume from. ``"auto"``: the newest readable one in ``ckpt_dir`` (a truncated,
    corrupt, unsafe or non-finite file is skipped with a warning and the previous one used); none -> fresh
    start.

    Raises:
        ValueError: an explicit ``resume`` path that is not a training checkpoint (e.g. a ``final.pt``,
            which holds weights but no optimizer state), or one with NaN/inf weights.
    """
    if resume != "auto":
        path = Path(resume)
        if path.is_dir():
            raise ValueError(f"--resume {path} is a directory; give a training checkpoint file "
                             "(<run>/checkpoints/iter_*.pt) or 'auto' (the newest one of this run)")
        ckpt = load_checkpoint(path)
        if not is_training_checkpoint(ckpt):
            raise ValueError(f"{path} holds model weights only (a final or packed model: no optimizer, scheduler "
                             "or iteration), so training cannot continue from it. To continue an interrupted run "
                             "use --resume auto or --resume <run>/checkpoints/iter_*.pt; to fine-tune from these "
                             f"weights start a new run with model.init_weights={path}")
        if nonfinite_tensors(ckpt["model"]):
            raise ValueError(f"{path} has NaN/inf weights; resume from an earlier checkpoint")
        return path, ckpt
    rejected = []
    for path in reversed(list_checkpoints(ckpt_dir)):
        try:
            ckpt = load_checkpoint(path)
        except ValueError as e:
            reason, kind = str(e), "unreadable "
        else:
            if is_training_checkpoint(ckpt) and not nonfinite_tensors(ckpt["model"]):
                return path, ckpt
            reason = "no optimizer state" if not is_training_checkpoint(ckpt) else "NaN/inf weights"
            kind = ""
        log.warning("skipping %scheckpoint %s (%s); trying the previous one", kind, path, reason)
        rejected.append(f"{path.name}: {reason}")
    if rejected:  # a fresh start here would mix with (and be pruned by) these files
        raise ValueError(f"--resume auto: no usable checkpoint in {ckpt_dir} ({'; '.join(rejected[:3])}). "
                         "Resume from a file you trust with --resume PATH, or start over with --restart")
    return None, None


# keys that may differ between a run and its resumed continuation without changing what is computed
RESUME_FREE_KEYS = frozenset({"name", "work_dir", "train.threads", "data.num_workers",
                              "train.log_interval", "train.eval_interval", "train.ckpt_interval",
                              "train.keep_checkpoints", "data.check", "train.nan_skips",
                              "train.divergence_factor"})


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def config_changes(old: dict, new: dict) -> dict[str, tuple]:
    """``{dotted key: (old, new)}`` for every value that differs (keys absent on one side included)."""
    from ..config import ConfigError, load_config

    try:  # the old run's config over today's defaults: keys added since then compare with their default
        old = to_dict(load_config(base=old))
    except ConfigError:
        pass
    a, b = _flatten(old), _flatten(new)
    missing = object()
    return {k: (a.get(k), b.get(k)) for k in sorted(set(a) | set(b))
            if a.get(k, missing) != b.get(k, missing)}


def check_resume_config(old: dict, new: dict, allowed: tuple[str, ...], source: Path) -> dict[str, tuple]:
    """The changes between a checkpoint's config and this run's that the user allowed.

    Raises:
        ValueError: a changed key outside ``RESUME_FREE_KEYS`` and ``allowed`` (all such keys listed).
    """
    changes = config_changes(old, new)
    unknown = [k for k in allowed if k not in _flatten(new) and k not in changes]
    if unknown:
        raise ValueError(f"--allow-config-change: no config key {', '.join(unknown)} (keys look like train.lr)")
    refused = {k: v for k, v in changes.items() if k not in RESUME_FREE_KEYS and k not in allowed}
    if refused:
        lines = "\n".join(f"  {k}: {o!r} -> {n!r}" for k, (o, n) in refused.items())
        raise ValueError(f"the config differs from the one {source} was trained with:\n{lines}\nresuming would mix "
                         "the two. Resume with the original values, start a new work_dir, or allow the change "
                         f"explicitly: --allow-config-change {' '.join(refused)}")
    return {k: v for k, v in changes.items() if k not in RESUME_FREE_KEYS}


def _truncate_log(path: Path, last_iter: int) -> None:
    """Drop log rows written after the checkpoint we resume from."""
    if not path.is_file():
        return
    with path.open() as f:
        rows = [r for r in csv.DictReader(f) if int(r["iter"]) <= last_iter]
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, LOG_FIELDS)
        w.writeheader()
        w.writerows(rows)


def _truncate_jsonl(path: Path, last_iter: int) -> None:
    """Drop ``{"iter": ...}`` lines written after the checkpoint we resume from."""
    if path.is_file():
        def keep(line: str) -> bool:
            try:
                return json.loads(line).get("iter", 0) <= last_iter
            except ValueError:  # a line cut by a kill mid-append
                return False

        path.write_text("".join(ln + "\n" for ln in path.read_text().splitlines() if ln.strip() and keep(ln)))


def _append_log(path: Path, row: dict) -> None:
    new = not path.is_file()
    with path.open("a", newline="") as f:
        w = csv.DictWriter(f, LOG_FIELDS)
        if new:
            w.writeheader()
        w.writerow({k: row.get(k, "") for k in LOG_FIELDS})


# |weight| beyond this is divergence, not learning (BN makes convolutions scale-invariant, so a blow-up can
# stay finite: lr=1e30 gives finite weights of 3e31 after one step)
MAX_ABS_WEIGHT = 1e10


def _weight_problem(params: list) -> str | None:
    """``None`` when every parameter is finite and below ``MAX_ABS_WEIGHT`` in magnitude, else a description."""
    if not params:
        return None
    peak = torch.stack([p.detach().abs().amax().float() for p in params]).max().item()
    if not math.isfinite(peak):
        return "hold NaN/inf"
    return f"reached |w| = {peak:.2g} (> {MAX_ABS_WEIGHT:.0e})" if peak > MAX_ABS_WEIGHT else None


def train(cfg: DictConfig, resume: str | None = None, progress: bool = True,
          allow_config_change: tuple[str, ...] = (), restart: bool = False) -> dict:
    """Train the model described by ``cfg``; writes everything under ``cfg.work_dir``.

    Outputs: ``config.yaml`` (resolved), ``log.csv`` (loss, lr, validation
    scores), ``checkpoints/iter_*.pt`` (last ``keep_checkpoints``),
    ``final.pt`` (weights + config + meta), ``val_metrics.json``, ``curves.png``;
    ``resumes.jsonl`` records every resume and the config changes it was allowed.

    Safety: the run directory is locked (``.lock``, with the owner's pid) for the whole run, so a
    second training in it is refused; only finite weights are ever saved; a non-finite loss, a
    loss above ``train.divergence_factor`` x its running mean, or weights that become non-finite or
    absurdly large stop the run (``FloatingPointError``) and name the last good checkpoint.

    Args:
        resume: a checkpoint path, or ``"auto"`` for the newest one in the run's
            ``checkpoints/`` (fresh start when there is none).
        allow_config_change: dotted keys (e.g. ``"train.lr"``) allowed to differ from the resumed
            checkpoint's config; the new values are then really used. Any other change is refused.
        restart: a fresh start in a ``work_dir`` that holds an earlier run's checkpoints or ``final.pt``
            deletes that run's outputs first; without it such a start is refused (the two runs' files
            would mix: the old run's higher-numbered checkpoints would outlive the new ones).

    Returns:
        the last validation scores (dict, percent).

    Raises:
        RunLockedError: another live process trains in ``cfg.work_dir``.
        ValueError: bad resume checkpoint, a config change that was not allowed, or a fresh start over
            an earlier run without ``restart``.
        FloatingPointError: the training diverged (nothing non-finite was saved).
        OSError: a checkpoint could not be written (e.g. disk full; the previous one is kept).
    """
    main_proc = int(os.environ.get("RANK", "0")) == 0
    if not main_proc:
        return _train(cfg, resume, progress, tuple(allow_config_change))
    work_dir = Path(cfg.work_dir)
    if work_dir.exists() and not work_dir.is_dir():
        raise ValueError(f"work_dir {work_dir} is an existing file, not a directory")
    if work_dir.is_dir() and any(work_dir.iterdir()) and not _is_run_dir(work_dir):
        raise ValueError(f"work_dir {work_dir} holds files that are not a sceneparse run "
                         f"({', '.join(sorted(p.name for p in work_dir.iterdir())[:4])}...); training writes "
                         "config.yaml, log.csv, checkpoints/ there: choose a new or empty directory (--work-dir)")
    created = not work_dir.exists()
    work_dir.mkdir(parents=True, exist_ok=True)
    with RunLock(work_dir):  # a second training here is refused before anything below runs
        try:
            for p in remove_stale_temporaries(work_dir) + remove_stale_temporaries(work_dir / "checkpoints"):
                log.info("removed %s, left by a write that was interrupted", p)
            _fresh_start_check(cfg, work_dir, resume, restart)
            return _train(cfg, resume, progress, tuple(allow_config_change))
        except BaseException:
            # refused before training started (bad model option, data error, ...): while still holding the
            # lock, remove the folder this call created if it holds nothing but our bookkeeping
            if created and {p.name for p in work_dir.iterdir()} <= {".lock", "config.yaml"}:
                for p in work_dir.iterdir():
                    p.unlink()
                work_dir.rmdir()
            raise


def _is_run_dir(work_dir: Path) -> bool:
    """A directory a sceneparse training has used (it holds our lock file, checkpoints or final.pt)."""
    return ((work_dir / ".lock").exists() or (work_dir / "final.pt").exists()
            or bool(list_checkpoints(work_dir / "checkpoints")))


RUN_OUTPUTS = ("final.pt", "log.csv", "diagnostics.jsonl", "val_metrics.json", "resumes.jsonl", "curves.png")


def _fresh_start_check(cfg: DictConfig, work_dir: Path, resume: str | None, restart: bool) -> None:
    """Refuse a fresh start over an earlier run's checkpoints / final.pt, or (``restart``) delete them;
    never delete a file this run reads (``model.init_weights``, ``model.head.front``)."""
    from .outputs import same_file

    old = [*list_checkpoints(work_dir / "checkpoints"), *[work_dir / n for n in ("final.pt",) if (work_dir / n).exists()]]
    if resume == "auto" and list_checkpoints(work_dir / "checkpoints") and not restart:
        return  # resumes from them (or refuses, naming them, if none is usable)
    if resume not in (None, "auto") or not old:
        return
    if not restart:
        raise ValueError(f"work_dir {work_dir} already holds a run ({', '.join(p.name for p in old[-3:])}); "
                         + ("it has no training checkpoint to resume from; " if resume == "auto" else
                            "continue it with --resume auto, ")
                         + "train into another work_dir (--work-dir), or pass --restart to delete that run's "
                         "checkpoints and outputs and start over")
    doomed = [*list_checkpoints(work_dir / "checkpoints"), *[work_dir / n for n in RUN_OUTPUTS]]
    for key in ("model.init_weights", "model.head.front"):
        src = OmegaConf.select(cfg, key)
        if src and any(p.exists() and same_file(p, src) for p in doomed):
            raise ValueError(f"{key}={src} is an output of the run in {work_dir}, which --restart would delete; "
                             "copy it elsewhere first")
    for p in doomed:
        p.unlink(missing_ok=True)
    log.warning("--restart: deleted the earlier run's checkpoints and outputs in %s", work_dir)


def _train(cfg: DictConfig, resume: str | None, progress: bool, allow_config_change: tuple[str, ...]) -> dict:
    t = cfg.train
    rank, world, device = init_distributed(resolve_device(t.device))
    main_proc = rank == 0
    progress = progress and main_proc
    if t.threads:
        torch.set_num_threads(t.threads)
    if t.batch_size % (world * t.accum_steps):
        raise ValueError(f"train.batch_size {t.batch_size} must be divisible by processes x accum_steps "
                         f"({world} x {t.accum_steps})")
    micro_batch = t.batch_size // (world * t.accum_steps)
    work_dir = Path(cfg.work_dir)
    ckpt_dir = work_dir / "checkpoints"
    log_path = work_dir / "log.csv"
    cfg_dict = to_dict(cfg)
    ckpt_path, ckpt = _load_resume(resume, ckpt_dir) if resume else (None, None)
    changes = check_resume_config(ckpt["config"], cfg_dict, allow_config_change, ckpt_path) if ckpt else {}
    if main_proc:
        work_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, work_dir / "config.yaml")  # what this run uses, written only once it is accepted
        if ckpt_path is not None:
            with (work_dir / "resumes.jsonl").open("a") as f:
                f.write(json.dumps({"iter": ckpt["iter"], "checkpoint": str(ckpt_path), "time": time.time(),
                                    "changed": {k: list(v) for k, v in changes.items()}}) + "\n")
            if changes:
                log.warning("resuming with changed config (allowed): %s",
                            ", ".join(f"{k} {o!r} -> {n!r}" for k, (o, n) in changes.items()))

    random.seed(t.seed)
    np.random.seed(t.seed)
    torch.manual_seed(t.seed)
    if t.deterministic:  # CUDA: no atomics-based kernels (bilinear upsampling backward, scatter), no autotuning
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False

    train_ds, val_ds = _build_datasets(cfg)
    if cfg.data.check:
        from ..data.check import check_dataset, format_report

        for ds, split in ((train_ds, cfg.data.train_split), (val_ds, cfg.data.val_split)):
            report = check_dataset(ds, progress=progress)
            if report["problems"]:
                raise DataError(f"{cfg.data.dataset} split '{split}' has bad files; training refused:\n"
                                + format_report(report))
    iters_per_epoch = len(train_ds) // t.batch_size
    if iters_per_epoch == 0:
        raise ValueError(f"{len(train_ds)} training samples are fewer than batch_size={t.batch_size}")
    total = t.iters or t.epochs * iters_per_epoch
    eval_interval = t.eval_interval or iters_per_epoch

    fresh_init = ckpt_path is None and not cfg.model.init_weights
    model, front = build_model_from_config(cfg_dict["model"], train_ds.num_classes,
                                           pretrained=cfg.model.pretrained if fresh_init else None,
                                           front=(ckpt or {}).get("meta", {}).get("front"),
                                           weights_follow=not fresh_init)
    model = model.to(device)
    if cfg.model.init_weights and ckpt_path is None:
        # only what this run trains may be missing (a refinement stage's new network); anything else
        # missing, e.g. the GRN of a cascade whose LRN stage starts from a checkpoint without one, is an error
        new = model.trained_weight_prefixes()
        init_state = load_checkpoint(cfg.model.init_weights)["model"]
        if nonfinite_tensors(init_state):
            raise ValueError(f"model.init_weights={cfg.model.init_weights} has NaN/inf weights")
        try:
            fresh = load_model_weights(model, {k: v.float() if v.is_floating_point() else v
                                               for k, v in init_state.items()},
                                       allow_missing=new)
        except ValueError as e:
            only = f"only {', '.join(p + '*' for p in new)} may be missing"
            raise ValueError(f"model.init_weights={cfg.model.init_weights} lacks weights this run uses but does "
                             f"not train ({only}; e.g. an LRN stage needs a finished GRN stage, or "
                             f"model.head.grn=false): {e}") from e
        log.info("initialised the model from %s (%d tensors not in it keep their init)",
                 cfg.model.init_weights, len(fresh))
    model.set_train_logit_upsampling(bool(t.upsample_logits))
    set_train_mode(model, t.freeze_bn)
    if t.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if world > 1 and device.type == "cuda":  # the papers' multi-GPU BN: statistics over the global batch
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    elif world > 1 and main_proc:
        log.warning("SyncBatchNorm needs CUDA: on CPU each process normalises with its own batch statistics")
    # pretrained encoder at lr, new layers at lr * head_lr_mult; frozen parameters left out (the model decides)
    groups = model.param_groups(t.lr, t.head_lr_mult)
    if not any(g["params"] for g in groups):
        raise ValueError("the model has no trainable parameters")
    optimizer = torch.optim.SGD(groups, lr=t.lr, momentum=t.momentum, weight_decay=t.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, poly_lr_lambda(total, t.poly_power))
    use_amp = bool(t.amp) and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    criterion = SegLoss(aux_weight=t.aux_weight, downsample_labels=not t.upsample_logits)

    start = 0
    if ckpt_path is not None:
        load_model_weights(model, ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        scaler.load_state_dict(ckpt["scaler"])
        start = ckpt["iter"]
        _set_rng_state(ckpt["rng"])
        # what this run's config says is what is used (the optimizer state carries the old run's lr,
        # momentum and weight decay; the scheduler its base lr): identical unless a change was allowed
        lam = poly_lr_lambda(total, t.poly_power)
        for group, base in zip(optimizer.param_groups, (t.lr, t.lr * t.head_lr_mult)):
            group.update(initial_lr=base, lr=base * lam(start), momentum=t.momentum, weight_decay=t.weight_decay)
        scheduler.base_lrs = [t.lr, t.lr * t.head_lr_mult]
        if main_proc:
            _truncate_log(log_path, start)
            _truncate_jsonl(work_dir / "diagnostics.jsonl", start)
        log.info("resumed from %s at iteration %d/%d", ckpt_path, start, total)
    elif main_proc:  # a fresh start (an earlier run's checkpoints were refused or deleted before)
        log_path.unlink(missing_ok=True)
        (work_dir / "diagnostics.jsonl").unlink(missing_ok=True)

    raw = model  # the module itself: state dicts, evaluation, loss
    if world > 1:
        model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    sampler = EpochSampler(len(train_ds), t.batch_size, t.seed, start, total, rank, world)
    loader = DataLoader(train_ds, batch_size=micro_batch, sampler=sampler, num_workers=cfg.data.num_workers,
                        drop_last=True, pin_memory=device.type == "cuda",
                        generator=torch.Generator(),  # keep the global RNG untouched (exact resume)
                        persistent_workers=False)
    meta = dataset_meta(train_ds, cfg)
    if front is not None:  # a refinement model: its checkpoints rebuild without the front's file
        meta["front"] = front
    trainable = [p for p in raw.parameters() if p.requires_grad]

    def last_good() -> str:
        saved = list_checkpoints(ckpt_dir)
        if saved:
            return f"The last good checkpoint is {saved[-1]}."
        return f"No checkpoint was saved before this (train.ckpt_interval={t.ckpt_interval})."

    def save_checked(obj: dict, path: Path, it: int) -> None:
        try:
            atomic_save(obj, path)
        except NonFiniteModelError as e:
            raise FloatingPointError(f"iteration {it}: {e}; training diverged (train.lr={t.lr}). {last_good()}") from e

    def save(it: int) -> None:
        if not main_proc:
            return
        save_checked({"model": raw.state_dict(), "optimizer": optimizer.state_dict(),
                      "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(), "iter": it,
                      "rng": _rng_state(), "config": cfg_dict, "meta": meta}, ckpt_dir / f"iter_{it:08d}.pt", it)
        for old in list_checkpoints(ckpt_dir)[: -t.keep_checkpoints]:
            old.unlink(missing_ok=True)

    last_scores: dict = {}
    t0 = time.time()
    bar = tqdm(total=total, initial=start, desc="train", disable=not progress, dynamic_ncols=True)
    it = start
    def step(batches: list, it: int) -> tuple[int, dict | None]:
        """One optimisation step over ``accum_steps`` micro-batches; returns the new iteration count
        and the validation scores if it evaluated."""
        nonlocal skipped_nan, stopping, loss_avg
        optimizer.zero_grad(set_to_none=True)
        finite, sums = True, {}
        for i, batch in enumerate(batches):
            images = batch["image"].to(device, non_blocking=True)
            labels = batch["label"].to(device, non_blocking=True)
            if t.channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            sync = contextlib.nullcontext() if world == 1 or i == len(batches) - 1 else model.no_sync()
            with sync:
                with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=use_amp):
                    outputs = model(images)
                loss, parts = raw.loss(outputs, labels, criterion)
                finite = finite and bool(torch.isfinite(loss))
                if finite:
                    scaler.scale(loss / len(batches)).backward()
            for k, v in parts.items():
                sums[k] = sums.get(k, 0.0) + v / len(batches)
        parts = sums
        if world > 1:  # every rank must agree on skipping and on stopping; the log shows the global mean
            flag = torch.stack([torch.tensor(0.0 if finite else 1.0, device=device),
                                torch.tensor(float(stop.signum), device=device)]
                               + [parts[k].to(device).float().reshape(()) for k in sorted(parts)])
            dist.all_reduce(flag)
            finite = flag[0].item() == 0
            # a signal seen by any rank stops all ranks after this same iteration; one that arrives after
            # this all-reduce is agreed on at the next iteration's
            stopping = stopping or flag[1].item() > 0
            parts = {k: flag[2 + j] / world for j, k in enumerate(sorted(parts))}
        else:
            stopping = stopping or bool(stop.signum)
        batch = {"name": [n for b in batches for n in b["name"]]}
        if finite:
            value = float(parts["loss"])
            # divergence before NaN: a loss far above its running mean (floor 1: a low mean late in training
            # must not turn one hard batch into a stop)
            if t.divergence_factor and loss_avg is not None and value > t.divergence_factor * max(loss_avg, 1.0):
                raise FloatingPointError(
                    f"loss {value:.4g} at iteration {it + 1} is above {t.divergence_factor:g} x its running mean "
                    f"{loss_avg:.4g}: training diverged (train.lr={t.lr}); stopped before this step. {last_good()}")
            loss_avg = value if loss_avg is None else 0.9 * loss_avg + 0.1 * value
            scaler.step(optimizer)
            scaler.update()
            problem = _weight_problem(trainable)
            if problem:
                raise FloatingPointError(f"the weights {problem} after iteration {it + 1}: training diverged "
                                         f"(train.lr={t.lr}); stopping, nothing of it saved. {last_good()}")
        else:  # never step on (nor checkpoint) a non-finite loss
            optimizer.zero_grad(set_to_none=True)
            skipped_nan += 1
            msg = (f"non-finite loss at iteration {it + 1}, batch: {', '.join(batch['name'])}")
            if skipped_nan > t.nan_skips:
                raise FloatingPointError(f"{msg}; stopping (train.nan_skips={t.nan_skips}). {last_good()}")
            log.warning("%s; step skipped (%d of %d allowed)", msg, skipped_nan, t.nan_skips)
        lr = optimizer.param_groups[0]["lr"]
        scheduler.step()
        it += 1
        bar.update(1)
        bar.set_postfix(loss=f"{parts['loss'].item():.3f}", lr=f"{lr:.2e}")
        row, scores = None, None
        if main_proc and (it % t.log_interval == 0 or it == total):
            row = {"iter": it, "epoch": round(it / iters_per_epoch, 3), "lr": lr, "loss": parts["loss"].item(),
                   "loss_aux": parts.get("loss_aux", torch.tensor(float("nan"))).item(),
                   "time_s": round(time.time() - t0, 1)}
            if "loss_front" in parts:
                row["loss_front"] = parts["loss_front"].item()
            extra = {k: round(float(v), 5) for k, v in parts.items() if k not in LOG_FIELDS}
            if extra:  # model-specific diagnostics (e.g. the pyramid's supervised share per level)
                with (work_dir / "diagnostics.jsonl").open("a") as f:
                    f.write(json.dumps({"iter": it, **extra}) + "\n")
                if it == start + 1 or it == total:
                    log.info("iteration %d diagnostics: %s", it, extra)
        if main_proc and (it % eval_interval == 0 or it == total):
            scores = evaluate_model(raw, val_ds, device, progress=False,
                                    infer=InferenceConfig(channels_last=t.channels_last))
            row = row or {"iter": it, "epoch": round(it / iters_per_epoch, 3), "lr": lr,
                          "time_s": round(time.time() - t0, 1)}
            row.update(val_mIoU=round(scores["mIoU"], 3), val_aAcc=round(scores["aAcc"], 3),
                       val_mAcc=round(scores["mAcc"], 3))
            bar.write(f"iter {it}: val mIoU {scores['mIoU']:.2f} aAcc {scores['aAcc']:.2f}")
            set_train_mode(model, t.freeze_bn)
        if row:
            _append_log(log_path, row)
        if it % t.ckpt_interval == 0 or it == total:
            save(it)
        return it, scores

    if main_proc and start == 0 and raw.reference() is not None:
        # a refinement stage: the frozen front's val mIoU next to the untrained refined model's
        infer = InferenceConfig(channels_last=t.channels_last)
        front_scores = evaluate_model(raw.reference(), val_ds, device, progress=False, infer=infer)
        init_scores = evaluate_model(raw, val_ds, device, progress=False, infer=infer)
        _append_log(log_path, {"iter": 0, "epoch": 0.0, "val_mIoU": round(init_scores["mIoU"], 3),
                               "val_aAcc": round(init_scores["aAcc"], 3), "val_mAcc": round(init_scores["mAcc"], 3),
                               "val_mIoU_front": round(front_scores["mIoU"], 3), "time_s": 0.0})
        log.info("step 0: front val mIoU %.2f, refined (untrained) %.2f", front_scores["mIoU"], init_scores["mIoU"])
        set_train_mode(model, t.freeze_bn)

    skipped_nan, loss_avg = 0, None
    stop = _StopFlag()
    # single process: stop as soon as a signal is seen. Under torchrun the ranks stop only when the
    # all-reduce in step() says one of them saw a signal, so that no rank waits forever in a collective
    # for a rank that has already left (torchrun forwards SIGTERM to all workers, but not at the same
    # instant, and a signal sent to one worker reaches only that one)
    stopping = False
    data_iter = iter(loader)
    with stop.installed():
        while it < total and not stopping:
            try:
                batches = [next(data_iter) for _ in range(t.accum_steps)]
            except StopIteration:
                break
            except Exception:
                if stop.signum:  # a loader worker died of the same Ctrl+C
                    stopping = True
                    break
                raise
            it, scores = step(batches, it)
            last_scores = scores or last_scores
    bar.close()
    if stopping:
        save(it)
        if world > 1:  # rank 0 has written the checkpoint before any rank exits (torchrun tears the
            dist.barrier()  # group down as soon as one worker returns)
        raise TrainingInterrupted(f"stopped by signal {stop.signum or 'on another rank'} after iteration {it}; "
                                  f"checkpoint saved in {ckpt_dir}; continue with --resume auto")

    if world > 1:
        dist.barrier()
    if not main_proc:
        return last_scores
    save_checked({"model": raw.state_dict(), "config": cfg_dict, "meta": meta, "iter": it}, work_dir / "final.pt", it)
    if last_scores:
        (work_dir / "val_metrics.json").write_text(json.dumps(last_scores, indent=2))
    try:
        plot_curves(log_path, work_dir / "curves.png")
    except Exception as e:  # a plot must never lose a finished run
        log.warning("could not plot curves: %s", e)
    return last_scores


def plot_curves(log_csv: str | Path, out_png: str | Path) -> None:
    """Loss, learning rate and validation mIoU against iteration, from ``log.csv``."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with open(log_csv) as f:
        rows = list(csv.DictReader(f))

    def series(key):
        pts = [(int(r["iter"]), float(r[key])) for r in rows if r.get(key) not in ("", None)]
        return [p for p in pts if not math.isnan(p[1])]

    fig, axes = plt.subplots(1, 3, figsize=(14, 3.8))
    for key, label in (("loss", "main CE"), ("loss_aux", "aux CE"), ("loss_front", "front CE (same batch)")):
        pts = series(key)
        if pts:
            axes[0].plot(*zip(*pts), label=label)
    axes[0].set(title="training loss", xlabel="iteration")
    axes[0].legend()
    if series("lr"):
        axes[1].plot(*zip(*series("lr")))
    axes[1].set(title="backbone learning rate (poly)", xlabel="iteration")
    if series("val_mIoU"):
        axes[2].plot(*zip(*series("val_mIoU")), marker="o", label="model")
    if series("val_mIoU_front"):
        axes[2].axhline(series("val_mIoU_front")[0][1], color="gray", ls="--", label="frozen front")
        axes[2].legend()
    axes[2].set(title="validation mIoU (%)", xlabel="iteration")
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out_png, dpi=110)
    plt.close(fig)
