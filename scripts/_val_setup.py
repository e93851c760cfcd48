"""Shared by the measurement scripts: ``python scripts/X.py [CKPT] [OUT.json]`` -> the checkpoint's model
and its CamVid val split (``evaluation.evaluate.prepare_split``; the output path checked before any work)."""
import sys

from sceneparse.models.factory import model_from_checkpoint
from sceneparse.evaluation.evaluate import prepare_split
from sceneparse.hub import resolve_weights


def model_and_val(default_out: str, default_ckpt: str = "camvid_pspnet_effl0"):
    """``(checkpoint path, output path, model, split job)`` from ``sys.argv``."""
    ckpt = sys.argv[1] if len(sys.argv) > 1 else default_ckpt
    ckpt = str(resolve_weights(ckpt))  # a model name or a file
    out = sys.argv[2] if len(sys.argv) > 2 else default_out
    # every val image (a checkpoint's data.max_val_samples is a training-time setting)
    job = prepare_split(ckpt, None, ["data.root=../shared/data/camvid", "data.max_val_samples=0"], None, out, "metrics")
    model, _ = model_from_checkpoint(job.ckpt)
    return ckpt, out, model, job
