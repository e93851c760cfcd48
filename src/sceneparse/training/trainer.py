"""Training loop: SGD + poly learning rate, auxiliary loss, periodic validation, exact resume.

The run folder (resume, restart) is :mod:`.run_dir`; what the run writes for people is :mod:`.callbacks`;
divergence checks are :mod:`.guards`.

Reproducibility and exact resume (CPU): the order of samples is a function of
``(seed, epoch)`` and each sample's augmentation of ``(seed, epoch, index)``
(see ``SegmentationDataset.__getitem__``), so a run restarted from a
checkpoint at iteration ``t`` sees the same batches as an uninterrupted run
from ``t + 1`` on; the checkpoint also restores model, optimizer, scheduler,
AMP scaler and the global RNG states (dropout).
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import signal
import threading
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.distributed as dist
from omegaconf import DictConfig
from torch.utils.data import DataLoader
from tqdm import tqdm

from ..checkpoint import NonFiniteModelError, atomic_save, list_checkpoints, load_checkpoint, require_finite
from ..config import save_config, to_dict
from ..data import DataError, build_dataset, build_eval_transform, build_train_transform
from ..evaluation.evaluate import evaluate_model
from ..evaluation.report import json_safe
from ..hub import resolve_weights
from ..inference.engine import InferenceConfig
from ..models.factory import build_model_from_config, load_model_weights, set_train_size
from ..utils.device import resolve_device
from ..utils.errors import first_line
from ..utils.io import remove_stale_temporaries
from ..utils.runlock import RunLock
from . import fast_train
from .callbacks import LOG_FIELDS, RunLog, append_log_row, plot_curves, validation_overlays
from .distributed import EpochSampler, init_distributed
from .guards import weight_problem
from .losses import SegLoss
from .run_dir import (check_resume_config, check_resume_fields, find_resume, fresh_start_check, is_run_dir, rng_state,
                      set_rng_state, truncate_jsonl, truncate_log)

log = logging.getLogger(__name__)

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
    if work_dir.is_dir() and any(work_dir.iterdir()) and not is_run_dir(work_dir):
        raise ValueError(f"work_dir {work_dir} holds files that are not a sceneparse run "
                         f"({', '.join(sorted(p.name for p in work_dir.iterdir())[:4])}...); training writes "
                         "config.yaml, log.csv, checkpoints/ there: choose a new or empty directory (--work-dir)")
    created = not work_dir.exists()
    work_dir.mkdir(parents=True, exist_ok=True)
    with RunLock(work_dir):  # a second training here is refused before anything below runs
        try:
            for p in remove_stale_temporaries(work_dir) + remove_stale_temporaries(work_dir / "checkpoints"):
                log.info("removed %s, left by a write that was interrupted", p)
            fresh_start_check(cfg, work_dir, resume, restart)
            return Trainer(cfg, resume, progress, tuple(allow_config_change)).run()
        except BaseException:
            # refused before training started (bad model option, data error, ...): while still holding the
            # lock, remove the folder this call created if it holds nothing but our bookkeeping
            if created and {p.name for p in work_dir.iterdir()} <= {".lock", "config.yaml"}:
                for p in work_dir.iterdir():
                    p.unlink()
                work_dir.rmdir()
            raise


class Trainer:
    """One training run of the model described by a config: ``Trainer(cfg).run()``.

    The stages are methods: :meth:`_check_resume` (resume checkpoint, config check, ``config.yaml``),
    :meth:`_build` (data, model, optimiser), :meth:`_restore` (resume state), :meth:`step` (one
    optimisation step), :meth:`validate`, :meth:`save` and :meth:`finish`. Everything model-specific
    goes through the model's interface (``models.base.SceneParser``): its loss, parameter groups,
    frozen reference and the weights an ``init_weights`` checkpoint may lack.
    Use :func:`train`, which also locks the run directory; this class assumes the lock is held.
    """

    def __init__(self, cfg: DictConfig, resume: str | None = None, progress: bool = True,
                 allow_config_change: tuple[str, ...] = ()):
        self.cfg, self.train_cfg = cfg, cfg.train
        self.rank, self.world, self.device = init_distributed(resolve_device(self.train_cfg.device))
        self.main = self.rank == 0
        self.progress = progress and self.main
        t = self.train_cfg
        if t.threads:
            torch.set_num_threads(t.threads)
        if t.batch_size % (self.world * t.accum_steps):
            raise ValueError(f"train.batch_size {t.batch_size} must be divisible by processes x accum_steps "
                             f"({self.world} x {t.accum_steps})")
        self.work_dir = Path(cfg.work_dir)
        self.ckpt_dir, self.log_path = self.work_dir / "checkpoints", self.work_dir / "log.csv"
        self.cfg_dict = to_dict(cfg)
        self._check_resume(resume, allow_config_change)
        self._seed()
        self._build()
        self._restore()
        self._record_start()  # only once the resumed state loaded: a refused resume leaves the folder as it was
        self.skipped_nan, self.loss_avg, self.stopping = 0, None, False
        self.best = (self._resumed_best, None)  # (val mIoU, iteration) of best.pt
        self.stop = _StopFlag()
        self.t0 = self.last_save = time.time()

    # ---------------------------------------------------------------- setup
    def _check_resume(self, resume: str | None, allowed: tuple[str, ...]) -> None:
        """The checkpoint to resume from, refused if the config changed in keys not ``allowed``."""
        self.ckpt_path, self.ckpt = find_resume(resume, self.ckpt_dir) if resume else (None, None)
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
        t = self.train_cfg
        random.seed(t.seed)
        np.random.seed(t.seed)
        torch.manual_seed(t.seed)
        if t.deterministic:  # CUDA: no atomics-based kernels (bilinear upsampling backward, scatter), no autotuning
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.use_deterministic_algorithms(True, warn_only=True)
            torch.backends.cudnn.benchmark = False

    def _build(self) -> None:
        cfg, t = self.cfg, self.train_cfg
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
        self.net = self._build_model()
        self.trainable = [p for p in self.net.parameters() if p.requires_grad]
        groups = self.net.param_groups(t.lr, t.head_lr_mult)  # frozen parameters left out (the model decides)
        if not any(g["params"] for g in groups):
            raise ValueError("the model has no trainable parameters")
        if t.optimizer == "adamw":  # momentum is beta1
            self.optimizer = torch.optim.AdamW(groups, lr=t.lr, betas=(t.momentum, 0.999), weight_decay=t.weight_decay)
        else:
            self.optimizer = torch.optim.SGD(groups, lr=t.lr, momentum=t.momentum, weight_decay=t.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, self._lr_factor())
        # EMA of the weights (BN statistics included): what validation scores and final.pt / best.pt hold
        self.ema = (torch.optim.swa_utils.AveragedModel(
            self.net, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(t.ema_decay), use_buffers=True)
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
        self.net.check_criterion(self.criterion)  # a model whose loss cannot honour an option refuses it here
        self.fast = fast_train.enable(self.net, self.criterion, self.device, t.fast, bool(t.upsample_logits),
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
        t = self.train_cfg
        if t.lr_policy == "step":
            marks = [round(e * self.iters_per_epoch) for e in t.lr_step_epochs]
            return step_lr_lambda(marks, t.lr_step_gamma, t.warmup_iters, t.warmup_ratio)
        return poly_lr_lambda(self.total, t.poly_power, t.warmup_iters, t.warmup_ratio, t.min_lr_ratio)

    def _class_weights(self) -> torch.Tensor | None:
        """``train.class_weighting``: CE weights from the training split's pixel counts (logged)."""
        if self.train_cfg.class_weighting == "none":
            return None
        from ..data.check import label_pixel_counts
        from .losses import class_weights

        w = class_weights(label_pixel_counts(self.train_ds, self.progress), self.train_cfg.class_weighting)
        log.info("class weights (%s): %s", self.train_cfg.class_weighting,
                 ", ".join(f"{n} {v:.2f}" for n, v in zip(self.train_ds.CLASSES, w.tolist())))
        return w

    def _build_model(self) -> torch.nn.Module:
        """The model (``self.front``: a refinement model's front spec), initialised from
        ``model.init_weights`` where given, in train mode, on the device."""
        cfg, t = self.cfg, self.train_cfg
        fresh_init = self.ckpt_path is None and not cfg.model.init_weights
        model, self.front = build_model_from_config(self.cfg_dict["model"], self.train_ds.num_classes,
                                                    pretrained=cfg.model.pretrained if fresh_init else None,
                                                    front=(self.ckpt or {}).get("meta", {}).get("front"),
                                                    weights_follow=not fresh_init)
        model = model.to(self.device)
        if cfg.model.init_weights and self.ckpt_path is None:
            _init_from(model, cfg.model.init_weights)
        model.set_train_logit_upsampling(bool(t.upsample_logits))
        set_train_size(model, list(cfg.data.crop_size))  # validation sizes its inputs as evaluate does
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
        t, ckpt = self.train_cfg, self.ckpt
        self.start, self._resumed_best = 0, float("-inf")
        if ckpt is not None:
            check_resume_fields(ckpt, self.ckpt_path, self.total)
            load_model_weights(self.net, ckpt["model"])
            for key, part in (("optimizer", self.optimizer), ("scheduler", self.scheduler), ("scaler", self.scaler)):
                try:
                    part.load_state_dict(ckpt[key])
                except (KeyError, TypeError, ValueError, RuntimeError, IndexError) as e:
                    raise ValueError(f"{self.ckpt_path}: field '{key}' does not fit this run's model and optimizer "
                                     f"({first_line(e, with_type=True)})") from None
            if self.ema is not None:
                if "ema" not in ckpt:
                    raise ValueError(f"{self.ckpt_path} was trained without train.ema_decay: no EMA state to resume")
                self.ema.load_state_dict(ckpt["ema"])
            self.start = ckpt["iter"]
            self._resumed_best = ckpt.get("best_mIoU", float("-inf"))
            try:
                set_rng_state(ckpt["rng"])
            except (KeyError, TypeError, ValueError, RuntimeError) as e:
                raise ValueError(f"{self.ckpt_path}: field 'rng' cannot be restored ({type(e).__name__}: {e})") from None
            # what this run's config says is what is used (the optimizer state carries the old run's lr,
            # momentum and weight decay; the scheduler its base lr): identical unless a change was allowed
            lam = self._lr_factor()
            bases = [g["lr"] for g in self.net.param_groups(t.lr, t.head_lr_mult)]  # the model's own groups
            for group, base in zip(self.optimizer.param_groups, bases, strict=True):
                group.update(initial_lr=base, lr=base * lam(self.start), weight_decay=t.weight_decay,
                             **({"betas": (t.momentum, 0.999)} if t.optimizer == "adamw" else {"momentum": t.momentum}))
            self.scheduler.base_lrs = bases
            if self.main:
                truncate_log(self.log_path, self.start)
                truncate_jsonl(self.work_dir / "diagnostics.jsonl", self.start)
            log.info("resumed from %s at iteration %d/%d", self.ckpt_path, self.start, self.total)
        elif self.main:  # a fresh start (an earlier run's checkpoints were refused or deleted before)
            self.log_path.unlink(missing_ok=True)
            (self.work_dir / "diagnostics.jsonl").unlink(missing_ok=True)
        self.ckpt = None  # the optimizer state is loaded: do not keep a second copy in memory
        self.model = self.net  # what runs forward/backward: self.net, or its DDP wrapper under torchrun
        if self.world > 1:
            self.model = torch.nn.parallel.DistributedDataParallel(
                self.net, device_ids=[self.device.index] if self.device.type == "cuda" else None)
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
        if self.main and self.start == 0 and self.net.reference() is not None:
            self._score_reference()
        last: dict = {}
        self.runlog = RunLog(self.work_dir, self.train_cfg.tensorboard, self.start) if self.main else None
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
                    batches = [next(data_iter) for _ in range(self.train_cfg.accum_steps)]
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
        finite, parts = self._agree_across_ranks(finite, parts)
        names = [n for b in batches for n in b["name"]]
        if finite:
            self._guarded_update(parts)
        else:  # never step on (nor checkpoint) a non-finite loss
            self.optimizer.zero_grad(set_to_none=True)
            self.skipped_nan += 1
            msg = f"non-finite loss at iteration {self.it + 1}, batch: {', '.join(names)}"
            if self.skipped_nan > self.train_cfg.nan_skips:
                raise FloatingPointError(f"{msg}; stopping (train.nan_skips={self.train_cfg.nan_skips}). "
                                         f"{self._last_good()}")
            log.warning("%s; step skipped (%d of %d allowed)", msg, self.skipped_nan, self.train_cfg.nan_skips)
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
            if self.train_cfg.channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            last = self.world == 1 or i == len(batches) - 1
            with contextlib.nullcontext() if last else self.model.no_sync():
                with torch.autocast(device_type=self.device.type, dtype=self.amp_dtype or torch.float32,
                                    enabled=self.use_amp):
                    outputs = self.model(images)
                loss, parts = self.net.loss(outputs, labels, self.criterion)
                finite = finite and bool(torch.isfinite(loss))
                if finite:
                    self.scaler.scale(loss / len(batches)).backward()
            for k, v in parts.items():
                sums[k] = sums.get(k, 0.0) + v / len(batches)
        return finite, sums

    def _agree_across_ranks(self, finite: bool, parts: dict) -> tuple[bool, dict]:
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
        t, value = self.train_cfg, float(parts["loss"])
        if t.divergence_factor and self.loss_avg is not None and value > t.divergence_factor * max(self.loss_avg, 1.0):
            raise FloatingPointError(
                f"loss {value:.4g} at iteration {self.it + 1} is above {t.divergence_factor:g} x its running mean "
                f"{self.loss_avg:.4g}: training diverged (train.lr={t.lr}); stopped before this step. "
                f"{self._last_good()}")
        self.loss_avg = value if self.loss_avg is None else 0.9 * self.loss_avg + 0.1 * value
        self.scaler.step(self.optimizer)
        self.scaler.update()
        problem = weight_problem(self.trainable)
        if problem:
            raise FloatingPointError(f"the weights {problem} after iteration {self.it + 1}: training diverged "
                                     f"(train.lr={t.lr}); stopping, nothing of it saved. {self._last_good()}")
        if self.ema is not None:
            self.ema.update_parameters(self.net)

    def _after_step(self, parts: dict, lr: float) -> dict | None:
        """What follows the iteration just done: its log row, validation, checkpoint. Returns the scores
        when it validated."""
        t, it = self.train_cfg, self.it
        row = self._log_row(parts, lr) if self.main and (it % t.log_interval == 0 or it == self.total) else None
        scores = None
        if self.main and (it % self.eval_interval == 0 or it == self.total):
            try:
                scores = self._validate_and_keep_best()
            except Exception as e:  # e.g. a val file changed on disk: the iterations trained are not lost
                self.bar.close()
                if row:  # this iteration's losses, as the resume will not log it again
                    append_log_row(self.log_path, row)
                self.save()
                log.error("validation failed after iteration %d: %s; the weights are saved in %s: fix the cause "
                          "and continue with --resume auto", it, e, self.ckpt_dir)
                raise
            row = row or self._row(lr)
            row.update(val_mIoU=round(scores["mIoU"], 3), val_aAcc=round(scores["aAcc"], 3),
                       val_mAcc=round(scores["mAcc"], 3))
        if row:
            append_log_row(self.log_path, row)
            self.runlog.row(row)
        if scores is not None and self.runlog.writer is not None:
            self._tensorboard_validation(scores)
        overdue = t.ckpt_minutes > 0 and time.time() - self.last_save >= 60 * t.ckpt_minutes
        if it % t.ckpt_interval == 0 or it == self.total or overdue:
            self.save()
        return scores

    def _log_row(self, parts: dict, lr: float) -> dict:
        """The ``log.csv`` row of this iteration's losses; model-specific terms (e.g. the pyramid's supervised
        share per level) go to ``diagnostics.jsonl``."""
        row = self._row(lr, loss=parts["loss"].item(), loss_aux=parts.get("loss_aux", torch.tensor(float("nan"))).item())
        if "loss_front" in parts:
            row["loss_front"] = parts["loss_front"].item()
        extra = {k: round(float(v), 5) for k, v in parts.items() if k not in LOG_FIELDS}
        if extra:
            with (self.work_dir / "diagnostics.jsonl").open("a") as f:
                f.write(json.dumps({"iter": self.it, **extra}) + "\n")
            if self.it == self.start + 1 or self.it == self.total:
                log.info("iteration %d diagnostics: %s", self.it, extra)
        return row

    def _validate_and_keep_best(self) -> dict:
        """Validation scores; with ``train.keep_best`` a new best mIoU is saved as ``best.pt``."""
        scores = self.validate()
        self.bar.write(f"iter {self.it}: val mIoU {scores['mIoU']:.2f} aAcc {scores['aAcc']:.2f}")
        if self.train_cfg.keep_best and scores["mIoU"] > self.best[0]:
            self.best = (scores["mIoU"], self.it)
            self._save_checked({"model": self._shipped().state_dict(), "config": self.cfg_dict, "meta": self.meta,
                                "iter": self.it, "metrics": scores}, self.work_dir / "best.pt")
        return scores

    def _tensorboard_validation(self, scores: dict) -> None:
        """Validation scores and overlays of the first ``train.tensorboard_images`` val images to TensorBoard."""
        t = self.train_cfg
        overlays = []
        if t.tensorboard_images:
            overlays = validation_overlays(self._shipped(), self.val_ds, range(min(t.tensorboard_images, len(self.val_ds))),
                                           self.device, self.cfg.data.mean, self.cfg.data.std, self.val_ds.PALETTE,
                                           InferenceConfig.from_cfg(self.cfg, channels_last=t.channels_last))
        set_train_mode(self.model, t.freeze_bn)
        self.runlog.validation(self.it, scores, overlays)

    def _row(self, lr: float, **values) -> dict:
        return {"iter": self.it, "epoch": round(self.it / self.iters_per_epoch, 3), "lr": lr, **values,
                "time_s": round(time.time() - self.t0, 1)}

    def validate(self, model: torch.nn.Module | None = None) -> dict:
        """Scores (percent) of ``model`` (default: the weights being shipped, the EMA when enabled) on the
        val split; train mode is restored afterwards."""
        model = model if model is not None else self._shipped()
        scores = evaluate_model(model, self.val_ds, self.device, progress=False,
                                infer=InferenceConfig.from_cfg(self.cfg, channels_last=self.train_cfg.channels_last))
        set_train_mode(self.model, self.train_cfg.freeze_bn)
        return scores

    def _score_reference(self) -> None:
        """A refinement stage: the frozen front's val mIoU next to the untrained refined model's (step 0)."""
        front, init = self.validate(self.net.reference()), self.validate()
        append_log_row(self.log_path, {"iter": 0, "epoch": 0.0, "val_mIoU": round(init["mIoU"], 3),
                                    "val_aAcc": round(init["aAcc"], 3), "val_mAcc": round(init["mAcc"], 3),
                                    "val_mIoU_front": round(front["mIoU"], 3), "time_s": 0.0})
        log.info("step 0: front val mIoU %.2f, refined (untrained) %.2f", front["mIoU"], init["mIoU"])

    def _shipped(self) -> torch.nn.Module:
        """The weights validation scores and final.pt / best.pt hold: the EMA when ``train.ema_decay``."""
        return self.ema.module if self.ema is not None else self.net

    # ---------------------------------------------------------------- saving
    def _last_good(self) -> str:
        saved = list_checkpoints(self.ckpt_dir)
        if saved:
            return f"The last good checkpoint is {saved[-1]}."
        return f"No checkpoint was saved before this (train.ckpt_interval={self.train_cfg.ckpt_interval})."

    def _save_checked(self, obj: dict, path: Path) -> None:
        try:
            atomic_save(obj, path)
        except NonFiniteModelError as e:
            raise FloatingPointError(f"iteration {self.it}: {e}; training diverged (train.lr={self.train_cfg.lr}). "
                                     f"{self._last_good()}") from e

    def save(self) -> None:
        """``checkpoints/iter_<it>.pt`` with everything an exact resume needs (rank 0); keeps the newest
        ``train.keep_checkpoints``."""
        self.last_save = time.time()
        if not self.main:
            return
        self._save_checked({"model": self.net.state_dict(), "optimizer": self.optimizer.state_dict(),
                            "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(),
                            "iter": self.it, "rng": rng_state(), "config": self.cfg_dict, "meta": self.meta,
                            "best_mIoU": self.best[0], **({"ema": self.ema.state_dict()} if self.ema is not None else {})},
                           self.ckpt_dir / f"iter_{self.it:08d}.pt")
        for old in list_checkpoints(self.ckpt_dir)[: -self.train_cfg.keep_checkpoints]:
            old.unlink(missing_ok=True)

    def finish(self, last_scores: dict) -> dict:
        """``final.pt`` (weights, config, meta), ``val_metrics.json`` and ``curves.png``."""
        if self.world > 1:
            dist.barrier()
        if not self.main:
            return last_scores
        if not last_scores and self.it == self.total and self.start == self.total:
            last_scores = self._validate_and_keep_best()  # resumed at the end (a validation that failed there)
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
    state = load_checkpoint(resolve_weights(path))["model"]
    require_finite(state, f"model.init_weights={path}")
    try:
        fresh = load_model_weights(model, {k: v.float() if v.is_floating_point() else v for k, v in state.items()},
                                   allow_missing=new)
    except ValueError as e:
        only = f"only {', '.join(p + '*' for p in new)} may be missing"
        raise ValueError(f"model.init_weights={path} lacks weights this run uses but does not train ({only}; "
                         f"e.g. an LRN stage needs a finished GRN stage, or model.head.grn=false): {e}") from e
    log.info("initialised the model from %s (%d tensors not in it keep their init)", path, len(fresh))


