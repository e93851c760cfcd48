import math
import shutil

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from sceneparse import build_model
from sceneparse.models.refine.networks import (GRN, LRN, iterated_receptive_field, propagate, receptive_field, unnormalize)


def _unfold_reference(coeffs, conf):
    n, mm, h, w = coeffs.shape
    k = conf.shape[1]
    m = math.isqrt(mm)
    patches = F.unfold(conf, m, padding=m // 2).view(n, k, mm, h, w)  # the tensor propagate() avoids
    return (patches * coeffs[:, None]).sum(2)


@pytest.mark.parametrize("m", [1, 3, 7])
def test_propagate_equals_unfold_reference(m):
    torch.manual_seed(0)
    coeffs = torch.randn(2, m * m, 9, 13).softmax(1)
    conf = torch.randn(2, 5, 9, 13)
    torch.testing.assert_close(propagate(coeffs, conf), _unfold_reference(coeffs, conf))


@pytest.mark.parametrize("m", [1, 3, 7])
def test_propagate_gradients_equal_the_unfold_reference(m):
    """Eq. 5's backward, written by hand (no per-neighbour autograd graph): the same gradients for both inputs
    as autograd through the unfold reference, and a numerical gradient check in float64."""
    torch.manual_seed(0)
    c0, u0 = torch.randn(2, m * m, 6, 7).softmax(1), torch.randn(2, 3, 6, 7)
    g = torch.randn(2, 3, 6, 7)
    grads = []
    for fn in (propagate, _unfold_reference):
        c, u = c0.clone().requires_grad_(), u0.clone().requires_grad_()
        (fn(c, u) * g).sum().backward()
        grads.append((c.grad, u.grad))
    torch.testing.assert_close(grads[0][0], grads[1][0])
    torch.testing.assert_close(grads[0][1], grads[1][1])
    c = c0.double().requires_grad_()
    assert torch.autograd.gradcheck(propagate, (c, u0.double().requires_grad_()))
    assert torch.autograd.gradcheck(propagate, (c, u0.double()))  # the frozen-front case: coefficients only


def test_propagate_promotes_dtypes_like_the_plain_expression():
    """bf16 coefficients (a bf16 coefficient network) on float32 confidences give float32, and the
    coefficients' gradient comes back in their own dtype."""
    torch.manual_seed(0)
    c = torch.randn(1, 9, 5, 6).softmax(1).bfloat16().requires_grad_()
    u = torch.randn(1, 4, 5, 6)
    out = propagate(c, u)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, _unfold_reference(c.detach().float(), u))
    out.sum().backward()
    assert c.grad.dtype == torch.bfloat16 and c.grad.shape == c.shape


def test_propagate_hand_case_and_errors():
    conf = torch.arange(9.0).view(1, 1, 3, 3)
    coeffs = torch.zeros(1, 9, 3, 3)
    coeffs[:, 5] = 1.0  # p = 5 is the right-hand neighbour (row 1, col 2 of the 3x3 window)
    out = propagate(coeffs, conf)
    assert out[0, 0].tolist() == [[1, 2, 0], [4, 5, 0], [7, 8, 0]]  # outside the image counts 0
    with pytest.raises(ValueError):
        propagate(torch.zeros(1, 8, 3, 3), conf)


def test_lrn_layers_follow_table_1():
    lrn = LRN(num_classes=11, m=7)
    convs = [mod for mod in lrn.modules() if isinstance(mod, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels) for c in convs] == [
        (14, 256), (256, 256), (256, 256), (256, 512), (512, 512), (512, 512), (512, 49)]
    assert all(c.kernel_size == (3, 3) and c.stride == (1, 1) and c.bias is not None for c in convs)
    assert sum(isinstance(mod, nn.BatchNorm2d) for mod in lrn.modules()) == 6


