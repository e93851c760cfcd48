"""Parsing new images: palette label PNGs and colour overlays, never written over an input."""
from __future__ import annotations

import json
import logging
import os
from collections import Counter
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch
from PIL import Image

from ..constants import IMAGE_SUFFIXES
from ..data.base import DataError, read_image
from ..data.transforms import normalize_image
from ..utils.errors import first_line
from ..utils.io import prepare_out_dir, write_atomically, write_bytes_atomically
from ..utils.runlock import RunLock
from .engine import InferenceConfig, infer_probs, inference_mode_for, predict_labels
from .vis import draw_legend, overlay, palette_image

log = logging.getLogger(__name__)

MANIFEST = "predictions.json"  # in the output folder: output file name -> the input it was parsed from


def expand_inputs(inputs: Iterable[str | Path], skip: Iterable[str | Path] = ()) -> list[Path]:
    """Files as given, and the image files (by suffix, sorted; hidden ``.*`` files such as macOS ``._x.jpg``
    and our own temporaries left out) of any directory given.

    Files of a directory that are in ``skip`` (earlier predictions written into the output folder, see
    :func:`previous_outputs`) or in the directory's own ``predictions.json`` (an earlier ``predict`` wrote them
    there) are left out; files named explicitly are always kept.
    """
    skip_keys = {_key(q) for q in skip}
    out: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            own = {_key(q) for q in previous_outputs(p)}
            out += sorted(f for f in p.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file()
                          and not f.name.startswith(".") and _key(f) not in skip_keys | own)
        else:
            out.append(p)
    unique = {_key(p): p for p in reversed(out)}  # a file given twice (itself and via its folder) once
    return [p for p in out if unique.get(_key(p)) is p]


def _key(p: Path) -> str:
    return os.path.normcase(str(Path(p).resolve()))


def _read_manifest(out_dir: Path) -> dict | None:
    """The manifest of earlier runs into ``out_dir``: ``{}`` if none, ``None`` if a foreign file has its name."""
    path = out_dir / MANIFEST
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data.get("outputs", {}) if isinstance(data, dict) and data.get("written_by") == "sceneparse predict" else None


def previous_outputs(out_dir: str | Path) -> list[Path]:
    """Files an earlier ``predict`` wrote into ``out_dir`` (from its manifest)."""
    out_dir = Path(out_dir)
    return [out_dir / name for name in (_read_manifest(out_dir) or {})] if out_dir.is_dir() else []


def confidence_path(label_path: Path) -> Path:
    """Where ``predict --confidence`` writes the confidence map of the label PNG ``label_path``."""
    return label_path.with_name(f"{label_path.stem}_conf.png")


def plan_outputs(paths: Sequence[Path], out_dir: str | Path, confidence: bool = False) -> list[tuple[Path, Path, Path]]:
    """``(input, label PNG, overlay JPEG)`` per input, such that no output is an input file, no two
    inputs share an output, and no existing file is replaced unless an earlier ``predict`` wrote it.

    Names are ``<stem>.png`` / ``<stem>_overlay.jpg``; inputs sharing a stem (``a.jpg`` and ``a.png``)
    get ``<stem>_<suffix>``; any remaining clash gets ``_2``, ``_3``... Case-insensitive, so the plan
    also holds on case-insensitive file systems. With ``confidence`` the ``<name>_conf.png`` of each
    (:func:`confidence_path`) is planned too.
    """
    out_dir = Path(out_dir)
    ours = set(_read_manifest(out_dir) or {})
    inputs = {_key(p) for p in paths}
    stems = Counter(p.stem.lower() for p in paths)
    taken: set[str] = set()
    plan = []
    for p in paths:
        base = p.stem if stems[p.stem.lower()] == 1 else f"{p.stem}_{p.suffix.lstrip('.').lower()}"
        name, n = base, 1
        while True:
            label, over = out_dir / f"{name}.png", out_dir / f"{name}_overlay.jpg"
            outs = (label, over, confidence_path(label)) if confidence else (label, over)
            if not any(_key(q) in inputs or q.name.lower() in taken or (q.exists() and q.name not in ours)
                       for q in outs):
                break
            n += 1
            name = f"{base}_{n}"
        taken |= {q.name.lower() for q in outs}
        plan.append((p, label, over))
    return plan


