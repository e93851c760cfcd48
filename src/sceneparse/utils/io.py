"""Where commands write: checked before any work starts, and never over a file the user gave as input."""
from __future__ import annotations

import errno
import os
import re
import tempfile
from pathlib import Path
from typing import Iterable


def same_file(a: str | Path, b: str | Path) -> bool:
    """Whether two paths name one file (links and case-insensitive file systems included)."""
    a, b = Path(a), Path(b)
    if a.exists() and b.exists():
        try:
            return os.path.samefile(a, b)
        except OSError:
            pass
    return os.path.normcase(str(a.resolve())) == os.path.normcase(str(b.resolve()))


def prepare_out_dir(path: str | Path, flag: str = "--out") -> Path:
    """Create ``path`` (and parents) and check that files can be created in it.

    Raises:
        ValueError: ``path`` is an existing file, or cannot be created or written (message names it).
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ValueError(f"{flag} {path} is an existing file, not a directory")
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".sceneparse_write_test"):
            pass
    except OSError as e:
        raise ValueError(f"{flag} {path}: cannot write there ({e.strerror or e})") from e
    return path


def check_output_file(path: str | Path, inputs: Iterable[str | Path] = (), flag: str = "--out",
                      suffixes: tuple[str, ...] = (), force: bool | None = None) -> Path:
    """Check, before the work, that ``path`` can be written and is none of ``inputs``.

    ``suffixes``: the file types this output may have (e.g. ``(".json",)``), so that a mistyped path
    cannot replace an unrelated file (``--out photo.png`` for a JSON report). ``force``: ``None`` for
    reports, which a re-run replaces; ``False`` for model files (export, quantize, pack), which are
    replaced only with ``--force``.

    Raises:
        ValueError: ``path`` is an input file, a directory, has another suffix, exists while ``force`` is
            ``False``, or is in a folder that cannot be created or written (message names it).
    """
    path = Path(path)
    if suffixes and path.suffix.lower() not in suffixes:
        raise ValueError(f"{flag} {path}: expected a {' / '.join(suffixes)} file name")
    for src in inputs:
        if src is not None and same_file(path, src):
            raise ValueError(f"{flag} {path} is the input file {src}: refusing to write over it")
    if path.is_dir():
        raise ValueError(f"{flag} {path} is a directory; give a file path")
    if force is False and (path.exists() or path.is_symlink()):
        raise ValueError(f"{flag} {path} exists; pass --force to replace it")
    prepare_out_dir(path.parent if str(path.parent) else Path("."), flag=f"{flag} folder")
    if path.exists() and not os.access(path, os.W_OK):
        raise ValueError(f"{flag} {path} exists and is not writable")
    return path


def temporary_path(path: str | Path) -> Path:
    """The one name a file is written under before it is renamed onto ``path``: ``.STEM.tmp<pid>SUFFIX`` in
    the same folder (hidden; the suffix kept, since writers such as PIL and OpenVINO pick the format by it).
    :func:`remove_stale_temporaries` finds those a killed process left."""
    path = Path(path)
    return path.with_name(f".{path.stem}.tmp{os.getpid()}{path.suffix}")


def write_atomically(path: str | Path, write) -> Path:
    """``write(tmp_path)`` then rename onto ``path``: a failed write (disk full) leaves no partial file.

    Raises:
        OSError: the write failed (``"no space left on device writing PATH"`` or ``"cannot write PATH: ..."``);
            the temporary is removed and an existing file at ``path`` is left as it was.
    """
    path = Path(path)
    tmp = temporary_path(path)
    try:
        write(tmp)
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        if e.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", -1)):
            raise OSError(e.errno, f"no space left on device writing {path} (nothing was changed there)") from e
        raise OSError(e.errno, f"cannot write {path}: {e.strerror or e}") from e
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def write_bytes_atomically(path: str | Path, data) -> Path:
    """``data`` (bytes-like) written through :func:`write_atomically`, flushed to disk before the rename.

    Raises:
        OSError: as :func:`write_atomically` (the message names ``path``).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())

    return write_atomically(path, write)


def remove_stale_temporaries(folder: str | Path) -> list[Path]:
    """Delete the temporaries (:func:`temporary_path`, and the ``.NAME.tmp<pid>`` of earlier versions) that a
    process killed mid-write left in ``folder``. Call only while holding the run directory's lock, so that no
    live writer owns them."""
    removed = []
    folder = Path(folder)
    if folder.is_dir():
        for p in folder.glob(".*.tmp*"):
            if re.fullmatch(r"\..+\.tmp\d+(\.\w+)?", p.name) and p.is_file():
                p.unlink(missing_ok=True)
                removed.append(p)
    return removed