def test_untrained_lrn_returns_its_input():
    torch.manual_seed(0)
    lrn = LRN(num_classes=4, m=7, channels=(16, 16, 16, 32, 32, 32)).eval()
    img, logits = torch.rand(2, 3, 20, 24), 3 * torch.randn(2, 4, 20, 24)
    with torch.no_grad():
        refined, coeffs = lrn(img, logits)
    torch.testing.assert_close(coeffs.sum(1), torch.ones(2, 20, 24))
    assert (refined - logits).abs().max() < 1e-2 * logits.abs().max()
    assert coeffs[:, 24].min() > 0.999


def test_identity_init_coefficients_match_an_untrained_lrn():
    from sceneparse.models.refine.networks import identity_init_coefficients

    wc, wn = identity_init_coefficients(1.0, 7)
    assert wc == pytest.approx(math.e / (math.e + 48)) and wn == pytest.approx(1 / (math.e + 48))
    assert wc + 48 * wn == pytest.approx(1.0)
    torch.manual_seed(0)
    for bias in (1.0, 4.0, 6.0):
        lrn = LRN(3, m=7, channels=(8,) * 6, init_eps=1e-6, center_bias=bias).eval()
        with torch.no_grad():
            c = lrn.coefficients(torch.rand(1, 3, 12, 12), torch.randn(1, 3, 12, 12))
        wc, wn = identity_init_coefficients(bias, 7)
        torch.testing.assert_close(c[0, 24], torch.full((12, 12), wc), atol=1e-4, rtol=0)
        torch.testing.assert_close(c[0, 0], torch.full((12, 12), wn), atol=1e-4, rtol=0)
    with pytest.raises(ValueError):
        identity_init_coefficients(4.0, 4)


def test_literal_eq6_bias_gives_a_near_box_filter():
    lrn = LRN(num_classes=2, m=7, channels=(8,) * 6, center_bias=1.0).eval()
    with torch.no_grad():
        coeffs = lrn.coefficients(torch.rand(1, 3, 8, 8), torch.randn(1, 2, 8, 8))
    assert coeffs[0, 24].mean().item() == pytest.approx(math.e / (math.e + 48), rel=1e-2)


def test_grn_iterates_a_shared_network_and_adds_residuals():
    torch.manual_seed(0)
    net = build_model("fcn", "resnet18", 3, output_stride=8, head_channels=8)
    rgb_weights = net.backbone.conv1.weight.detach().clone()
    grn = GRN(net, num_classes=3, iterations=3, zero_init=False).eval()
    assert net.backbone.conv1.in_channels == 6
    torch.testing.assert_close(net.backbone.conv1.weight[:, :3], rgb_weights)  # pretrained RGB part kept
    img, logits = torch.rand(1, 3, 33, 41), torch.randn(1, 3, 33, 41)
    with torch.no_grad():
        out = grn(img, logits)
        manual = logits
        for _ in range(3):
            manual = manual + grn.step(img, manual)
    assert out["out"].shape == (1, 3, 33, 41) and len(out["steps"]) == 3
    torch.testing.assert_close(out["out"], manual)
    torch.testing.assert_close(out["out"] - out["steps"][1], out["residual"])


def test_receptive_field_equations():
    # Eq. 2 as printed, for three 3x3 layers with strides 1, 2, 1: ((1+2)*1 + 2)*2 = 10, (10 + 2) * 1 = 12
    assert receptive_field([(3, 1), (3, 2), (3, 1)]) == 12
    assert iterated_receptive_field(12, 1) == 12 and iterated_receptive_field(12, 3) == 34  # Eq. 3


def test_unnormalize_inverts_imagenet_normalisation():
    x01 = torch.rand(1, 3, 4, 4)
    mean = torch.tensor([0.485, 0.456, 0.406])[:, None, None]
    std = torch.tensor([0.229, 0.224, 0.225])[:, None, None]
    torch.testing.assert_close(unnormalize((x01 - mean) / std), x01)


