"""An exclusive lock on a run directory or output folder: one training (or ``predict``) writes to it at a time.

``RunLock(work_dir)`` holds an ``fcntl.flock`` on ``work_dir/.lock`` and writes the owner's pid,
host and start time into it. The kernel drops the lock when its process dies (``kill -9``
included), so a lock file left by a dead run is stale by construction and is taken over; a live
owner makes a second training refuse with its pid. Where ``flock`` is unavailable (some network
file systems), a recorded pid that is alive on this host counts as the owner.
"""
from __future__ import annotations

import errno
import json
import logging
import os
import socket
import time
from pathlib import Path

try:
    import fcntl
except ImportError:  # not POSIX
    fcntl = None

log = logging.getLogger(__name__)


class RunLockedError(RuntimeError):
    """Another live process holds the run directory's lock."""


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


class RunLock:
    """Context manager: exclusive ownership of ``folder`` for this process.

    Raises:
        RunLockedError: another live process owns it (the message names its pid, host and start time).
    """

    FILE = ".lock"

    def __init__(self, folder: str | Path, command: str = "train"):
        self.folder, self.command = Path(folder), command
        self.path = self.folder / self.FILE
        self._fd: int | None = None

    def _owner(self) -> dict:
        try:
            return json.loads(self.path.read_text() or "{}")
        except (OSError, ValueError):
            return {}

    def _refuse(self, owner: dict) -> RunLockedError:
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(owner["started"])) if "started" in owner else "?"
        other = owner.get("command", "train")
        what = "training" if other == "train" else f"sceneparse {other}"
        where = "work_dir (--work-dir)" if self.command == "train" else "output folder (--out)"
        return RunLockedError(f"{'run directory' if other == 'train' else 'folder'} {self.folder} is in use by another "
                              f"{what} (pid {owner.get('pid', '?')} on {owner.get('host', '?')}, since {since}); "
                              f"wait for it, stop it, or use another {where}")

    def __enter__(self) -> "RunLock":
        self.folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            if fcntl is not None:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    flocked = True
                except OSError as e:
                    if e.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                        raise self._refuse(self._owner()) from None
                    flocked = False  # no flock here (e.g. some NFS): fall back to the recorded pid
            else:
                flocked = False
            owner = self._owner()
            if not flocked and owner.get("host") == socket.gethostname() and owner.get("pid") not in (None, os.getpid()) \
                    and _pid_alive(int(owner["pid"])):
                raise self._refuse(owner)
            if owner.get("pid"):
                log.info("run directory %s: taking over the stale lock of pid %s (no longer running)",
                         self.folder, owner["pid"])
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                      "started": time.time(), "command": self.command}).encode(), 0)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        return self

    def __exit__(self, *exc) -> None:
        if self._fd is not None:
            try:
                os.ftruncate(self._fd, 0)  # an empty lock file: nobody owns the directory
            finally:
                os.close(self._fd)  # closing releases the flock
                self._fd = None
