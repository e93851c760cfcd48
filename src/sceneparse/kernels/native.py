"""Native CPU kernels, compiled on first use with the system C compiler and loaded with :mod:`ctypes`.

Only our own C source in this folder is compiled (never a user's file). The shared library is cached
under ``$SCENEPARSE_CACHE`` (default ``~/.cache/sceneparse``)``/kernels/<key>.so``, where the key hashes
the source, the compiler's version, the flags and this CPU's feature flags (the library is built with
``-march=native``, and the sandbox's CPU model changes between machines). A build takes about one second.
Only a folder and file of the current user that nobody else can write are trusted: otherwise the library
is rebuilt in a private temporary folder (a library planted by someone else is never loaded).

Without a C compiler, on a non-x86/ARM machine, or with ``SCENEPARSE_NATIVE=0`` nothing is built and
:func:`upsample_argmax` returns ``None``: callers then use the pure PyTorch path, which gives the same
labels.
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Sequence

import torch

_SOURCE = Path(__file__).with_name("upsample_argmax.c")
_FLAGS = ["-O3", "-march=native", "-ffp-contract=off", "-fno-math-errno", "-fPIC", "-shared", "-std=c99"]
if platform.machine().lower() in ("x86_64", "amd64", "i686", "i386"):
    _FLAGS.insert(2, "-mprefer-vector-width=512")  # x86 only; halves the blend loop's time on AVX-512 CPUs
_lock = threading.Lock()
_lib: ctypes.CDLL | None = None
_tried = False
_error: str | None = None
_pool: ThreadPoolExecutor | None = None
_axes: dict[tuple[int, int], tuple[torch.Tensor, ...]] = {}


def _cpu_flags() -> str:
    from ..utils.sysinfo import all_cpu_flags

    return " ".join(sorted(all_cpu_flags())) or sys.platform


def _compiler() -> list[str] | None:
    """The C compiler command (``$CC`` split like a shell would, e.g. ``ccache gcc``), or ``None``."""
    if os.environ.get("CC"):
        return shlex.split(os.environ["CC"])
    found = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    return [found] if found else None


def _private(path: Path) -> bool:
    """Whether ``path`` is ours and nobody else can write it (always true where there are no POSIX owners)."""
    if not hasattr(os, "getuid"):
        return True
    st = path.stat()
    return st.st_uid == os.getuid() and not st.st_mode & 0o022


def build_library(source: Path, flags: Sequence[str], headers: Sequence[Path] = ()) -> ctypes.CDLL:
    """Compile our C ``source`` (which may include our ``headers``) with ``flags`` into the private cache
    (once per source and headers, compiler, flags and CPU) and load it.

    Raises:
        RuntimeError: no C compiler, or the compiler failed.
    """
    cc = _compiler()
    if cc is None:
        raise RuntimeError("no C compiler (set CC)")
    version = subprocess.run([*cc, "--version"], capture_output=True, text=True, timeout=30).stdout
    key = hashlib.sha256("\n".join([source.read_text(), *(h.read_text() for h in headers), version, " ".join(flags),
                                    _cpu_flags()]).encode())
    cache = Path(os.environ.get("SCENEPARSE_CACHE", Path.home() / ".cache" / "sceneparse")) / "kernels"
    cache.mkdir(parents=True, exist_ok=True, mode=0o700)
    temporary = not _private(cache)
    if temporary:  # someone else could plant a library there: build in a private folder, removed once loaded
        cache = Path(tempfile.mkdtemp(prefix="sceneparse_kernels_"))
    so = cache / f"{source.stem}-{key.hexdigest()[:16]}.so"
    if not so.exists() or not _private(so):
        fd, tmp = tempfile.mkstemp(suffix=".so", dir=cache)
        os.close(fd)
        try:
            proc = subprocess.run([*cc, *flags, str(source), "-o", tmp, "-lm"], capture_output=True, text=True,
                                  timeout=120)
            if proc.returncode:
                raise RuntimeError(f"{' '.join(cc)} failed: {proc.stderr.strip()[-300:]}")
            os.chmod(tmp, 0o700)
            os.replace(tmp, so)  # atomic: a concurrent process sees the old state or the whole library
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    if not temporary:
        return ctypes.CDLL(str(so))
    try:
        return ctypes.CDLL(str(so))  # the loaded library stays mapped after its file is gone
    finally:
        shutil.rmtree(cache, ignore_errors=True)


def run_parallel(fns: Sequence, threads: int | None = None) -> list:
    """Call each of ``fns`` (no arguments), spread over ``threads`` Python threads (default: torch's thread
    count, at most 8): ctypes releases the GIL during a foreign call, so C kernels run in parallel."""
    global _pool
    threads = max(1, min(threads or torch.get_num_threads(), 8, len(fns)))
    if threads == 1:
        return [fn() for fn in fns]
    if _pool is None or _pool._max_workers < threads:
        _pool = ThreadPoolExecutor(threads, thread_name_prefix="sceneparse-native")
    return [f.result() for f in [_pool.submit(fn) for fn in fns]]


def _build() -> ctypes.CDLL:
    lib = build_library(_SOURCE, _FLAGS)
    i64, p = ctypes.c_int64, ctypes.c_void_p
    lib.sp_axis.argtypes = [i64, i64, p, p, p, p]
    lib.sp_hrows.argtypes = [p, i64, i64, i64, i64, p, p, p, p, p]
    lib.sp_vargmax.argtypes = [p, i64, i64, i64, i64, i64, p, p, p, p, p, p, p]
    for f in (lib.sp_axis, lib.sp_hrows, lib.sp_vargmax):
        f.restype = None
    return lib


def load() -> ctypes.CDLL | None:
    """The compiled library, building it on first call; ``None`` where it cannot be built (the reason is
    in :func:`error`) or ``SCENEPARSE_NATIVE=0``."""
    global _lib, _tried, _error
    if os.environ.get("SCENEPARSE_NATIVE", "1") == "0":
        return None
    if not _tried:
        with _lock:
            if not _tried:
                try:
                    _lib = _build()
                except Exception as e:  # no compiler, read-only home, foreign platform: fall back, say why
                    _error = f"{type(e).__name__}: {e}"
                    _lib = None
                _tried = True
    return _lib


def error() -> str | None:
    """Why :func:`load` returned ``None`` (``None`` if it did not, or was not called yet)."""
    return _error


def _axis(lib: ctypes.CDLL, n_in: int, n_out: int) -> tuple[torch.Tensor, ...]:
    key = (n_in, n_out)
    axis = _axes.get(key)
    if axis is None:  # float32 explicitly: the C code writes 4-byte floats whatever torch's default dtype is
        i0, i1 = torch.empty(n_out, dtype=torch.int32), torch.empty(n_out, dtype=torch.int32)
        l0, l1 = torch.empty(n_out, dtype=torch.float32), torch.empty(n_out, dtype=torch.float32)
        lib.sp_axis(n_in, n_out, i0.data_ptr(), i1.data_ptr(), l0.data_ptr(), l1.data_ptr())
        axis = (i0, i1, l0, l1)
        if len(_axes) > 64:
            _axes.clear()
        _axes[key] = axis
    return axis


def _chunks(n: int, parts: int) -> list[tuple[int, int]]:
    step = -(-n // parts)
    return [(s, min(s + step, n)) for s in range(0, n, step)]


def upsample_argmax(logits: torch.Tensor, size: Sequence[int]) -> torch.Tensor | None:
    """Labels of ``F.interpolate(logits, size, mode="bilinear", align_corners=False).argmax(1)`` by the
    native kernel, or ``None`` when the kernel is unavailable or the input is not a CPU tensor.

    Args:
        logits: ``(N, K, h, w)`` scores on the CPU, any float dtype (computed in float32).
        size: ``(H, W)`` output size in pixels.

    Returns:
        ``(N, H, W)`` int64 class ids, or ``None``.
    """
    if logits.device.type != "cpu" or logits.dim() != 4:
        return None
    lib = load()
    if lib is None:
        return None
    x = logits.detach().float().contiguous()
    n, k, h, w = x.shape
    H, W = (int(s) for s in size)
    if min(n, k, h, w, H, W) <= 0:
        if k <= 0 or h <= 0 or w <= 0 or H < 0 or W < 0:
            return None  # nothing to take the argmax of, or a bad size: the PyTorch path raises its own error
        return torch.empty((n, H, W), dtype=torch.int64)
    y0, y1, wy0, wy1 = _axis(lib, h, H)
    x0, x1, wx0, wx1 = _axis(lib, w, W)
    rows = torch.empty((n, k, h, W), dtype=torch.float32)
    out = torch.empty((n, H, W), dtype=torch.int64)
    threads = max(1, min(torch.get_num_threads(), 8))
    if n * H * W * k < 1 << 23:  # below ~8 M scores, handing chunks to threads costs more than it saves
        threads = 1
    run = lambda fns: run_parallel(fns, threads)  # noqa: E731
    xp, rp, op = x.data_ptr(), rows.data_ptr(), out.data_ptr()
    # ctypes releases the GIL during each call, so the chunks run in parallel
    run([lambda a=a, b=b: lib.sp_hrows(xp, w, W, a, b, x0.data_ptr(), x1.data_ptr(), wx0.data_ptr(),
                                       wx1.data_ptr(), rp) for a, b in _chunks(n * k * h, threads)])
    chunks = [(i, a, b) for i in range(n) for a, b in _chunks(H, threads)]
    best = torch.empty((len(chunks), W), dtype=torch.float32)  # per-chunk scratch: the running maximum and class
    idx = torch.empty((len(chunks), W), dtype=torch.int32)
    run([lambda c=c, i=i, a=a, b=b: lib.sp_vargmax(rp + i * k * h * W * 4, k, h, W, a, b, y0.data_ptr(), y1.data_ptr(),
                                                   wy0.data_ptr(), wy1.data_ptr(), op + i * H * W * 8,
                                                   best[c].data_ptr(), idx[c].data_ptr())
         for c, (i, a, b) in enumerate(chunks)])
    return out