def _refine_cfg(camvid_root, work, front, stage, *extra):
    from sceneparse.config import load_config

    from ..conftest import TINY

    base = [o for o in TINY if not o.startswith("model.head.")]
    return load_config(None, base + [
        f"data.root={camvid_root}", f"work_dir={work}", "model.arch=refine", "model.backbone=efficientnet_lite0",
        "model.output_stride=16", f"model.head.front={front}", "model.head.iterations=2", "model.head.m=3",
        "model.head.lrn_channels=[8,8,8,16,16,16]", f"model.head.train_stage={stage}", "train.iters=2",
        "train.eval_interval=2", "train.lr=0.01", *extra])


def test_stagewise_training_freezes_earlier_stages(tmp_path, camvid_root, tiny_run):
    from sceneparse.cli import main
    from sceneparse.training.trainer import train

    front = tmp_path / "front.pt"
    shutil.copy(tiny_run / "final.pt", front)
    train(_refine_cfg(camvid_root, tmp_path / "grn", front, "grn"), progress=False)
    s_front = torch.load(front, weights_only=True)["model"]
    s_grn = torch.load(tmp_path / "grn/final.pt", weights_only=True)["model"]
    assert all(torch.equal(s_front[k], s_grn["front." + k]) for k in s_front)  # front frozen, BN stats too
    train(_refine_cfg(camvid_root, tmp_path / "lrn", front, "lrn", f"model.init_weights={tmp_path / 'grn/final.pt'}"),
          progress=False)
    s_lrn = torch.load(tmp_path / "lrn/final.pt", weights_only=True)["model"]
    grn_keys = [k for k in s_grn if k.startswith("grn.")]
    lrn_keys = [k for k in s_lrn if k.startswith("lrn.") and "weight" in k]
    assert grn_keys and all(torch.equal(s_grn[k], s_lrn[k]) for k in grn_keys)  # GRN frozen in the LRN stage
    assert any(not torch.equal(s_grn[k], s_lrn[k]) for k in lrn_keys)  # the LRN learned
    front.unlink()  # a refinement checkpoint is self-contained: the front's file is not needed any more
    out = tmp_path / "m.json"
    assert main(["evaluate", "--checkpoint", str(tmp_path / "lrn/final.pt"), f"data.root={camvid_root}",
                 "data.max_val_samples=1", "--out", str(out), "--no-progress"]) == 0
    with pytest.raises(ValueError, match="front must describe the front model"):
        build_model("refine", "efficientnet_lite0", 11, 16, front=str(tmp_path / "grn/final.pt"))


def test_cascade_outputs_and_parallel_fusion():
    from sceneparse.models.refine.cascade import RefinementCascade

    torch.manual_seed(0)
    front = build_model("fcn", "resnet18", 3, output_stride=16, head_channels=8)
    grn = GRN(build_model("fcn", "resnet18", 3, output_stride=16, head_channels=8), 3, iterations=1)
    lrn = LRN(3, m=3, channels=(8,) * 6)
    x = torch.randn(2, 3, 40, 48)
    cas = RefinementCascade(front, grn, lrn, train_stage="grn").train()
    out = cas(x)
    assert set(out) == {"out", "aux", "front"} and out["out"].shape == (2, 3, 40, 48)
    with torch.no_grad():
        torch.testing.assert_close(out["front"], front(x)["out"])  # the frozen input, for the diagnostic
    assert not front.training and not any(p.requires_grad for p in front.parameters())
    assert not lrn.training and all(p.requires_grad for p in grn.parameters())
    par = RefinementCascade(front, grn, lrn, fusion="parallel").eval()
    with torch.no_grad():
        f = front(x)["out"]
        img = unnormalize(x)
        expect = (grn(img, f)["out"] + lrn(img, f)[0]) / 2
        torch.testing.assert_close(par(x)["out"], expect)
    with pytest.raises(ValueError):
        RefinementCascade(front, None, lrn, train_stage="grn")
    with pytest.raises(ValueError):
        RefinementCascade(front, grn, None, fusion="parallel")


