"""A training run's folder: refusing or clearing an earlier run (``--restart``), finding the checkpoint to
resume from (``--resume auto``), checking that a resumed run computes what the first one did (its config
and fields), cutting logs back to the resumed iteration, and the RNG states that make resume exact."""
from __future__ import annotations

import csv
import json
import logging
import random
import shutil
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from ..checkpoint import is_training_checkpoint, list_checkpoints, load_checkpoint, nonfinite_tensors, require_finite
from ..config import to_dict
from .callbacks import LOG_FIELDS

log = logging.getLogger(__name__)


def rng_state() -> dict:
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


def set_rng_state(state: dict) -> None:
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


def find_resume(resume: str, ckpt_dir: Path) -> tuple[Path | None, dict | None]:
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
    length), ``rng`` the states ``rng_state`` writes, ``optimizer`` / ``scheduler`` / ``scaler`` dicts.

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
                              "train.log_interval", "train.eval_interval", "train.ckpt_interval", "train.ckpt_minutes",
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


def truncate_log(path: Path, last_iter: int) -> None:
    """Drop log rows written after the checkpoint we resume from."""
    if not path.is_file():
        return
    with path.open() as f:
        rows = [r for r in csv.DictReader(f) if int(r["iter"]) <= last_iter]
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, LOG_FIELDS)
        w.writeheader()
        w.writerows(rows)


def truncate_jsonl(path: Path, last_iter: int) -> None:
    """Drop ``{"iter": ...}`` lines written after the checkpoint we resume from."""
    if path.is_file():
        def keep(line: str) -> bool:
            try:
                return json.loads(line).get("iter", 0) <= last_iter
            except ValueError:  # a line cut by a kill mid-append
                return False

        path.write_text("".join(ln + "\n" for ln in path.read_text().splitlines() if ln.strip() and keep(ln)))


def is_run_dir(work_dir: Path) -> bool:
    """A directory a sceneparse training has used (it holds our lock file, checkpoints or final.pt)."""
    return ((work_dir / ".lock").exists() or (work_dir / "final.pt").exists()
            or bool(list_checkpoints(work_dir / "checkpoints")))


RUN_OUTPUTS = ("final.pt", "best.pt", "log.csv", "diagnostics.jsonl", "val_metrics.json", "resumes.jsonl", "curves.png",
               "train.log")


def fresh_start_check(cfg: DictConfig, work_dir: Path, resume: str | None, restart: bool) -> None:
    """Refuse a fresh start over an earlier run's checkpoints / final.pt, or (``restart``) delete them;
    never delete a file this run reads (``model.init_weights``, ``model.head.front``)."""
    from ..utils.io import same_file

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
