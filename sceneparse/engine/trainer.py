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
import shutil
import signal
import threading
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.distributed as dist
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader
from tqdm import tqdm

from ..config import save_config, to_dict
from ..data import DataError, build_dataset, build_eval_transform, build_train_transform
from ..losses import SegLoss
from ..report import json_safe
from .tracking import RunLog, validation_overlays
from .checkpoint import (NonFiniteModelError, atomic_save, build_model_from_config, is_training_checkpoint,
                         list_checkpoints, require_finite,
                         load_checkpoint, load_model_weights, nonfinite_tensors, remove_stale_temporaries)
from .distributed import EpochSampler, init_distributed, resolve_device  # noqa: F401  (EpochSampler re-exported)
from . import fast_train
from .runlock import RunLock
from .evaluate import evaluate_model
from .inference import InferenceConfig

log = logging.getLogger(__name__)

# loss_front / val_mIoU_front: a refinement stage's frozen front on the same batches / at step 0, so that a
# refiner worse than its input shows in the first log lines
LOG_FIELDS = ["iter", "epoch", "lr", "loss", "loss_aux", "loss_front", "val_mIoU", "val_aAcc", "val_mAcc",
              "val_mIoU_front", "time_s"]


def poly_lr_lambda(total_iters: int, power: float = 0.9, warmup_iters: int = 0, warmup_ratio: float = 0.1,
                   min_ratio: float = 0.0):
    """Poly policy (PSPNet Sec. 4; DeepLab): ``lr = base * (1 - iter / max_iter) ** power``, as a factor of
    the base lr. ``min_ratio`` floors it: ``(1 - min_ratio) * poly + min_ratio``; during the first
    ``warmup_iters`` the factor is multiplied by a linear ramp from ``warmup_ratio`` to 1 (as in
    mmsegmentation's warmup)."""
    def factor(it: int) -> float:
        f = (1.0 - min_ratio) * max(0.0, 1.0 - it / total_iters) ** power + min_ratio
        if it < warmup_iters:
            f *= warmup_ratio + (1.0 - warmup_ratio) * it / warmup_iters
        return f
    return factor


def step_lr_lambda(milestones: Sequence[int], gamma: float = 0.1, warmup_iters: int = 0, warmup_ratio: float = 0.1):
    """Step policy: the base lr times ``gamma`` once per milestone (iteration) passed, e.g. the GRN/LRN
    paper's "10 epochs at 0.001, then 10 at 0.0001" (Sec. 4.1) is ``milestones=[10 * iters_per_epoch]``,
    ``gamma=0.1``. The warmup ramp is that of ``poly_lr_lambda``."""
    marks = sorted(int(m) for m in milestones)

    def factor(it: int) -> float:
        f = gamma ** sum(it >= m for m in marks)
        if it < warmup_iters:
            f *= warmup_ratio + (1.0 - warmup_ratio) * it / warmup_iters
        return f
    return factor


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
            "mean": list(cfg.data.mean), "std": list(cfg.data.std), "dataset": cfg.data.dataset,
            "train_splits": list(cfg.data.train_splits) or [cfg.data.train_split]}


def _build_datasets(cfg: DictConfig):
    d = cfg.data
    train_tf = build_train_transform(d.crop_size, d.mean, d.std, d.scale_range, d.rotate, d.blur, d.hflip,
                                     d.color_jitter)
    splits = list(d.train_splits) or [d.train_split]
    train_ds = build_dataset(d.dataset, d.root, splits[0], train_tf, seed=cfg.train.seed)
    for split in splits[1:]:  # e.g. [train, val] for the final model of a benchmark protocol
        train_ds.pairs = train_ds.pairs + build_dataset(d.dataset, d.root, split).pairs
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
        require_finite(ckpt["model"], f"{path} (resume from an earlier checkpoint)")
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


