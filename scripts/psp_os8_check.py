"""Why OS16-trained PSPNet-Lite0 weights lose mIoU at OS8, measured.
(1) the backbone's OS8 features at the OS16 sample positions equal its OS16 features (max |diff|);
(2) CamVid val mIoU at OS16, at OS8 with the PSP bottleneck undilated (the old behaviour: the 3x3
bottleneck sees half its trained field) and at OS8 with the bottleneck dilated by 2 (now the default).
Usage: python scripts/psp_os8_check.py [CKPT] [OUT.json]"""
import json

import torch

from sceneparse.evaluation.evaluate import evaluate_model

from _val_setup import model_and_val

ckpt, out, model, job = model_and_val("results/camvid/pspnet_effl0_os8_head.json")
ds = job.dataset
x = ds[0]["image"][None]
res = {"checkpoint": ckpt, "split": f"{job.split} ({len(ds)} images), whole 360x480, single scale"}
with torch.no_grad():
    f16 = model.backbone(x)
    s16 = evaluate_model(model, ds, progress=False)
    model.set_output_stride(8)
    f8 = model.backbone(x)
    res["backbone_os8_vs_os16_max_abs_diff_at_os16_positions"] = [
        float((b[..., ::2, ::2][..., : a.shape[-2], : a.shape[-1]] - a).abs().max()) if b.shape != a.shape
        else float((b - a).abs().max()) for a, b in zip(f16, f8)]
    s8 = evaluate_model(model, ds, progress=False)
    conv = model.decode_head.bottleneck[0]
    conv.dilation, conv.padding = (1, 1), (1, 1)
    s8u = evaluate_model(model, ds, progress=False)
for name, s in (("os16", s16), ("os8_dilated_head", s8), ("os8_undilated_head", s8u)):
    res[name] = {"mIoU": round(s["mIoU"], 2), "aAcc": round(s["aAcc"], 2), "boundary_F": round(s["boundary"]["F"], 2)}
json.dump(res, open(out, "w"), indent=1)
print(json.dumps(res, indent=1))
