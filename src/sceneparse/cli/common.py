"""Helpers shared by the commands: argument types, the inference and run flags, one-line errors."""
from __future__ import annotations

import argparse

from ..constants import BACKENDS, DEFAULT_MODEL, PACKAGED_WEIGHTS_DIR


def int_at_least(minimum: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {value}")
        return value
    parse.__name__ = f"integer >= {minimum}"
    return parse


def positive_float(text: str) -> float:
    import math

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected a finite number > 0, got {text}")
    return value


def one_line(e: BaseException) -> str:
    """The message of ``e`` without the traceback text a DataLoader worker wraps around it."""
    text = str(e)
    if text.startswith("Caught ") and "Original Traceback" in text:
        lines = text.rstrip().splitlines()
        for i in range(len(lines) - 1, -1, -1):
            head, sep, rest = lines[i].partition(": ")
            if sep and head.rsplit(".", 1)[-1] == type(e).__name__:
                return "\n".join([rest] + lines[i + 1:])
    return text


def inference_overrides(args) -> dict:
    """The inference flags given on the command line (they override the config's ``eval`` section)."""
    flags = {k: getattr(args, k) for k in ("mode", "crop_size", "stride", "scales", "flip", "window_batch")
             if getattr(args, k, None) is not None}
    if "scales" in flags:
        flags["scales"] = tuple(flags["scales"])
    if getattr(args, "crf", False):
        from ..inference.crf import DenseCRF
        flags["crf"] = DenseCRF(iterations=args.crf_iterations, **crf_params(getattr(args, "crf_param", None) or []))
    return flags


def crf_params(items: list[str]) -> dict:
    """``["bilateral_compat=5", ...]`` -> ``{"bilateral_compat": 5.0}``; unknown keys raise ``ValueError``."""
    import dataclasses

    from ..inference.crf import DenseCRF

    known = {f.name for f in dataclasses.fields(DenseCRF)} - {"iterations"}
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or key not in known:
            raise ValueError(f"--crf-param {item!r}: expected KEY=VALUE with KEY one of {sorted(known)}")
        try:
            out[key] = positive_float(value)
        except argparse.ArgumentTypeError as e:
            raise ValueError(f"--crf-param {item!r}: {e}") from None
    return out


def add_inference_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("inference (default: the config's eval: section; whole image, single scale unless set)")
    g.add_argument("--mode", choices=("whole", "slide"), help="default: the config's eval.mode (whole)")
    g.add_argument("--crop-size", type=POSITIVE, nargs=2, metavar=("H", "W"), help="sliding-window crop")
    g.add_argument("--stride", type=POSITIVE, nargs=2, metavar=("H", "W"), help="sliding-window stride (default 2/3 crop)")
    g.add_argument("--scales", type=positive_float, nargs="+", help="multi-scale TTA, e.g. 0.5 0.75 1 1.25 1.5 1.75")
    g.add_argument("--flip", action="store_true", default=None, help="left-right flip TTA")
    g.add_argument("--window-batch", type=POSITIVE, help="windows per forward pass (default 4)")
    g.add_argument("--crf", action="store_true", help="dense CRF post-processing (needs pydensecrf2)")
    g.add_argument("--crf-iterations", type=NON_NEGATIVE, default=5, help="mean-field steps of --crf")
    g.add_argument("--crf-param", action="append", metavar="KEY=VALUE",
                   help="a DenseCRF kernel parameter, e.g. bilateral_compat=5 (repeatable; scripts/crf_grid.py picks them)")


def compile_arg(args):
    """``--compile`` / ``--compile-mode aot`` -> the ``compile`` argument of ``optimize_for_inference``."""
    return "aot" if getattr(args, "compile_mode", None) == "aot" else bool(getattr(args, "compile", False))


def add_run_flags(p: argparse.ArgumentParser, handler) -> None:
    """What every command that runs a trained model takes: output stride, device, progress, inference."""
    p.add_argument("--output-stride", type=int, choices=(8, 16, 32), help="run at another output_stride")
    p.add_argument("--device", default="auto")
    p.add_argument("--backend", choices=BACKENDS, default="torch",
                   help="who runs the network: torch (default), openvino or onnxruntime (CPU; extras 'openvino' / "
                        "'export'); an OpenVINO IR --checkpoint (sceneparse quantize) always runs on openvino")
    p.add_argument("--compile-mode", choices=("inductor", "aot"),
                   help="aot: AOTInductor instead of torch.compile (implies --compile; no guards, a few percent "
                        "faster on CPU, 15-25 s to compile each new input size)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars (logs and files only)")
    add_inference_flags(p)
    p.set_defaults(func=handler)


POSITIVE, NON_NEGATIVE, MIN_SIZE = int_at_least(1), int_at_least(0), int_at_least(32)

DEFAULT_WEIGHTS = PACKAGED_WEIGHTS_DIR / f"{DEFAULT_MODEL}.pt"