def check_resume_fields(ckpt: dict, path: Path, total: int) -> None:
    """A training checkpoint's fields are input too: ``iter`` an integer in ``0..total`` (this run's
    length), ``rng`` the states ``_rng_state`` writes, ``optimizer`` / ``scheduler`` / ``scaler`` dicts.

    Raises:
        ValueError: one line naming the file and the field.
    """
    it = ckpt.get("iter")
    if isinstance(it, bool) or not isinstance(it, int) or not 0 <= it <= total:
        raise ValueError(f"{path}: field 'iter' = {str(it)[:40]!r} is not an iteration of this run (an integer in "
                         f"0..{total}, train.iters); the checkpoint is damaged or from a longer run (resume it with "
                         "its own train.iters / train.epochs)")
    for key in ("optimizer", "scheduler", "scaler"):
        if not isinstance(ckpt.get(key), dict):
            raise ValueError(f"{path}: field '{key}' is not a state dict (found {type(ckpt.get(key)).__name__})")
    rng = ckpt.get("rng")
    need = {"torch": (torch.Tensor,), "numpy": (dict, tuple, list), "python": (dict, tuple, list)}
    for key, kinds in need.items():
        if not isinstance(rng, dict) or not isinstance(rng.get(key), kinds):
            raise ValueError(f"{path}: field 'rng.{key}' is missing or of the wrong type; the checkpoint is "
                             "damaged (resume from an earlier one with --resume PATH, or start over with --restart)")
    np_state, py_state = rng["numpy"], rng["python"]
    ok = not isinstance(np_state, dict) or (
        isinstance(np_state.get("keys"), torch.Tensor) and np_state["keys"].numel() == 624
        and all(isinstance(np_state.get(k), (int, float)) for k in ("pos", "has_gauss", "cached_gaussian")))
    ok = ok and (not isinstance(py_state, dict) or (isinstance(py_state.get("state"), (list, tuple))
                                                     and len(py_state["state"]) == 625))
    if not ok:
        raise ValueError(f"{path}: field 'rng' does not hold the numpy / python generator states sceneparse writes; "
                         "the checkpoint is damaged")


# keys that may differ between a run and its resumed continuation without changing what is computed
RESUME_FREE_KEYS = frozenset({"name", "work_dir", "train.threads", "data.num_workers", "train.fast", "data.cache",
                              "train.log_interval", "train.eval_interval", "train.ckpt_interval",
                              "train.keep_checkpoints", "data.check", "train.nan_skips",
                              "train.divergence_factor", "train.keep_best", "train.tensorboard",
                              "train.tensorboard_images"}
                             # validation settings change the logged val scores, not the training
                             | {f"eval.{k}" for k in ("mode", "crop_size", "stride", "scales", "flip", "window_batch")})


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
        return Trainer(cfg, resume, progress, tuple(allow_config_change)).run()
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
            return Trainer(cfg, resume, progress, tuple(allow_config_change)).run()
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


RUN_OUTPUTS = ("final.pt", "best.pt", "log.csv", "diagnostics.jsonl", "val_metrics.json", "resumes.jsonl", "curves.png",
               "train.log")


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
    shutil.rmtree(work_dir / "tensorboard", ignore_errors=True)
    log.warning("--restart: deleted the earlier run's checkpoints and outputs in %s", work_dir)


