"""``sceneparse check-data`` and the dataset converters (``convert-sbd``, ``convert-pascal-context``,
``convert-cocostuff10k``)."""
from __future__ import annotations

import json
from pathlib import Path


def _check_data(args) -> int:
    from ..config import load_config
    from ..data import build_dataset
    from ..data.check import check_dataset, format_report

    cfg = load_config(args.config, args.overrides)
    if args.out:
        from ..utils.io import check_output_file

        check_output_file(args.out, [args.config], suffixes=(".json",))
    d = cfg.data
    report = {}
    for split in args.splits or [d.train_split, d.val_split]:
        ds = build_dataset(d.dataset, d.root, split)
        report[split] = check_dataset(ds, progress=not args.no_progress)
        print(f"[{d.dataset} / {split}] " + format_report(report[split]))
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2))
    return 1 if any(r["problems"] for r in report.values()) else 0


def _convert_sbd(args) -> int:
    from ..data.voc import convert_sbd

    n = convert_sbd(args.sbd_root, args.voc_root)
    print(f"wrote SegmentationClassAug/ and ImageSets/Segmentation/train_aug.txt ({n} training images)")
    return 0


def _convert_pascal_context(args) -> int:
    from ..data.pascal_context import convert_pascal_context

    n = convert_pascal_context(args.context_root, args.voc2010_root, progress=not args.no_progress)
    print(f"wrote SegmentationClassContext/ and ImageSets/SegmentationContext/ (train {n['train']}, val {n['val']})")
    return 0


def _convert_cocostuff10k(args) -> int:
    from ..data.coco_stuff import convert_cocostuff10k

    n = convert_cocostuff10k(args.root, progress=not args.no_progress)
    print(f"wrote {n} label PNGs to {Path(args.root) / 'annotations_png'}")
    return 0


def add_check_data_parser(sub) -> None:
    c = sub.add_parser("check-data", help="scan a dataset's splits for bad files and report class frequencies")
    c.add_argument("config")
    c.add_argument("overrides", nargs="*")
    c.add_argument("--splits", nargs="+", help="default: data.train_split and data.val_split")
    c.add_argument("--out", help="JSON report path")
    c.add_argument("--no-progress", action="store_true", help="no progress bars (logs and files only)")
    c.set_defaults(func=_check_data)


def add_converter_parsers(sub) -> None:
    for name, help_text, positionals, progress, handler in _CONVERTERS:
        c = sub.add_parser(name, help=help_text)
        for arg, arg_help in positionals:
            c.add_argument(arg, help=arg_help)
        if progress:
            c.add_argument("--no-progress", action="store_true", help="no progress bars (logs and files only)")
        c.set_defaults(func=handler)


# the dataset converters: (command, help, [(positional, help)], progress flag, handler)
_CONVERTERS = [
    ("convert-sbd", "SBD .mat annotations -> VOC SegmentationClassAug + train_aug.txt",
     [("sbd_root", "benchmark_RELEASE/dataset (holds cls/, train.txt, val.txt)"), ("voc_root", "VOCdevkit/VOC2012")],
     False, _convert_sbd),
    ("convert-pascal-context", "Pascal-Context trainval/*.mat -> 60-class PNGs + split lists",
     [("context_root", "extracted trainval.tar.gz (holds trainval/*.mat, labels.txt)"),
      ("voc2010_root", "VOCdevkit/VOC2010")], True, _convert_pascal_context),
    ("convert-cocostuff10k", "COCO-Stuff 10k annotations/*.mat -> annotations_png/*.png",
     [("root", "the extracted cocostuff-10k-v1.1 folder (images/, annotations/, imageLists/)")], True,
     _convert_cocostuff10k),
]
