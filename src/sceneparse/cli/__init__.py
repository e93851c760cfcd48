"""Command line: ``sceneparse train | evaluate | predict | benchmark | ...``, one module per command group.

Each handler parses its flags, builds a config and makes one call into the library; heavy modules (torch)
are imported inside the handlers, so ``sceneparse --help`` stays fast.
"""
from __future__ import annotations

import argparse
import logging
import sys

from .benchmark import add_benchmark_parser
from .common import one_line
from .data import add_check_data_parser, add_converter_parsers
from .deploy import add_export_parser, add_pack_parser, add_quantize_parser
from .evaluate import add_analyze_parser, add_evaluate_parser
from .info import add_demo_parser, add_doctor_parser, add_models_parser
from .predict import add_predict_parser
from .train import add_train_parser


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sceneparse", description="Semantic scene parsing toolbox")
    p.add_argument("-v", "--verbose", action="store_true", help="debug-level log messages")
    sub = p.add_subparsers(dest="command", required=True)
    add_train_parser(sub)
    add_evaluate_parser(sub)
    add_predict_parser(sub)
    add_benchmark_parser(sub)
    add_analyze_parser(sub)
    add_check_data_parser(sub)
    add_converter_parsers(sub)
    add_export_parser(sub)
    add_pack_parser(sub)
    add_quantize_parser(sub)
    add_models_parser(sub)
    add_demo_parser(sub)
    add_doctor_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    from ..config import ConfigError
    from ..data.base import DataError
    from ..utils.runlock import RunLockedError
    try:
        return args.func(args)
    except BrokenPipeError:  # `sceneparse models --json | head`: the reader has what it wanted
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error when Python flushes
        return 0
    except (ConfigError, DataError, ValueError, RunLockedError) as e:
        print(f"error: {one_line(e)}", file=sys.stderr)
        return 2
    except ImportError as e:  # a missing extra, or a torch / torchvision pair that does not fit (utils.sysinfo)
        print(f"error: {one_line(e)}", file=sys.stderr)
        return 2
    except OSError as e:  # file not found, permission denied, no space left (the message names the path)
        detail = str(e) if e.filename is None else f"{e.strerror}: {e.filename}"
        print(f"error: {detail}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:
        print(f"interrupted{': ' + str(e) if str(e) else ''}", file=sys.stderr)
        return 130
    except FloatingPointError as e:
        print(f"error: {e}", file=sys.stderr)
        return 3

