"""Does DeepLabv3's OS8 evaluation lose through the doubled ASPP rates? (the paper's Fig. 4 effect: a rate
near the feature map's size reads mostly padding). The same OS16-trained weights, CamVid val, whole 360x480,
single scale: at OS16; at OS8 with the ASPP rates doubled (the paper's Sec. 3.3 rule, our default); at OS8 with
the rates kept at their OS16 values (each branch then sees half its trained field in image pixels).
Usage: python scripts/dlv3_os8_rates.py [CKPT] [OUT.json]"""
import json

import torch

from sceneparse.evaluation.evaluate import evaluate_model

from _val_setup import model_and_val

ckpt, out, model, job = model_and_val("results/camvid/directions/dlv3_os8_rates.json", "camvid_deeplabv3_effl0")
ds = job.dataset
aspp = model.decode_head.aspp
res = {"checkpoint": ckpt, "split": f"{job.split} ({len(ds)} images), whole 360x480, single scale",
       "trained_rates_os16": list(aspp.base_rates)}
rows = {}
with torch.no_grad():
    rows["os16"] = (aspp.rates, evaluate_model(model, ds, progress=False))
    model.set_output_stride(8)
    rows["os8_rates_doubled"] = (aspp.rates, evaluate_model(model, ds, progress=False))
    aspp.set_output_stride(16)  # the backbone stays at OS8, the branches at their trained (OS16) rates
    rows["os8_rates_kept"] = (aspp.rates, evaluate_model(model, ds, progress=False))
for name, (rates, s) in rows.items():
    res[name] = {"aspp_rates": list(rates), "mIoU": round(s["mIoU"], 2), "aAcc": round(s["aAcc"], 2),
                 "boundary_F": round(s["boundary"]["F"], 2)}
json.dump(res, open(out, "w"), indent=1)
print(json.dumps(res, indent=1))