def _write_manifest(out_dir: Path, outputs: dict[str, str], inputs: set[str]) -> None:
    """Write ``out_dir/predictions.json`` = ``outputs`` (output name -> input); skipped (with a warning)
    where a foreign file (or an input) has that name. Raises ``OSError`` when it cannot be written (e.g. a
    full disk)."""
    path = out_dir / MANIFEST
    if _read_manifest(out_dir) is None or _key(path) in inputs:
        log.warning("not writing %s: a file of that name that sceneparse did not write is there", path)
        return
    data = {"written_by": "sceneparse predict", "outputs": outputs}
    write_bytes_atomically(path, json.dumps(data, indent=1).encode())


def predict_files(model: torch.nn.Module, meta: dict, paths: Sequence[Path], out_dir: str | Path,
                  device: torch.device | str = "cpu", progress: bool = True,
                  infer: InferenceConfig | None = None, max_whole_pixels: int = 2048 * 2048,
                  auto_crop: tuple[int, int] = (1024, 1024),
                  max_image_pixels: int | None = None, legend: bool = True,
                  confidence: bool = False) -> tuple[list[Path], dict[Path, str]]:
    """Parse every image; write a palette label map (PNG) and a colour overlay (JPEG) per image.

    Output names follow :func:`plan_outputs`: never an input file, never one output for two inputs,
    never an existing file an earlier ``predict`` did not write. ``out_dir/predictions.json`` maps
    every output name to its input. A missing, corrupt, unreadable or too large (``max_image_pixels``,
    default ``data.base.MAX_IMAGE_PIXELS``) file, or any error while parsing one image, is reported
    and skipped; the others are still parsed. An image above ``max_whole_pixels`` under whole-image
    inference is parsed with a sliding window of ``auto_crop`` instead (memory stays bounded; logged).
    ``legend``: the overlays carry a box with the classes present, their colours and pixel shares
    (:func:`draw_legend`). ``confidence``: also ``<name>_conf.png``, the winning class's probability per
    pixel as 8-bit grey (``round(255 p)``; averaged over the TTA views).

    Returns:
        ``(files written, {failed input: one-line error})``.
    """
    from tqdm import tqdm

    out_dir = prepare_out_dir(out_dir)
    written: list[Path] = []
    record: dict[str, str] = {}
    failed: dict[Path, str] = {}
    plan = plan_outputs(paths, out_dir, confidence)
    renamed = [(p, label) for p, label, _ in plan if label.stem != p.stem]
    if renamed:
        log.warning("%d output(s) renamed so that nothing is overwritten and no two inputs share an output, "
                    "e.g. %s -> %s (all in %s)", len(renamed), renamed[0][0], renamed[0][1].name, out_dir / MANIFEST)
    # the planned names are recorded before any image is written: whatever stops this run (a full disk,
    # a kill), every file it leaves is one a re-run recognises as its own and replaces, not a foreign one
    previous = _read_manifest(out_dir)
    inputs = {_key(p) for p in paths}
    planned = {q.name: str(Path(p).resolve()) for p, label, over in plan
               for q in ((label, over, confidence_path(label)) if confidence else (label, over))}
    if previous is not None:
        try:
            _write_manifest(out_dir, {**previous, **planned}, inputs)
        except OSError as e:
            raise ValueError(f"cannot write {out_dir / MANIFEST}: {e.strerror or e}; nothing was parsed") from None
    model.eval()
    try:
        for path, target, over in tqdm(plan, desc="predict", disable=not progress):
            try:
                image = read_image(path, max_pixels=max_image_pixels)
                x = normalize_image(image, meta["mean"], meta["std"]).to(device)
                mode = inference_mode_for(image.shape[0], image.shape[1], infer, max_whole_pixels, auto_crop, path)
                if confidence:
                    conf, label = infer_probs(model, x, mode)[0].max(0)
                    label = label.cpu().numpy()
                    grey = Image.fromarray((conf.float().cpu().numpy() * 255).round().astype(np.uint8), mode="L")
                else:
                    label = predict_labels(model, x, mode)[0].cpu().numpy()
                write_atomically(target, palette_image(label, meta["palette"]).save)
                written.append(target)
                record[target.name] = str(Path(path).resolve())
                if confidence:
                    conf_path = confidence_path(target)
                    write_atomically(conf_path, grey.save)
                    written.append(conf_path)
                    record[conf_path.name] = str(Path(path).resolve())
                blend = Image.fromarray(overlay(image, label, meta["palette"]))
                if legend and "classes" in meta:
                    blend = draw_legend(blend, label, meta["classes"], meta["palette"])
                write_atomically(over, lambda tmp: blend.save(tmp, quality=90))
                written.append(over)
                record[over.name] = str(Path(path).resolve())
            except DataError as e:  # returned, not logged: the caller reports each failure once
                log.debug("%s", e)
                failed[path] = str(e)
            except Exception as e:  # one image must not stop the batch (e.g. out of memory on a huge one)
                msg = f"{path}: {first_line(e, with_type=True)}"
                log.debug("%s", msg)
                failed[path] = msg
    finally:  # what was written, and what earlier runs wrote; planned names that were not written are dropped
        if previous is not None:
            try:
                _write_manifest(out_dir, {**previous, **record}, inputs)
            except OSError as e:  # the planned manifest stays: it still claims every file this run left
                log.error("cannot update %s: %s (it lists every planned output)", out_dir / MANIFEST, e.strerror or e)
    return written, failed


