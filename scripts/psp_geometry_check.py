"""Second measurement of why OS16-trained weights lose mIoU at OS8: does the *resampling geometry* explain the OS8 loss?
A stride-s network with centred taps puts feature i at input pixel s*i; the segmentor's bilinear
upsampling with align_corners=False instead maps the n = ceil(H/s) features over the H pixels, a
position-dependent shift (at OS16 on 360 rows: 7.5 px at the top, 0 at the bottom; at OS8: 3.5 px
everywhere). The model learned with its OS16 shift. Scores CamVid val for: the default upsampling
at OS16 / OS8 (dilated head), and a pixel-exact resampling (pixel y reads feature y / s).
Usage: python scripts/psp_geometry_check.py [CKPT] [OUT.json]"""
import json

import torch
import torch.nn.functional as F

from sceneparse.evaluation.metrics import ConfusionMatrix

from _val_setup import model_and_val

ckpt, out, model, job = model_and_val("results/camvid/pspnet_effl0_os8_geometry.json")
ds = job.dataset


def exact(logits, size, s):
    h, w = size
    n, m = logits.shape[-2:]
    ys = torch.arange(h, dtype=torch.float32) / s  # pixel y reads feature y / s
    xs = torch.arange(w, dtype=torch.float32) / s
    gy = 2 * ys / max(n - 1, 1) - 1
    gx = 2 * xs / max(m - 1, 1) - 1
    grid = torch.stack(torch.meshgrid(gy, gx, indexing="ij")[::-1], -1)[None]
    return F.grid_sample(logits, grid, mode="bilinear", padding_mode="border", align_corners=True)


res = {"checkpoint": ckpt, "split": f"{job.split} ({len(ds)} images), whole 360x480"}
for os_ in (16, 8):
    model.set_output_stride(os_)
    cms = {"default": ConfusionMatrix(ds.num_classes), "exact": ConfusionMatrix(ds.num_classes)}
    with torch.no_grad():
        for i in range(len(ds)):
            s = ds[i]
            x = s["image"][None]
            low = model.decode_head(model.backbone(x))
            cms["default"].update(F.interpolate(low, size=x.shape[-2:], mode="bilinear", align_corners=False)
                                  .argmax(1), s["label"][None])
            cms["exact"].update(exact(low, x.shape[-2:], os_).argmax(1), s["label"][None])
    for k, cm in cms.items():
        res[f"os{os_}_{k}_upsampling"] = round(cm.compute(ds.CLASSES)["mIoU"], 2)
    print(res, flush=True)
json.dump(res, open(out, "w"), indent=1)