def test_context_module_identity_init_and_dilations():
    from sceneparse.models.refine.networks import ContextModule

    cm = ContextModule(5).eval()
    assert [c.dilation[0] for c in cm.body if isinstance(c, nn.Conv2d)] == [1, 1, 2, 4, 8, 16, 1]
    logits = torch.randn(2, 5, 17, 19)
    with torch.no_grad():
        out, _ = cm(torch.rand(2, 3, 17, 19), logits)
    torch.testing.assert_close(out, logits)  # an untrained module returns the front's logits exactly


def test_context_module_gradient_is_bounded_and_one_step_keeps_the_front():
    """Defect 2 of issue 14: the module on softmax -> log(clamp) had CE gradients of order 1/q on
    confident errors, and one SGD step at lr 0.01 destroyed the identity start. As a residual on the
    logits, the CE gradient w.r.t. its output is softmax - onehot (|.| <= 1 per pixel), and a step
    at the config's lr keeps the argmax of a confident front almost everywhere."""
    from sceneparse.models.refine.networks import ContextModule

    torch.manual_seed(0)
    k, h, w = 5, 23, 30
    cm = ContextModule(k)
    logits = 8 * torch.randn(4, k, h, w)  # a confident front ...
    target = logits.argmax(1)
    wrong = torch.rand(4, h, w) < 0.1  # ... confidently wrong on 10 % of the pixels
    target[wrong] = (target[wrong] + 1) % k
    out, _ = cm(None, logits)
    F.cross_entropy(out, target).backward()
    grad_norm = torch.cat([p.grad.flatten() for p in cm.parameters() if p.grad is not None]).norm()
    assert grad_norm < 5.0
    opt = torch.optim.SGD(cm.parameters(), lr=0.001, momentum=0.9)
    for _ in range(3):
        opt.zero_grad()
        out, _ = cm(None, logits)
        F.cross_entropy(out, target).backward()
        opt.step()
    with torch.no_grad():
        agree = (cm(None, logits)[0].argmax(1) == logits.argmax(1)).float().mean()
    assert agree > 0.95


def test_cascade_runs_the_context_module_at_the_front_stride():
    from sceneparse.models.refine.cascade import RefinementCascade
    from sceneparse.models.refine.networks import ContextModule

    torch.manual_seed(0)
    front = build_model("fcn", "resnet18", 3, output_stride=16, head_channels=8).eval()
    cm = ContextModule(3)
    seen = []
    cm.body.register_forward_hook(lambda m, i, o: seen.append(tuple(i[0].shape[-2:])))
    cas = RefinementCascade(front, None, cm).eval()
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        out = cas(x)["out"]
        torch.testing.assert_close(out, front(x)["out"])  # zero-initialised residual: the front exactly
        assert seen == [(4, 6)]  # 64 x 96 at output stride 16
        nn.init.normal_(cm.final.weight, std=0.5)  # a trained module: full-size front + upsampled residual
        low = front.decode_head(front.backbone(x))
        expect = front(x)["out"] + F.interpolate(cm.residual(low), size=(64, 96), mode="bilinear",
                                                 align_corners=False)
        got = cas(x)["out"]
        assert (got - front(x)["out"]).abs().max() > 1e-2
        torch.testing.assert_close(got, expect)


def test_a_pyramid_or_a_cascade_is_refused_as_a_front():
    for arch in ("pyramid_output", "refine"):
        front = {"arch": arch, "backbone": "resnet18", "output_stride": 16, "num_classes": 3}
        with pytest.raises(ValueError, match=f"a {arch} model cannot be a refinement front"):
            build_model("refine", "resnet18", 3, output_stride=16, pretrained=False, front=front, grn=False,
                        local="context")