def _skip_reason(f: Path) -> str | None:
    """Why ``f``, found in a folder given to ``predict -r``, is not parsed (``None``: it is, or it is a folder)."""
    if f.is_symlink() and not f.exists():
        return "dangling link(s)"
    if f.is_dir():
        return "linked folder(s), not followed" if f.is_symlink() else None
    if not f.is_file():
        return "FIFO(s) / device(s) / socket(s)"
    if f.suffix.lower() not in IMAGE_SUFFIXES:
        return None if f.name == MANIFEST else f"file(s) of other types, not {'/'.join(IMAGE_SUFFIXES)}"
    return None


def expand_recursive(inputs: Iterable[str | Path]) -> list[tuple[Path, Path]]:
    """``(image, relative output folder)`` for every image under each directory of ``inputs``, in sorted
    order, mirroring the tree (``in/a/b/x.jpg`` -> ``a/b``); files given directly go to ``.``. Hidden files
    and folders are left out, and so is every file an earlier ``predict`` wrote (listed in the
    ``predictions.json`` of its folder): outputs inside the input tree are never parsed as photos. A file
    reached twice (given directly and through its folder) is parsed once, at its first place."""
    found: list[tuple[Path, Path]] = []
    seen: set[str] = set()
    manifests: dict[Path, set[str]] = {}

    def earlier_output(f: Path) -> bool:
        if f.parent not in manifests:
            manifests[f.parent] = {_key(q) for q in previous_outputs(f.parent)}
        return _key(f) in manifests[f.parent]

    for item in inputs:
        p = Path(item)
        if not p.is_dir():
            candidates = [(p, Path("."))]
        else:
            candidates, skipped = [], {}
            for f in sorted(p.rglob("*")):
                if any(part.startswith(".") for part in f.relative_to(p).parts):
                    continue  # hidden: left out on purpose
                why = _skip_reason(f)
                if why:
                    skipped.setdefault(why, []).append(f)
                elif f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES and not earlier_output(f):
                    candidates.append((f, f.relative_to(p).parent))
            if skipped:  # said once per folder, never silently
                log.warning("skipped under %s: %s", p, "; ".join(
                    f"{len(fs)} {why} ({', '.join(str(f.relative_to(p)) for f in fs[:3])}{', ...' if len(fs) > 3 else ''})"
                    for why, fs in skipped.items()))
        for f, rel in candidates:
            if _key(f) not in seen:
                seen.add(_key(f))
                found.append((f, rel))
    return found