class Trainer:
    """One training run of the model described by a config: ``Trainer(cfg).run()``.

    The stages are methods: :meth:`_accept` (resume checkpoint, config check, ``config.yaml``),
    :meth:`_build` (data, model, optimiser), :meth:`_restore` (resume state), :meth:`step` (one
    optimisation step), :meth:`validate`, :meth:`save` and :meth:`finish`. Everything model-specific
    goes through the model's interface (``models.base.SceneParser``): its loss, parameter groups,
    frozen reference and the weights an ``init_weights`` checkpoint may lack.
    Use :func:`train`, which also locks the run directory; this class assumes the lock is held.
    """

    def __init__(self, cfg: DictConfig, resume: str | None = None, progress: bool = True,
                 allow_config_change: tuple[str, ...] = ()):
        self.cfg, self.t = cfg, cfg.train
        self.rank, self.world, self.device = init_distributed(resolve_device(self.t.device))
        self.main = self.rank == 0
        self.progress = progress and self.main
        if self.t.threads:
            torch.set_num_threads(self.t.threads)
        if self.t.batch_size % (self.world * self.t.accum_steps):
            raise ValueError(f"train.batch_size {self.t.batch_size} must be divisible by processes x accum_steps "
                             f"({self.world} x {self.t.accum_steps})")
        self.work_dir = Path(cfg.work_dir)
        self.ckpt_dir, self.log_path = self.work_dir / "checkpoints", self.work_dir / "log.csv"
        self.cfg_dict = to_dict(cfg)
        self._accept(resume, allow_config_change)
        self._seed()
        self._build()
        self._restore()
        self._record_start()  # only once the resumed state loaded: a refused resume leaves the folder as it was
        self.skipped_nan, self.loss_avg, self.stopping = 0, None, False
        self.best = (self._resumed_best, None)  # (val mIoU, iteration) of best.pt
        self.stop = _StopFlag()
        self.t0 = time.time()

    # ---------------------------------------------------------------- setup
    def _accept(self, resume: str | None, allowed: tuple[str, ...]) -> None:
        """The checkpoint to resume from, refused if the config changed in keys not ``allowed``."""
        self.ckpt_path, self.ckpt = _load_resume(resume, self.ckpt_dir) if resume else (None, None)
        self._changes = (check_resume_config(self.ckpt["config"], self.cfg_dict, allowed, self.ckpt_path)
                         if self.ckpt else {})

    def _record_start(self) -> None:
        """``config.yaml`` (what this run uses) and, for a resume, a line in ``resumes.jsonl``: written once
        the model, optimizer and resumed state are built, so a refused start changes nothing."""
        changes = self._changes
        if not self.main:
            return
        self.work_dir.mkdir(parents=True, exist_ok=True)
        save_config(self.cfg, self.work_dir / "config.yaml")
        if self.ckpt_path is not None:
            with (self.work_dir / "resumes.jsonl").open("a") as f:
                f.write(json.dumps({"iter": self.start, "checkpoint": str(self.ckpt_path),
                                    "time": time.time(), "changed": {k: list(v) for k, v in changes.items()}}) + "\n")
            if changes:
                log.warning("resuming with changed config (allowed): %s",
                            ", ".join(f"{k} {o!r} -> {n!r}" for k, (o, n) in changes.items()))

    def _seed(self) -> None:
        t = self.t
        random.seed(t.seed)
        np.random.seed(t.seed)
        torch.manual_seed(t.seed)
        if t.deterministic:  # CUDA: no atomics-based kernels (bilinear upsampling backward, scatter), no autotuning
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.use_deterministic_algorithms(True, warn_only=True)
            torch.backends.cudnn.benchmark = False

    def _build(self) -> None:
        cfg, t = self.cfg, self.t
        self.train_ds, self.val_ds = _build_datasets(cfg)
        if cfg.data.check:
            _check_splits(cfg, self.train_ds, self.val_ds, self.progress)
        if cfg.data.cache is not False:  # decoded once here; the loader's forked workers share the arrays
            limit = (1 << 62) if cfg.data.cache is True else 2 << 30
            if self.train_ds.cache_decoded(limit) and self.main:
                log.info("data.cache: the %d training pairs are decoded once and kept in memory", len(self.train_ds))
        self.iters_per_epoch = len(self.train_ds) // t.batch_size
        if self.iters_per_epoch == 0:
            raise ValueError(f"{len(self.train_ds)} training samples are fewer than batch_size={t.batch_size}")
        self.total = t.iters or t.epochs * self.iters_per_epoch
        self.eval_interval = t.eval_interval or self.iters_per_epoch
        self.raw = self._build_model()
        self.trainable = [p for p in self.raw.parameters() if p.requires_grad]
        groups = self.raw.param_groups(t.lr, t.head_lr_mult)  # frozen parameters left out (the model decides)
        if not any(g["params"] for g in groups):
            raise ValueError("the model has no trainable parameters")
        if t.optimizer == "adamw":  # momentum is beta1
            self.optimizer = torch.optim.AdamW(groups, lr=t.lr, betas=(t.momentum, 0.999), weight_decay=t.weight_decay)
        else:
            self.optimizer = torch.optim.SGD(groups, lr=t.lr, momentum=t.momentum, weight_decay=t.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, self._lr_factor())
        # EMA of the weights (BN statistics included): what validation scores and final.pt / best.pt hold
        self.ema = (torch.optim.swa_utils.AveragedModel(
            self.raw, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(t.ema_decay), use_buffers=True)
            if t.ema_decay else None)
        # float16 autocast (with loss scaling) on CUDA; bfloat16 (no scaling needed) on CPU or CUDA on request
        # on CPU with train.amp's default, train.fast picks bf16 where it is the faster step (fast_train.choose_precision)
        cpu_bf16 = self.device.type == "cpu" and fast_train.choose_precision(self.device, t.amp, t.fast) == "bf16"
        self.amp_dtype = (torch.bfloat16 if t.amp == "bf16" or cpu_bf16 else
                          torch.float16 if t.amp in (True, "fp16") and self.device.type == "cuda" else None)
        self.use_amp = self.amp_dtype is not None
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype is torch.float16)
        self.criterion = SegLoss(aux_weight=t.aux_weight, downsample_labels=not t.upsample_logits,
                                 class_weight=self._class_weights(), ohem_thresh=t.ohem_thresh,
                                 ohem_min_kept=t.ohem_min_kept, dice_weight=t.dice_weight,
                                 lovasz_weight=t.lovasz_weight)
        self.fast = fast_train.enable(self.raw, self.criterion, self.device, t.fast, bool(t.upsample_logits),
                                      bf16=self.amp_dtype is torch.bfloat16)
        if self.fast.bf16_convs:  # bf16 through the patched dense convolutions instead of autocast
            self.use_amp = False
        elif self.amp_dtype is torch.bfloat16 and self.device.type == "cpu" and self.main:
            log.warning("bf16 autocast on the CPU without train.fast: PyTorch 2.14's CPU bf16 backward was seen "
                        "returning gradients of 1e20 in the first steps (AMD EPYC; a stale-memory read); the "
                        "divergence guard stops such a run. train.fast=auto trains bf16 without autocast")
        self.precision = ("bf16 (convolutions and activations)" if self.fast.bf16_activations else
                          "bf16 (backbone activations, dense convolutions)" if self.fast.bf16_backbone_activations
                          else "bf16 (dense convolutions)" if self.fast.bf16_convs else
                          "bf16 autocast" if self.amp_dtype is torch.bfloat16 else
                          "fp16 autocast" if self.amp_dtype is torch.float16 else "fp32")
        self.meta = dataset_meta(self.train_ds, cfg)
        if self.front is not None:  # a refinement model: its checkpoints rebuild without the front's file
            self.meta["front"] = self.front
        self.meta["train_precision"] = self.precision  # what train.fast / train.amp resolved to on this machine

    def _lr_factor(self):
        t = self.t
        if t.lr_policy == "step":
            marks = [round(e * self.iters_per_epoch) for e in t.lr_step_epochs]
            return step_lr_lambda(marks, t.lr_step_gamma, t.warmup_iters, t.warmup_ratio)
        return poly_lr_lambda(self.total, t.poly_power, t.warmup_iters, t.warmup_ratio, t.min_lr_ratio)

    def _class_weights(self) -> torch.Tensor | None:
        """``train.class_weighting``: CE weights from the training split's pixel counts (logged)."""
        if self.t.class_weighting == "none":
            return None
        from ..data.check import label_pixel_counts
        from ..losses import class_weights

        w = class_weights(label_pixel_counts(self.train_ds, self.progress), self.t.class_weighting)
        log.info("class weights (%s): %s", self.t.class_weighting,
                 ", ".join(f"{n} {v:.2f}" for n, v in zip(self.train_ds.CLASSES, w.tolist())))
        return w

    def _build_model(self) -> torch.nn.Module:
        """The model (``self.front``: a refinement model's front spec), initialised from
        ``model.init_weights`` where given, in train mode, on the device."""
        cfg, t = self.cfg, self.t
        fresh_init = self.ckpt_path is None and not cfg.model.init_weights
        model, self.front = build_model_from_config(self.cfg_dict["model"], self.train_ds.num_classes,
                                                    pretrained=cfg.model.pretrained if fresh_init else None,
                                                    front=(self.ckpt or {}).get("meta", {}).get("front"),
                                                    weights_follow=not fresh_init)
        model = model.to(self.device)
        if cfg.model.init_weights and self.ckpt_path is None:
            _init_from(model, cfg.model.init_weights)
        model.set_train_logit_upsampling(bool(t.upsample_logits))
        set_train_mode(model, t.freeze_bn)
        if t.channels_last:
            model = model.to(memory_format=torch.channels_last)
        if self.world > 1 and self.device.type == "cuda":  # the papers' multi-GPU BN: global batch statistics
            model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        elif self.world > 1 and self.main:
            log.warning("SyncBatchNorm needs CUDA: on CPU each process normalises with its own batch statistics")
        return model

    def _restore(self) -> None:
        """Resume state (weights, optimiser, schedule, scaler, RNG) or a fresh log; then the loader."""
        t, ckpt = self.t, self.ckpt
        self.start, self._resumed_best = 0, float("-inf")
        if ckpt is not None:
            check_resume_fields(ckpt, self.ckpt_path, self.total)
            load_model_weights(self.raw, ckpt["model"])
            for key, part in (("optimizer", self.optimizer), ("scheduler", self.scheduler), ("scaler", self.scaler)):
                try:
                    part.load_state_dict(ckpt[key])
                except (KeyError, TypeError, ValueError, RuntimeError, IndexError) as e:
                    raise ValueError(f"{self.ckpt_path}: field '{key}' does not fit this run's model and optimizer "
                                     f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None
            if self.ema is not None:
                if "ema" not in ckpt:
                    raise ValueError(f"{self.ckpt_path} was trained without train.ema_decay: no EMA state to resume")
                self.ema.load_state_dict(ckpt["ema"])
            self.start = ckpt["iter"]
            self._resumed_best = ckpt.get("best_mIoU", float("-inf"))
            try:
                _set_rng_state(ckpt["rng"])
            except (KeyError, TypeError, ValueError, RuntimeError) as e:
                raise ValueError(f"{self.ckpt_path}: field 'rng' cannot be restored ({type(e).__name__}: {e})") from None
            # what this run's config says is what is used (the optimizer state carries the old run's lr,
            # momentum and weight decay; the scheduler its base lr): identical unless a change was allowed
            lam = self._lr_factor()
            bases = [g["lr"] for g in self.raw.param_groups(t.lr, t.head_lr_mult)]  # the model's own groups
            for group, base in zip(self.optimizer.param_groups, bases, strict=True):
                group.update(initial_lr=base, lr=base * lam(self.start), weight_decay=t.weight_decay,
                             **({"betas": (t.momentum, 0.999)} if t.optimizer == "adamw" else {"momentum": t.momentum}))
            self.scheduler.base_lrs = bases
            if self.main:
                _truncate_log(self.log_path, self.start)
                _truncate_jsonl(self.work_dir / "diagnostics.jsonl", self.start)
            log.info("resumed from %s at iteration %d/%d", self.ckpt_path, self.start, self.total)
        elif self.main:  # a fresh start (an earlier run's checkpoints were refused or deleted before)
            self.log_path.unlink(missing_ok=True)
            (self.work_dir / "diagnostics.jsonl").unlink(missing_ok=True)
        self.ckpt = None  # the optimizer state is loaded: do not keep a second copy in memory
        self.model = self.raw  # what runs forward/backward: the DDP wrapper under torchrun
        if self.world > 1:
            self.model = torch.nn.parallel.DistributedDataParallel(
                self.raw, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        sampler = EpochSampler(len(self.train_ds), t.batch_size, t.seed, self.start, self.total, self.rank, self.world)
        self.loader = DataLoader(self.train_ds, batch_size=t.batch_size // (self.world * t.accum_steps),
                                 sampler=sampler, num_workers=self.cfg.data.num_workers, drop_last=True,
                                 pin_memory=self.device.type == "cuda",
                                 generator=torch.Generator(),  # keep the global RNG untouched (exact resume)
                                 persistent_workers=False)
        self.it = self.start

    # ---------------------------------------------------------------- the loop
    def run(self) -> dict:
        """Train to ``total`` iterations (or a signal); returns the last validation scores (percent)."""
        if self.main and self.start == 0 and self.raw.reference() is not None:
            self._score_reference()
        last: dict = {}
        self.runlog = RunLog(self.work_dir, self.t.tensorboard, self.start) if self.main else None
        if self.main:  # in train.log too: which kernels and precision this run (or resumed part) used
            log.info("%s; precision %s", self.fast.describe(), self.precision)
        try:
            return self._run(last)
        finally:
            if self.runlog is not None:
                self.runlog.close()

    def _run(self, last: dict) -> dict:
        self.bar = tqdm(total=self.total, initial=self.start, desc="train", disable=not self.progress,
                        dynamic_ncols=True)
        data_iter = iter(self.loader)
        with self.stop.installed():
            while self.it < self.total and not self.stopping:
                try:
                    batches = [next(data_iter) for _ in range(self.t.accum_steps)]
                except StopIteration:
                    break
                except Exception:
                    if self.stop.signum:  # a loader worker died of the same Ctrl+C
                        self.stopping = True
                        break
                    raise
                last = self.step(batches) or last
        self.bar.close()
        if self.stopping:
            self.save()
            if self.world > 1:  # rank 0 has written the checkpoint before any rank exits (torchrun tears the
                dist.barrier()  # group down as soon as one worker returns)
            raise TrainingInterrupted(f"stopped by signal {self.stop.signum or 'on another rank'} after iteration "
                                      f"{self.it}; checkpoint saved in {self.ckpt_dir}; continue with --resume auto")
        return self.finish(last)

    def step(self, batches: list) -> dict | None:
        """One optimisation step over ``accum_steps`` micro-batches, then logging, validation and
        checkpointing when due. Returns the validation scores if it validated."""
        finite, parts = self._forward_backward(batches)
        finite, parts = self._agree(finite, parts)
        names = [n for b in batches for n in b["name"]]
        if finite:
            self._guarded_update(parts)
        else:  # never step on (nor checkpoint) a non-finite loss
            self.optimizer.zero_grad(set_to_none=True)
            self.skipped_nan += 1
            msg = f"non-finite loss at iteration {self.it + 1}, batch: {', '.join(names)}"
            if self.skipped_nan > self.t.nan_skips:
                raise FloatingPointError(f"{msg}; stopping (train.nan_skips={self.t.nan_skips}). {self._last_good()}")
            log.warning("%s; step skipped (%d of %d allowed)", msg, self.skipped_nan, self.t.nan_skips)
        lr = self.optimizer.param_groups[0]["lr"]
        self.scheduler.step()
        self.it += 1
        self.bar.update(1)
        self.bar.set_postfix(loss=f"{parts['loss'].item():.3f}", lr=f"{lr:.2e}")
        return self._after_step(parts, lr)

    def _forward_backward(self, batches: list) -> tuple[bool, dict]:
        """Loss and gradients of each micro-batch (DDP syncs only on the last); the parts averaged."""
        self.optimizer.zero_grad(set_to_none=True)
        finite, sums = True, {}
        for i, batch in enumerate(batches):
            images = batch["image"].to(self.device, non_blocking=True)
            labels = batch["label"].to(self.device, non_blocking=True)
            if self.t.channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            last = self.world == 1 or i == len(batches) - 1
            with contextlib.nullcontext() if last else self.model.no_sync():
                with torch.autocast(device_type=self.device.type, dtype=self.amp_dtype or torch.float32,
                                    enabled=self.use_amp):
                    outputs = self.model(images)
                loss, parts = self.raw.loss(outputs, labels, self.criterion)
                finite = finite and bool(torch.isfinite(loss))
                if finite:
                    self.scaler.scale(loss / len(batches)).backward()
            for k, v in parts.items():
                sums[k] = sums.get(k, 0.0) + v / len(batches)
        return finite, sums

    def _agree(self, finite: bool, parts: dict) -> tuple[bool, dict]:
        """Under torchrun every rank must agree on skipping and on stopping; the log shows the global
        mean. A signal seen by any rank stops all ranks after this same iteration (one that arrives after
        this all-reduce is agreed on at the next), so no rank waits in a collective for one that left."""
        if self.world == 1:
            self.stopping = self.stopping or bool(self.stop.signum)
            return finite, parts
        flag = torch.stack([torch.tensor(0.0 if finite else 1.0, device=self.device),
                            torch.tensor(float(self.stop.signum), device=self.device)]
                           + [parts[k].to(self.device).float().reshape(()) for k in sorted(parts)])
        dist.all_reduce(flag)
        self.stopping = self.stopping or flag[1].item() > 0
        return flag[0].item() == 0, {k: flag[2 + j] / self.world for j, k in enumerate(sorted(parts))}

    def _guarded_update(self, parts: dict) -> None:
        """The optimiser step, refused for a loss far above its running mean (divergence before NaN;
        floor 1, so that one hard batch late in training is no stop) and stopped after it if the
        weights became non-finite or absurdly large (``FloatingPointError``, nothing saved)."""
        t, value = self.t, float(parts["loss"])
        if t.divergence_factor and self.loss_avg is not None and value > t.divergence_factor * max(self.loss_avg, 1.0):
            raise FloatingPointError(
                f"loss {value:.4g} at iteration {self.it + 1} is above {t.divergence_factor:g} x its running mean "
                f"{self.loss_avg:.4g}: training diverged (train.lr={t.lr}); stopped before this step. "
                f"{self._last_good()}")
        self.loss_avg = value if self.loss_avg is None else 0.9 * self.loss_avg + 0.1 * value
        self.scaler.step(self.optimizer)
        self.scaler.update()
        problem = _weight_problem(self.trainable)
        if problem:
            raise FloatingPointError(f"the weights {problem} after iteration {self.it + 1}: training diverged "
                                     f"(train.lr={t.lr}); stopping, nothing of it saved. {self._last_good()}")
        if self.ema is not None:
            self.ema.update_parameters(self.raw)

    def _after_step(self, parts: dict, lr: float) -> dict | None:
        """Log row (and model diagnostics), validation and checkpoint of the iteration just done."""
        t, it = self.t, self.it
        row, scores = None, None
        if self.main and (it % t.log_interval == 0 or it == self.total):
            row = self._row(lr, loss=parts["loss"].item(),
                            loss_aux=parts.get("loss_aux", torch.tensor(float("nan"))).item())
            if "loss_front" in parts:
                row["loss_front"] = parts["loss_front"].item()
            extra = {k: round(float(v), 5) for k, v in parts.items() if k not in LOG_FIELDS}
            if extra:  # model-specific diagnostics (e.g. the pyramid's supervised share per level)
                with (self.work_dir / "diagnostics.jsonl").open("a") as f:
                    f.write(json.dumps({"iter": it, **extra}) + "\n")
                if it == self.start + 1 or it == self.total:
                    log.info("iteration %d diagnostics: %s", it, extra)
        if self.main and (it % self.eval_interval == 0 or it == self.total):
            scores = self.validate()
            row = row or self._row(lr)
            row.update(val_mIoU=round(scores["mIoU"], 3), val_aAcc=round(scores["aAcc"], 3),
                       val_mAcc=round(scores["mAcc"], 3))
            self.bar.write(f"iter {it}: val mIoU {scores['mIoU']:.2f} aAcc {scores['aAcc']:.2f}")
            if t.keep_best and scores["mIoU"] > self.best[0]:
                self.best = (scores["mIoU"], it)
                self._save_checked({"model": self._shipped().state_dict(), "config": self.cfg_dict, "meta": self.meta,
                                    "iter": it, "metrics": scores}, self.work_dir / "best.pt")
        if row:
            _append_log(self.log_path, row)
            self.runlog.row(row)
        if scores is not None and self.runlog.writer is not None:
            overlays = (validation_overlays(self._shipped(), self.val_ds, range(min(t.tensorboard_images, len(self.val_ds))),
                                           self.device, self.cfg.data.mean, self.cfg.data.std, self.val_ds.PALETTE,
                                           InferenceConfig.from_cfg(self.cfg, channels_last=t.channels_last))
                        if t.tensorboard_images else [])
            set_train_mode(self.model, t.freeze_bn)
            self.runlog.validation(it, scores, overlays)
        if it % t.ckpt_interval == 0 or it == self.total:
            self.save()
        return scores

    def _row(self, lr: float, **values) -> dict:
        return {"iter": self.it, "epoch": round(self.it / self.iters_per_epoch, 3), "lr": lr, **values,
                "time_s": round(time.time() - self.t0, 1)}

    def validate(self, model: torch.nn.Module | None = None) -> dict:
        """Scores (percent) of ``model`` (default: the weights being shipped, the EMA when enabled) on the
        val split; train mode is restored afterwards."""
        model = model if model is not None else self._shipped()
        scores = evaluate_model(model, self.val_ds, self.device, progress=False,
                                infer=InferenceConfig.from_cfg(self.cfg, channels_last=self.t.channels_last))
        set_train_mode(self.model, self.t.freeze_bn)
        return scores

    def _score_reference(self) -> None:
        """A refinement stage: the frozen front's val mIoU next to the untrained refined model's (step 0)."""
        front, init = self.validate(self.raw.reference()), self.validate()
        _append_log(self.log_path, {"iter": 0, "epoch": 0.0, "val_mIoU": round(init["mIoU"], 3),
                                    "val_aAcc": round(init["aAcc"], 3), "val_mAcc": round(init["mAcc"], 3),
                                    "val_mIoU_front": round(front["mIoU"], 3), "time_s": 0.0})
        log.info("step 0: front val mIoU %.2f, refined (untrained) %.2f", front["mIoU"], init["mIoU"])

    def _shipped(self) -> torch.nn.Module:
        """The weights validation scores and final.pt / best.pt hold: the EMA when ``train.ema_decay``."""
        return self.ema.module if self.ema is not None else self.raw

    # ---------------------------------------------------------------- saving
    def _last_good(self) -> str:
        saved = list_checkpoints(self.ckpt_dir)
        if saved:
            return f"The last good checkpoint is {saved[-1]}."
        return f"No checkpoint was saved before this (train.ckpt_interval={self.t.ckpt_interval})."

    def _save_checked(self, obj: dict, path: Path) -> None:
        try:
            atomic_save(obj, path)
        except NonFiniteModelError as e:
            raise FloatingPointError(f"iteration {self.it}: {e}; training diverged (train.lr={self.t.lr}). "
                                     f"{self._last_good()}") from e

    def save(self) -> None:
        """``checkpoints/iter_<it>.pt`` with everything an exact resume needs (rank 0); keeps the newest
        ``train.keep_checkpoints``."""
        if not self.main:
            return
        self._save_checked({"model": self.raw.state_dict(), "optimizer": self.optimizer.state_dict(),
                            "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(),
                            "iter": self.it, "rng": _rng_state(), "config": self.cfg_dict, "meta": self.meta,
                            "best_mIoU": self.best[0], **({"ema": self.ema.state_dict()} if self.ema is not None else {})},
                           self.ckpt_dir / f"iter_{self.it:08d}.pt")
        for old in list_checkpoints(self.ckpt_dir)[: -self.t.keep_checkpoints]:
            old.unlink(missing_ok=True)

    def finish(self, last_scores: dict) -> dict:
        """``final.pt`` (weights, config, meta), ``val_metrics.json`` and ``curves.png``."""
        if self.world > 1:
            dist.barrier()
        if not self.main:
            return last_scores
        self._save_checked({"model": self._shipped().state_dict(), "config": self.cfg_dict, "meta": self.meta,
                            "iter": self.it}, self.work_dir / "final.pt")
        if last_scores:
            (self.work_dir / "val_metrics.json").write_text(json.dumps(json_safe(last_scores), indent=2, allow_nan=False))
        try:
            plot_curves(self.log_path, self.work_dir / "curves.png")
        except Exception as e:  # a plot must never lose a finished run
            log.warning("could not plot curves: %s", e)
        return last_scores


def _check_splits(cfg: DictConfig, train_ds, val_ds, progress: bool) -> None:
    """``data.check``: scan both splits (decoding every file) and refuse bad data with the report."""
    from ..data.check import check_dataset, format_report

    train_name = "+".join(cfg.data.train_splits) or cfg.data.train_split
    for ds, split in ((train_ds, train_name), (val_ds, cfg.data.val_split)):
        report = check_dataset(ds, progress=progress)
        if report["problems"]:
            raise DataError(f"{cfg.data.dataset} split '{split}' has bad files; training refused:\n"
                            + format_report(report))


def _init_from(model: torch.nn.Module, path: str) -> None:
    """``model.init_weights``: only what this run trains may be missing (a refinement stage's new network);
    anything else missing, e.g. the GRN of a cascade whose LRN stage starts from a checkpoint without one,
    is an error."""
    new = model.trained_weight_prefixes()
    state = load_checkpoint(path)["model"]
    require_finite(state, f"model.init_weights={path}")
    try:
        fresh = load_model_weights(model, {k: v.float() if v.is_floating_point() else v for k, v in state.items()},
                                   allow_missing=new)
    except ValueError as e:
        only = f"only {', '.join(p + '*' for p in new)} may be missing"
        raise ValueError(f"model.init_weights={path} lacks weights this run uses but does not train ({only}; "
                         f"e.g. an LRN stage needs a finished GRN stage, or model.head.grn=false): {e}") from e
    log.info("initialised the model from %s (%d tensors not in it keep their init)", path, len(fresh))


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
