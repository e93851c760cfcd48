"""``sceneparse models``, ``doctor`` and ``demo``."""
from __future__ import annotations

import json
from pathlib import Path

from .common import POSITIVE


def _models(args) -> int:
    from ..api import list_models, model_speed

    models = list_models()
    if args.speed:  # measured here, now: the numbers of this machine
        for name, m in models.items():
            if "error" not in m:
                m["speed"] = model_speed(name, repeats=args.speed)
    if args.json:
        print(json.dumps(models, indent=1))
        return 0
    if not models:
        print("no models installed")
        return 0
    for name, m in models.items():
        if "error" in m:
            print(f"{name}: cannot be read ({m['error']})")
            continue
        score = m.get("metrics", {})
        scored = (f"{score['split']} mIoU {score['mIoU']:.2f}, aAcc {score.get('aAcc', float('nan')):.2f}, "
                  f"mAcc {score.get('mAcc', float('nan')):.2f}"
                  + (f", boundary F {score['boundary_F']:.2f}" if "boundary_F" in score else "")
                  if "mIoU" in score else "no scores")
        where = "" if m["packaged"] else f", from {Path(m['path']).parent}"
        print(f"{name}{' (default)' if m['default'] else ''}: {m['arch']} {m['backbone']} OS{m['output_stride']}, "
              f"{m['num_classes']} classes of {m['dataset']}, trained on {'+'.join(m['train_splits'])}, "
              f"{scored}, {m['size_mb']} MiB{where}")
        if "speed" in m:
            sp = m["speed"]
            print(f"    speed: {1000 * sp['s_per_image']:.0f} ms per {sp['image'][1]}x{sp['image'][0]} image "
                  f"(median of {sp['repeats']}; fp32, {sp['threads']} threads, {sp['cpu']})")
        if m.get("recipe"):
            print(f"    recipe: {m['recipe']}")
        if m.get("retrain"):
            print(f"    retrain: {m['retrain']}")
    return 0


def _demo(args) -> int:
    from ..demo import check_examples, launch

    if args.examples:
        check_examples(args.examples)  # one line naming the file, before anything is served
    print(f"sceneparse demo on http://{args.host}:{args.port} (Ctrl+C stops it)")
    launch(args.host, args.port, checkpoints=args.checkpoint or (), examples=args.examples)
    return 0


def add_demo_parser(sub) -> None:
    d = sub.add_parser("demo", help="a local web page: parse a photo, see overlay, legend and pixel shares (extra 'demo')")
    d.add_argument("--host", default="127.0.0.1", help="0.0.0.0 to serve other machines too")
    d.add_argument("--port", type=POSITIVE, default=7860)
    d.add_argument("--checkpoint", nargs="+", help="checkpoint files offered besides the packaged models")
    d.add_argument("--examples", nargs="+", help="photos to pick from (default: a few CamVid val images if present)")
    d.set_defaults(func=_demo)


def _doctor(args) -> int:
    from ..utils.sysinfo import report

    r = report()
    if args.json:
        print(json.dumps(r, indent=1))
        return 1 if r["problems"] else 0
    print(f"sceneparse {r['sceneparse']}, Python {r['python']}, torch {r['torch']}, torchvision {r['torchvision']}"
          + (f", {r['threads']} threads" if "threads" in r else "") + (", CUDA available" if r.get("cuda") else ""))
    print(f"CPU: {r['cpu']} ({' '.join(r['cpu_flags']) or 'no AVX-512 / AMX'}); training precision: "
          f"{r['bf16_training']}; C compiler: {r['c_compiler'] or 'none'}")
    for name, e in r["extras"].items():
        print(f"  [{'x' if e['installed'] else ' '}] {name:12s} {e['adds']}"
              + ("" if e["installed"] else f"  (pip install 'sceneparse[{name}]')"))
    for p in r["problems"]:
        print(f"PROBLEM: {p}")
    return 1 if r["problems"] else 0


def add_doctor_parser(sub) -> None:
    d = sub.add_parser("doctor", help="versions, CPU flags, the extras installed and what each missing one would add")
    d.add_argument("--json", action="store_true")
    d.set_defaults(func=_doctor)


def add_models_parser(sub) -> None:
    m = sub.add_parser("models", help="list the models (packaged and in the model folders: names for --checkpoint and "
                       "sceneparse.load), with their scores; --speed times them here")
    m.add_argument("--json", action="store_true", help="print the full metadata as JSON")
    m.add_argument("--speed", type=POSITIVE, nargs="?", const=5, metavar="REPEATS",
                   help="also time each model on this machine (median of REPEATS calls, default 5)")
    m.set_defaults(func=_models)