def run_predict(checkpoint: str | Path, inputs: Sequence[str | Path], out_dir: str | Path, *,
                device: str = "auto", output_stride: int | None = None, infer_overrides: dict | None = None,
                max_whole_pixels: int = 2048 * 2048, max_image_pixels: int | None = None,
                progress: bool = True, legend: bool = True, confidence: bool = False, recursive: bool = False,
                fold_bn: bool = False, bf16: bool = False, compile: bool = False, backend: str = "torch",
                ) -> tuple[list[Path], list[Path], dict[Path, str]]:
    """``sceneparse predict``: check the output folder and the inputs first, then load the model and
    parse every image (:func:`predict_files`). Inference follows the checkpoint's ``eval`` section,
    ``infer_overrides`` winning. ``recursive``: every image under the directories given, outputs in the
    same tree under ``out_dir`` (:func:`expand_recursive`; one ``predictions.json`` per folder).
    ``fold_bn`` / ``bf16`` / ``compile`` / ``backend``: the fast paths of ``evaluate``
    (:func:`~sceneparse.deploy.backends.prepare_model`).
    Video files given by name (``.mp4``, ``.mov``, ...) give ``<stem>_overlay.mp4`` (:func:`predict_video`;
    no confidence maps for videos).

    Returns:
        ``(inputs found, files written, {failed input: error})``.

    Raises:
        ValueError: ``out_dir`` is a file or not writable, or no input image was found.
        RunLockedError: another ``predict`` or a live training is writing into ``out_dir``.
    """
    from ..utils.device import resolve_device
    from .pipeline import prepare

    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"--out {out_dir} is an existing file, not a directory")
    if recursive:
        groups: dict[Path, list[Path]] = {}
        for path, rel in expand_recursive(inputs):
            groups.setdefault(rel, []).append(path)
    else:
        groups = {Path("."): expand_inputs(inputs, skip=previous_outputs(out_dir))}
    from .video import VIDEO_SUFFIXES

    videos = [p for group in groups.values() for p in group if p.suffix.lower() in VIDEO_SUFFIXES]
    groups = {rel: [p for p in group if p.suffix.lower() not in VIDEO_SUFFIXES] for rel, group in groups.items()}
    paths = [p for group in groups.values() for p in group] + videos
    if not paths:
        raise ValueError("no input images found")
    missing = {p: f"image not found: {p}" for p in paths if not p.exists()}  # before the model loads
    if len(missing) == len(paths):
        raise ValueError(f"no input image found: {', '.join(map(str, list(missing)[:3]))}"
                         f"{', ...' if len(missing) > 3 else ''} not found")
    groups = {rel: [p for p in group if p not in missing] for rel, group in groups.items()}
    videos = [p for p in videos if p not in missing]
    created = not out_dir.exists()
    out_dir = prepare_out_dir(out_dir)
    try:
        # no second predict (nor a live training) writes into the same folder; taken before the model loads
        with RunLock(out_dir, "predict"):
            if max_image_pixels:  # PIL refuses above 2x its own limit before ours is checked: a larger one wins
                Image.MAX_IMAGE_PIXELS = max(Image.MAX_IMAGE_PIXELS or 0, max_image_pixels // 2 + 1)
            dev = resolve_device(device)
            model, ckpt = prepare(checkpoint, backend=backend, bf16=bf16, fold_bn=fold_bn, compile=compile,
                                  output_stride=output_stride, device=dev)
            infer = InferenceConfig.for_config(ckpt["config"], **(infer_overrides or {}))
            written, failed = _predict_groups(model, ckpt, groups, videos, out_dir, dev, infer, progress=progress,
                                              max_whole_pixels=max_whole_pixels, max_image_pixels=max_image_pixels,
                                              legend=legend, confidence=confidence)
        return paths, written, {**missing, **failed}
    finally:  # a run that wrote nothing leaves no folder it made (its released, empty lock file aside)
        if created and out_dir.is_dir():
            left = list(out_dir.iterdir())
            if all(p.name == RunLock.FILE and p.is_file() and p.stat().st_size == 0 for p in left):
                for p in left:
                    p.unlink()
                out_dir.rmdir()


def _predict_groups(model, ckpt, groups, videos, out_dir, dev, infer, *, progress, max_whole_pixels,
                    max_image_pixels, legend, confidence) -> tuple[list[Path], dict[Path, str]]:
    written, failed = [], {}
    for rel, group in groups.items():
        w, f = predict_files(model, ckpt["meta"], group, out_dir / rel, dev, progress=progress, infer=infer,
                             max_whole_pixels=max_whole_pixels, max_image_pixels=max_image_pixels,
                             legend=legend, confidence=confidence)
        written += w
        failed.update(f)
    for video in videos:  # each frame through the same engine; an overlay video per input
        from .video import predict_video

        try:
            target, frames = predict_video(model, ckpt["meta"], video, out_dir, dev, infer, legend=legend,
                                           progress=progress)
            written.append(target)
            log.info("%s: %d frames -> %s", video, frames, target)
        except Exception as e:  # one video must not stop the others
            msg = str(e) if isinstance(e, DataError) else f"{video}: {type(e).__name__}: {e}"
            log.debug("%s", msg)
            failed[video] = msg
    return written, failed
