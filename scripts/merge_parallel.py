"""The parallel pipeline of the GRN/LRN paper (Sec. 3.3: "the parallel pipeline which combines the two
refinement results by average fusion", the alternative the cascade is said to outperform; the paper gives no
number for it): a cascade checkpoint with fusion=parallel from two stage runs trained apart on the same front,
one with the GRN and one with the LRN. The average is over logits (our choice; the paper does not say).
Usage: python scripts/merge_parallel.py GRN.pt LRN.pt OUT.pt"""
import copy
import sys

import torch

from sceneparse.checkpoint import atomic_save, load_checkpoint

from pathlib import Path

if Path(sys.argv[3]).resolve() in {Path(a).resolve() for a in sys.argv[1:3]}:
    raise SystemExit(f"OUT {sys.argv[3]} is one of the two inputs: write the merged model elsewhere")
g, l_ = load_checkpoint(sys.argv[1]), load_checkpoint(sys.argv[2])
gh, lh = g["config"]["model"]["head"], l_["config"]["model"]["head"]
front = {k: v for k, v in g["model"].items() if k.startswith("front.")}
other = {k: v for k, v in l_["model"].items() if k.startswith("front.")}
if gh["front"] != lh["front"] or front.keys() != other.keys() or any(not torch.equal(v, other[k]) for k, v in front.items()):
    raise SystemExit(f"the two runs have different fronts ({gh['front']} vs {lh['front']}, or the same file retrained "
                     "between them): the merged model would not be the mean of the two")
cfg = copy.deepcopy(g["config"])
cfg["model"]["head"].update({k: lh[k] for k in ("m", "lrn_channels", "lrn_center_bias") if k in lh},
                            grn=True, lrn=True, fusion="parallel", train_stage=None,
                            supervise_steps="last")  # the GRN run's "all" is a training setting for cascade fusion
state = {k: v for k, v in g["model"].items() if not k.startswith("lrn.")}
state.update({k: v for k, v in l_["model"].items() if k.startswith("lrn.")})
atomic_save({"model": state, "config": cfg, "meta": g["meta"]}, sys.argv[3])
print("wrote", sys.argv[3])
