"""``sceneparse train``: train a model from a YAML config."""
from __future__ import annotations


def _train(args) -> int:
    from ..config import load_config
    from ..training.trainer import train

    cfg = load_config(args.config, args.overrides)
    if args.work_dir:
        from omegaconf import OmegaConf
        cfg = OmegaConf.merge(cfg, {"work_dir": args.work_dir})
    scores = train(cfg, resume=args.resume, progress=not args.no_progress,
                   allow_config_change=tuple(args.allow_config_change or ()), restart=args.restart)
    if scores:
        print(f"final val mIoU {scores['mIoU']:.2f}  aAcc {scores['aAcc']:.2f}  mAcc {scores['mAcc']:.2f}")
    print(f"run written to {cfg.work_dir}")
    return 0


def add_train_parser(sub) -> None:
    t = sub.add_parser("train", help="train a model from a YAML config")
    t.add_argument("config", help="a YAML config file, or a shipped one by name (e.g. camvid/pspnet_effl0; "
                                  "an unknown name lists them)")
    t.add_argument("overrides", nargs="*", help="key=value overrides, e.g. train.iters=100")
    t.add_argument("--resume", help="checkpoint path, or 'auto' for the newest in the run's checkpoints/")
    t.add_argument("--work-dir", help="run directory (default runs/<name>)")
    t.add_argument("--restart", action="store_true",
                   help="start over in a work_dir that holds an earlier run: delete its checkpoints and outputs")
    t.add_argument("--allow-config-change", nargs="+", metavar="KEY",
                   help="with --resume: config keys (e.g. train.lr train.iters) allowed to differ from the "
                        "checkpoint's; the new values are used and recorded in resumes.jsonl")
    t.add_argument("--no-progress", action="store_true", help="no progress bars (logs and files only)")
    t.set_defaults(func=_train)