def test_grn_zero_residual_returns_front_and_iterations_share_weights():
    torch.manual_seed(0)
    nets = [build_model("fcn", "resnet18", 3, output_stride=16, head_channels=8) for _ in range(2)]
    g1, g3 = GRN(nets[0], 3, iterations=1), GRN(nets[1], 3, iterations=3)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(g1) == count(g3)  # weight-shared: parameters independent of N
    g3.eval()  # default zero_init: the residual branch's classifier starts at zero
    logits, img = torch.randn(1, 3, 32, 40), torch.rand(1, 3, 32, 40)
    with torch.no_grad():
        torch.testing.assert_close(g3(img, logits)["out"], logits)
        g_rand = GRN(build_model("fcn", "resnet18", 3, output_stride=16, head_channels=8), 3, zero_init=False).eval()
        assert (g_rand(img, logits)["out"] - logits).abs().max() > 1e-3


def test_grn_supervises_every_unfolded_iteration_when_asked():
    """Fig. 2: the GRN of N iterations unfolds into N weight-shared models; supervise_steps='all' gives
    each u_n and r_n the loss of Sec. 3.1, averaged, so the loss equals the hand-computed mean."""
    from sceneparse.training.losses import SegLoss
    from sceneparse.models.refine.cascade import RefinementCascade

    torch.manual_seed(0)
    front = build_model("fcn", "resnet18", 3, output_stride=16, head_channels=8)
    grn = GRN(build_model("fcn", "resnet18", 3, output_stride=16, head_channels=8, dropout=0.0), 3, iterations=3,
              zero_init=False)  # no dropout: the hand computation below sees the same residuals
    x, y = torch.randn(2, 3, 32, 32), torch.randint(0, 3, (2, 32, 32))
    crit = SegLoss(aux_weight=0.4)
    last = RefinementCascade(front, grn, None, train_stage="grn").train()
    every = RefinementCascade(front, grn, None, train_stage="grn", supervise_steps="all").train()
    out_all = every(x)
    assert len(out_all["steps"]) == 2 and len(out_all["residuals"]) == 2
    loss_all, parts_all = every.loss(out_all, y, crit)
    with torch.no_grad():
        g = grn(unnormalize(x), front(x)["out"])
    ce = lambda u: F.cross_entropy(u, y, ignore_index=255)  # noqa: E731
    expect = sum(ce(u) + 0.4 * ce(r) for u, r in zip(g["steps"], g["residuals"])) / 3
    torch.testing.assert_close(loss_all, expect, rtol=1e-4, atol=1e-5)
    loss_last, parts_last = last.loss(last(x), y, crit)
    torch.testing.assert_close(loss_last, ce(g["out"]) + 0.4 * ce(g["residual"]), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(parts_all["loss"], parts_last["loss"])  # the logged term: the last output
    loss_all.backward()
    assert all(p.grad is None for p in front.parameters())
    with pytest.raises(ValueError, match="supervise_steps"):
        RefinementCascade(front, None, LRN(3, m=3, channels=(8,) * 6), train_stage="lrn", supervise_steps="all")


def test_frozen_parts_get_no_gradient():
    from sceneparse.training.losses import SegLoss
    from sceneparse.models.refine.cascade import RefinementCascade

    torch.manual_seed(0)
    front = build_model("fcn", "resnet18", 3, output_stride=16, head_channels=8)
    grn = GRN(build_model("fcn", "resnet18", 3, output_stride=16, head_channels=8), 3, iterations=2)
    lrn = LRN(3, m=3, channels=(8,) * 6)
    cas = RefinementCascade(front, grn, lrn, train_stage="lrn").train()
    loss, _ = SegLoss()(cas(torch.randn(2, 3, 32, 32)), torch.randint(0, 3, (2, 32, 32)))
    loss.backward()
    assert all(p.grad is None for p in front.parameters())
    assert all(p.grad is None for p in grn.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in lrn.parameters())


# issue 14, defects 5 and 6
def _cascade_ckpt(front_path, **head):
    """A refinement checkpoint without meta.front (as older versions wrote it: rebuilt from the front's file)."""
    from sceneparse.models.factory import build_model_from_config
    from sceneparse.checkpoint import load_checkpoint

    f = load_checkpoint(front_path)
    cfg = {"model": {"arch": "refine", "backbone": f["config"]["model"]["backbone"],
                     "output_stride": f["config"]["model"]["output_stride"], "pretrained": None,
                     "head": {"front": str(front_path), "iterations": 1, "m": 3,
                              "lrn_channels": [8, 8, 8, 16, 16, 16], **head}}}
    model, _ = build_model_from_config(cfg["model"], len(f["meta"]["classes"]))
    return {"model": model.state_dict(), "config": {**f["config"], **cfg}, "meta": f["meta"]}


def test_output_stride_switch_reaches_every_part_of_the_cascade(tmp_path, camvid_root, tiny_run):
    import json

    from sceneparse.cli import main
    from sceneparse.models.factory import model_from_checkpoint

    ckpt = _cascade_ckpt(tiny_run / "final.pt")
    assert ckpt["config"]["model"]["output_stride"] == 16
    model, _ = model_from_checkpoint(ckpt, output_stride=8)
    assert model.front.output_stride == 8 and model.grn.net.output_stride == 8 and model.output_stride == 8
    torch.save(ckpt, tmp_path / "cascade.pt")
    out = tmp_path / "os8.json"
    assert main(["evaluate", "--checkpoint", str(tmp_path / "cascade.pt"), "--output-stride", "8",
                 f"data.root={camvid_root}", "data.max_val_samples=1", "--out", str(out), "--no-progress"]) == 0
    assert json.loads(out.read_text())["output_stride"] == 8


def test_lrn_stage_refuses_init_weights_without_a_grn(tmp_path, camvid_root, tiny_run):
    """Defect 6: an LRN stage started from a checkpoint that has no GRN weights silently ran a zero
    GRN; only the network being trained may be missing from model.init_weights."""
    from sceneparse.training.trainer import train

    front = tiny_run / "final.pt"
    lrn_only = _cascade_ckpt(front, grn=False)
    torch.save(lrn_only, tmp_path / "lrn_only.pt")
    cfg = _refine_cfg(camvid_root, tmp_path / "run", front, "lrn", f"model.init_weights={tmp_path / 'lrn_only.pt'}")
    with pytest.raises(ValueError, match=r"(?s)init_weights.*lrn\.\*.*missing: \['grn\."):
        train(cfg, progress=False)


@pytest.mark.parametrize("arch", ["refine", "pyramid_output"])
def test_upsample_logits_false_is_refused_where_it_would_be_ignored(tmp_path, camvid_root, tiny_run, arch):
    from sceneparse.config import load_config
    from sceneparse.training.trainer import train

    from ..conftest import TINY

    if arch == "refine":
        cfg = _refine_cfg(camvid_root, tmp_path / "r", tiny_run / "final.pt", "grn", "train.upsample_logits=false")
    else:
        base = [o for o in TINY if not o.startswith("model.head.")]
        cfg = load_config(None, base + [f"data.root={camvid_root}", f"work_dir={tmp_path / 'p'}",
                                        "model.arch=pyramid_output", "model.backbone=resnet18",
                                        "model.head.decoder_channels=16", "train.iters=1",
                                        "train.upsample_logits=false"])
    with pytest.raises(ValueError, match="upsample_logits"):
        train(cfg, progress=False)


def test_refine_stage_logs_the_front_next_to_the_refined_model(tmp_path, camvid_root, tiny_run):
    import csv

    from sceneparse.training.trainer import train

    train(_refine_cfg(camvid_root, tmp_path / "g", tiny_run / "final.pt", "grn", "train.log_interval=1"),
          progress=False)
    rows = list(csv.DictReader((tmp_path / "g/log.csv").open()))
    assert rows[0]["iter"] == "0" and rows[0]["val_mIoU_front"] != ""
    # the untrained GRN (zero residual) scores exactly what the front scores
    assert float(rows[0]["val_mIoU"]) == pytest.approx(float(rows[0]["val_mIoU_front"]))
    first = rows[1]
    assert first["loss_front"] != "" and float(first["loss"]) == pytest.approx(float(first["loss_front"]), rel=1e-4)


def test_psp_head_keeps_its_field_when_the_output_stride_changes():
    """Defect 7: the backbone's OS8 features equal its OS16 features at the OS16 sample positions, so the
    OS16-trained head must see the same field at OS8: its 3x3 bottleneck is dilated by 2."""
    torch.manual_seed(0)
    model = build_model("pspnet", "efficientnet_lite0", 3, output_stride=16, head_channels=16, aux_head=False,
                        bins=(1,), pretrained=None).eval()
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        f16 = model.backbone(x)[-1]
        l16 = model.decode_head(model.backbone(x))
        model.set_output_stride(8)
        f8 = model.backbone(x)[-1]
        l8 = model.decode_head(model.backbone(x))
    torch.testing.assert_close(f8[..., ::2, ::2], f16, atol=1e-4, rtol=1e-4)
    assert model.decode_head.bottleneck[0].dilation == (2, 2)
    assert not any(m.training for m in model.modules())  # the EfficientNet rebuild keeps eval mode
    model.train()
    model.backbone.blocks[0].requires_grad_(False)  # a frozen part stays frozen through a switch
    model.backbone.blocks[0].eval()
    model.set_output_stride(16)
    assert not any(p.requires_grad for p in model.backbone.blocks[0].parameters())
    assert not model.backbone.blocks[0].training and model.backbone.blocks[1].training
    model.eval()
    assert model.decode_head.bottleneck[0].dilation == (1, 1)
    model.set_output_stride(8)
    # with bins=(1,) the global pooling is the only other input: a dense-grid mean of the same map
    err = (l8[..., ::2, ::2] - l16).abs().max()
    model.decode_head.bottleneck[0].dilation, model.decode_head.bottleneck[0].padding = (1, 1), (1, 1)
    with torch.no_grad():
        err_undilated = (model.decode_head(model.backbone(x))[..., ::2, ::2] - l16).abs().max()
    assert err < 0.2 * err_undilated


def test_grn_reads_the_front_confidences_as_strongly_as_the_image():
    """Sec. 3.1: the confidences are scaled to the image's amplitude so that the GRN reads both. Their new
    input-convolution weights start at the scale of the (pretrained) RGB weights, so replacing the front's
    confidences by uniform ones moves the first layer's output by a sizeable fraction of what the image does."""
    torch.manual_seed(0)
    net = build_model("fcn", "resnet18", 5, output_stride=16, head_channels=8)
    rgb_weights = net.backbone.conv1.weight.detach().clone()
    rgb_rms = rgb_weights.pow(2).mean().sqrt().item()
    grn = GRN(net, 5).eval()
    w = grn.net.backbone.conv1.weight
    assert w.shape[1] == 3 + 5
    conf_rms = w[:, 3:].pow(2).mean().sqrt().item()
    assert conf_rms == pytest.approx(rgb_rms, rel=0.2)
    torch.testing.assert_close(w[:, :3], rgb_weights)  # the RGB weights are kept
    img = torch.rand(2, 3, 32, 40)
    rgb = (img - grn.mean) / grn.std
    one_hot = F.one_hot(torch.randint(0, 5, (2, 32, 40)), 5).permute(0, 3, 1, 2).float()
    uniform = torch.full_like(one_hot, 1 / 5)
    conv = lambda conf: F.conv2d(torch.cat([rgb, conf], 1), w, stride=2, padding=3)  # noqa: E731
    with torch.no_grad():
        by_confidences = (conv(one_hot) - conv(uniform)).norm()
        by_image = (conv(uniform) - F.conv2d(torch.cat([torch.zeros_like(rgb), uniform], 1), w, stride=2, padding=3)).norm()
    assert by_confidences > 0.3 * by_image


def test_grn_confidence_init_can_be_set():
    net = build_model("fcn", "resnet18", 4, output_stride=16, head_channels=8)
    w = GRN(net, 4, confidence_init_std=0.01).net.backbone.conv1.weight[:, 3:]
    assert w.std().item() == pytest.approx(0.01, rel=0.3)
    with pytest.raises(ValueError, match="confidence_init_std"):
        GRN(build_model("fcn", "resnet18", 4, output_stride=16, head_channels=8), 4, confidence_init_std=-1.0)
    with pytest.raises(ValueError, match="confidence_init_std"):
        GRN(build_model("fcn", "resnet18", 4, output_stride=16, head_channels=8), 4, confidence_init_std=float("inf"))


def test_merge_parallel_averages_a_grn_run_and_an_lrn_run_on_one_front(tmp_path, tiny_run):
    """scripts/merge_parallel.py: Table 2's parallel fusion from two stage runs; the GRN run supervised every
    unfolded iteration (supervise_steps='all', a training-only setting that parallel fusion refuses)."""
    import subprocess
    import sys

    from sceneparse.models.factory import model_from_checkpoint

    from ..conftest import REPO

    torch.manual_seed(0)
    g = _cascade_ckpt(tiny_run / "final.pt", grn=True, lrn=False, supervise_steps="all", train_stage="grn")
    g["model"] = {k: (v + 0.01 * torch.randn_like(v) if k.startswith("grn.") and v.is_floating_point() else v)
                  for k, v in g["model"].items()}  # a GRN that is not the identity
    l_ = _cascade_ckpt(tiny_run / "final.pt", grn=False, lrn=True, train_stage="lrn", m=5,
                       lrn_channels=[4, 4, 4, 8, 8, 8])  # the LRN's own shape, not the GRN run's (m 3, 8-16)
    torch.save(g, tmp_path / "grn.pt")
    torch.save(l_, tmp_path / "lrn.pt")
    subprocess.run([sys.executable, str(REPO / "scripts/merge_parallel.py"), str(tmp_path / "grn.pt"),
                    str(tmp_path / "lrn.pt"), str(tmp_path / "par.pt")], check=True, capture_output=True)
    models = {n: model_from_checkpoint(str(tmp_path / f"{n}.pt"))[0].eval() for n in ("grn", "lrn", "par")}
    assert models["par"].fusion == "parallel" and models["par"].lrn.m == 5
    # two runs on different fronts are refused (the merged file keeps one front)
    other = {**l_, "model": {k: (v + 1 if k.startswith("front.") and v.is_floating_point() else v)
                             for k, v in l_["model"].items()}}
    torch.save(other, tmp_path / "lrn_other_front.pt")
    r = subprocess.run([sys.executable, str(REPO / "scripts/merge_parallel.py"), str(tmp_path / "grn.pt"),
                        str(tmp_path / "lrn_other_front.pt"), str(tmp_path / "bad.pt")], capture_output=True, text=True)
    assert r.returncode != 0 and "front" in r.stderr and not (tmp_path / "bad.pt").exists()
    before = (tmp_path / "grn.pt").read_bytes()  # never written over an input
    r = subprocess.run([sys.executable, str(REPO / "scripts/merge_parallel.py"), str(tmp_path / "grn.pt"),
                        str(tmp_path / "lrn.pt"), str(tmp_path / "grn.pt")], capture_output=True, text=True)
    assert r.returncode != 0 and "one of the two inputs" in r.stderr and (tmp_path / "grn.pt").read_bytes() == before
    x = torch.randn(1, 3, 64, 80)
    with torch.no_grad():
        out = {n: m(x)["out"] for n, m in models.items()}
    assert not torch.allclose(out["grn"], out["lrn"])
    torch.testing.assert_close(out["par"], (out["grn"] + out["lrn"]) / 2)
