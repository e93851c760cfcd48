"""Parallel fusion row of Table 2 (GRN/LRN paper Sec. 4.2: "employed individually or in a cascading
architecture"): a cascade checkpoint with fusion=parallel averaging the GRN(front) and LRN(front) of two
separately trained stage runs that share the front. Usage: python scripts/merge_parallel.py GRN.pt LRN.pt OUT.pt"""
import copy
import sys

import torch

from sceneparse.checkpoint import atomic_save, load_checkpoint

g, l_ = load_checkpoint(sys.argv[1]), load_checkpoint(sys.argv[2])
gh, lh = g["config"]["model"]["head"], l_["config"]["model"]["head"]
if gh["front"] != lh["front"]:
    raise SystemExit(f"the two runs have different fronts: {gh['front']} vs {lh['front']}")
cfg = copy.deepcopy(g["config"])
cfg["model"]["head"].update({k: lh[k] for k in ("m", "lrn_channels", "lrn_center_bias") if k in lh},
                            grn=True, lrn=True, fusion="parallel", train_stage=None,
                            supervise_steps="last")  # the GRN run's "all" is a training setting for cascade fusion
state = {k: v for k, v in g["model"].items() if not k.startswith("lrn.")}
state.update({k: v for k, v in l_["model"].items() if k.startswith("lrn.")})
atomic_save({"model": state, "config": cfg, "meta": g["meta"]}, sys.argv[3])
print("wrote", sys.argv[3])
