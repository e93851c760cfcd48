import math

import pytest
import torch
import torch.nn.functional as F

from sceneparse.models.pyramid.targets import fuse, pyramid_ground_truth, pyramid_loss, relabel

I = 255
LABEL = torch.tensor([[[0, 0, 1, 1],
                       [0, 0, 1, 1],
                       [2, 2, 2, I],
                       [2, 2, 2, 2]]])


def test_pyramid_ground_truth_hand_case():
    unity, semantic = pyramid_ground_truth(LABEL, (4, 2, 1))
    assert unity[0].tolist() == [[[0]]] and semantic[0].tolist() == [[[I]]]  # one mix-cell
    # stride 2: four unity cells; the ignore pixel is skipped inside the bottom-right cell
    assert unity[1].tolist() == [[[1, 1], [1, 1]]] and semantic[1].tolist() == [[[0, 1], [2, 2]]]
    assert unity[2][0, 2, 3] == I and semantic[2][0, 2, 3] == I  # an all-ignore cell is ignored
    assert (semantic[2][0][LABEL[0] != I] == LABEL[0][LABEL[0] != I]).all()
    with pytest.raises(ValueError, match="divisible"):
        pyramid_ground_truth(torch.zeros(1, 6, 8, dtype=torch.long), (4, 2))
    for bad in ((4, 3), (2, 4), (4, 4)):
        with pytest.raises(ValueError, match="powers of 2"):
            pyramid_ground_truth(LABEL, bad)


def test_relabel_across_a_factor_8_gap():
    """An L=2 pyramid of strides (32, 4) (Sec. 5.3): one coarse cell is the parent of 8 x 8 finest cells.
    Scaled down to strides (8, 1) on a 16 x 8 label: the top 8 x 8 block is one class (a unity-cell),
    the bottom one mixed."""
    label = torch.zeros(1, 16, 8, dtype=torch.long)
    label[0, 8:, 4:] = 1
    unity, semantic = pyramid_ground_truth(label, (8, 1))
    assert unity[0].tolist() == [[[1], [0]]] and semantic[0].tolist() == [[[0], [I]]]
    u, y = relabel(unity, semantic, "simple_fix")
    assert (y[1][0, :8] == I).all() and (u[1][0, :8] == I).all()  # all 64 children of the unity-cell done
    assert torch.equal(y[1][0, 8:], label[0, 8:])  # the mixed cell's children still train
    u, y = relabel(unity, semantic, "final", unity_prob=[torch.tensor([[[0.5], [0.99]]])], tau=0.9)
    assert torch.equal(y[1], semantic[1])  # the unity-cell was not predicted unity; 0.99 is a false positive


def test_two_level_pyramid_4_32_builds_trains_and_fuses():
    """Sec. 5.3's L=2 pyramid {4, 32}: the semantic head pools the stride-4 features by 8 for the coarse level."""
    from sceneparse import build_model

    torch.manual_seed(0)
    m = build_model("pyramid_output", "efficientnet_lite0", 3, pretrained=False, strides=(32, 4), decoder_channels=16,
                    unity_channels=8, semantic_channels=16)
    assert m.semantic_head.pool_factors == (8, 1) and m.unity_head.pool_factors == (8,)
    m.train()
    out = m(torch.randn(2, 3, 64, 96))
    assert [tuple(s.shape[-2:]) for s in out["semantic"]] == [(2, 3), (16, 24)]
    assert [tuple(u.shape[-2:]) for u in out["unity"]] == [(2, 3)]
    loss, parts = m.compute_loss(out, torch.randint(0, 3, (2, 64, 96)))
    loss.backward()
    assert torch.isfinite(loss) and {"sup_s32", "sup_s4", "sup_none"} <= set(parts)
    m.eval()
    m.return_pyramid = True
    with torch.no_grad():
        o = m(torch.randn(1, 3, 64, 96))
    assert o["out"].shape == (1, 3, 64, 96) and set(o["level"].unique().tolist()) <= {0, 1}


def test_relabel_policies():
    unity, semantic = pyramid_ground_truth(LABEL, (4, 2, 1))
    u, y = relabel(unity, semantic, "naive")
    assert all(torch.equal(a, b) for a, b in zip(y, semantic))
    u, y = relabel(unity, semantic, "simple_fix")
    assert torch.equal(y[1], semantic[1])  # the level-1 parent is a mix-cell: nothing done
    assert (y[2] == I).all() and (u[2] == I).all()  # every stride-1 cell is done by a stride-2 unity-cell
    probs = [torch.tensor([[[0.95]]]), torch.tensor([[[0.95, 0.5], [0.95, 0.95]]])]
    u, y = relabel(unity, semantic, "final", unity_prob=probs, tau=0.9)
    assert torch.equal(y[1], semantic[1])  # level-1 prediction 0.95 is a false positive (mix-cell)
    keep = y[2][0] != I
    assert keep.tolist() == [[False, False, True, True], [False, False, True, True], [False] * 4, [False] * 4]
    assert (y[2][0][keep] == 1).all()  # the top-right cell was not predicted unity: its children still train
    with pytest.raises(ValueError):
        relabel(unity, semantic, "final")
    with pytest.raises(ValueError):
        relabel(unity, semantic, "greedy")


def test_pyramid_loss_equals_manual_eq1():
    torch.manual_seed(0)
    unity, semantic = pyramid_ground_truth(LABEL, (4, 2, 1))
    logits = [torch.randn(1, 3, 1, 1), torch.randn(1, 3, 2, 2), torch.randn(1, 3, 4, 4)]
    probs = [torch.rand(1, 1, 1), torch.rand(1, 2, 2)]
    loss, parts = pyramid_loss(logits, probs, unity, semantic)
    ce = [F.cross_entropy(logits[1], semantic[1]), F.cross_entropy(logits[2], semantic[2], ignore_index=I)]
    ce0 = torch.tensor(0.0)  # level 1 has no labelled cell (a mix-cell)
    bce = [F.binary_cross_entropy(probs[0], unity[0].float()), F.binary_cross_entropy(probs[1], unity[1].float())]
    expect = (ce0 + ce[0] + ce[1]) / 3 + (bce[0] + bce[1]) / 2
    torch.testing.assert_close(loss, expect, rtol=1e-5, atol=1e-5)


def test_pyramid_loss_with_class_weights_weighs_each_levels_ce():
    """``class_weight`` (``train.class_weighting``) weighs every level's CE (a weighted mean over its cells),
    the unity BCE not; the fused finest-level kernel (no weights) is not used then."""
    torch.manual_seed(0)
    unity, semantic = pyramid_ground_truth(LABEL, (4, 2, 1))
    logits = [torch.randn(1, 3, 1, 1), torch.randn(1, 3, 2, 2), torch.randn(1, 3, 4, 4)]
    probs = [torch.rand(1, 1, 1), torch.rand(1, 2, 2)]
    w = torch.tensor([0.5, 3.0, 1.0])
    loss, parts = pyramid_loss(logits, probs, unity, semantic, class_weight=w, fused_upsample=True)
    ce = [F.cross_entropy(logits[1], semantic[1], weight=w), F.cross_entropy(logits[2], semantic[2], weight=w,
                                                                             ignore_index=I)]
    bce = [F.binary_cross_entropy(probs[0], unity[0].float()), F.binary_cross_entropy(probs[1], unity[1].float())]
    torch.testing.assert_close(loss, (ce[0] + ce[1]) / 3 + (bce[0] + bce[1]) / 2, rtol=1e-5, atol=1e-5)
    plain, _ = pyramid_loss(logits, probs, unity, semantic)
    assert not torch.allclose(loss, plain)


def test_pyramid_model_takes_class_weights_dice_and_lovasz_and_refuses_ohem():
    from sceneparse import build_model
    from sceneparse.training.losses import SegLoss, dice_loss, lovasz_softmax

    torch.manual_seed(0)
    m = build_model("pyramid_output", "efficientnet_lite0", 3, pretrained=False, decoder_channels=16,
                    unity_channels=8, semantic_channels=16).train()
    out = m(torch.randn(1, 3, 64, 64))
    y = torch.randint(0, 3, (1, 64, 64))
    y[0, :4] = 255
    plain, parts = m.loss(out, y, SegLoss())
    assert "loss_lovasz" not in parts and "loss_dice" not in parts
    weighted, _ = m.loss(out, y, SegLoss(class_weight=torch.tensor([1.0, 5.0, 0.2])))
    assert torch.isfinite(weighted) and not torch.allclose(plain, weighted)
    # Eq. 1 plus the weighted term of the model's main output (the fused scores, full size)
    for key, term in (("lovasz", lovasz_softmax), ("dice", dice_loss)):
        total, parts = m.loss(out, y, SegLoss(**{f"{key}_weight": 0.5}))
        expected = term(out["out"], y, 255)
        assert torch.allclose(parts[f"loss_{key}"], expected) and 0 < expected < 1
        assert torch.allclose(total, plain + 0.5 * expected)
        grad, = torch.autograd.grad(total - plain, m.semantic_head.proj[0].weight, retain_graph=True)
        assert grad.abs().sum() > 0  # the term trains the semantic head
    m.check_criterion(SegLoss(class_weight=torch.ones(3), lovasz_weight=1.0, dice_weight=1.0))
    with pytest.raises(ValueError, match="train.ohem"):
        m.check_criterion(SegLoss(ohem_thresh=0.7))


def test_fuse_takes_the_coarsest_predicted_unity_cell():
    c = 3
    sem = [torch.zeros(1, c, 1, 1), torch.zeros(1, c, 2, 2), torch.zeros(1, c, 4, 4)]
    sem[0][:, 0] = 1  # level 1 says class 0
    sem[1][:, 1] = 1  # level 2 says class 1
    sem[2][:, 2] = 1  # level 3 says class 2
    probs = [torch.tensor([[[0.5]]]), torch.tensor([[[0.95, 0.2], [0.2, 0.2]]])]
    fused, level = fuse(sem, probs, tau=0.9)
    assert fused.shape == (1, c, 4, 4)
    expect_level = torch.full((4, 4), 2)
    expect_level[:2, :2] = 1
    assert torch.equal(level[0], expect_level)
    assert torch.equal(fused.argmax(1)[0], torch.where(expect_level == 1, 1, 2))
    fused, level = fuse(sem, [torch.tensor([[[0.99]]]), probs[1]], tau=0.9)
    assert (level == 0).all() and (fused.argmax(1) == 0).all()  # the coarsest unity-cell wins
    with pytest.raises(ValueError):
        fuse(sem, probs[:1])


@pytest.mark.parametrize("backbone", ["resnet18", "efficientnet_lite0", "hrnet_w18_small"])
def test_pyramid_model_shapes_odd_sizes(backbone):
    from sceneparse import build_model

    torch.manual_seed(0)
    m = build_model("pyramid_output", backbone, 5, decoder_channels=32, unity_channels=8, semantic_channels=16)
    m.train()
    out = m(torch.randn(2, 3, 70, 100))  # resized to 64 x 96 inside, back to 70 x 100
    assert out["out"].shape == (2, 5, 70, 100)
    assert [tuple(s.shape[-2:]) for s in out["semantic"]] == [(2, 3), (4, 6), (8, 12), (16, 24)]
    assert [tuple(u.shape[-2:]) for u in out["unity"]] == [(2, 3), (4, 6), (8, 12)]
    assert all(((u >= 0) & (u <= 1)).all() for u in out["unity"])
    loss, parts = m.compute_loss(out, torch.randint(0, 5, (2, 70, 100)))
    assert torch.isfinite(loss) and {"loss", "loss_unity"} <= set(parts)
    m.eval()
    with torch.no_grad():
        assert set(m(torch.randn(1, 3, 33, 47))) == {"out"}
        m.return_pyramid = True
        o = m(torch.randn(1, 3, 64, 64))
    assert o["level"].shape == (1, 16, 16) and int(o["level"].max()) <= 3


def test_unity_head_min_pools_cells():
    from sceneparse.models.pyramid.model import UnityHead

    head = UnityHead(8, 4, pool_factors=(4, 2))
    u = head(torch.randn(1, 8, 8, 8))
    assert [tuple(t.shape) for t in u] == [(1, 2, 2), (1, 4, 4)]


@pytest.mark.parametrize("context", [True, False])
def test_semantic_head_levels(context):
    from sceneparse.models.pyramid.model import SemanticHead

    head = SemanticHead(16, 8, 3, num_levels=4, context=context)
    outs = head(torch.randn(2, 16, 16, 24))
    assert [tuple(o.shape) for o in outs] == [(2, 3, 2, 3), (2, 3, 4, 6), (2, 3, 8, 12), (2, 3, 16, 24)]
    assert hasattr(head, "ca") == context


def test_pyramid_trains_on_camvid_with_each_policy(tmp_path, camvid_root):
    from sceneparse.config import load_config
    from sceneparse.training.trainer import train

    from ..conftest import TINY

    base = [o for o in TINY if not o.startswith("model.head.")]
    for policy in ("naive", "simple_fix", "final"):
        work = tmp_path / policy
        cfg = load_config(None, base + [
            f"data.root={camvid_root}", f"work_dir={work}", "model.arch=pyramid_output", "model.backbone=resnet18",
            "model.head.decoder_channels=16", "model.head.unity_channels=8", "model.head.semantic_channels=16",
            f"model.head.relabel_policy={policy}", "train.iters=2", "data.crop_size=[96,128]"])
        train(cfg, progress=False)
    finals = {p: torch.load(tmp_path / p / "final.pt", weights_only=True)["model"] for p in ("naive", "simple_fix", "final")}
    # the policy reaches the loss: same seed and batches, different relabelled targets, different weights
    def differ(a, b):
        return any(not torch.equal(finals[a][k], finals[b][k]) for k in finals[a])

    assert differ("naive", "simple_fix")
    # "final" relabels only cells whose predicted unity reaches tau (0.9): an untrained unity head (about 0.5)
    # predicts none, so its first steps are exactly the naive ones (Table 7's policy, not a no-op bug)
    assert not differ("naive", "final")


def test_analyze_command_on_a_tiny_pyramid_run(tmp_path, camvid_root):
    import json

    from sceneparse.cli import main
    from sceneparse.config import load_config
    from sceneparse.training.trainer import train

    from ..conftest import TINY

    base = [o for o in TINY if not o.startswith("model.head.")]
    work = tmp_path / "pyr"
    train(load_config(None, base + [f"data.root={camvid_root}", f"work_dir={work}", "model.arch=pyramid_output",
                                    "model.backbone=resnet18", "model.head.decoder_channels=16",
                                    "model.head.semantic_channels=16", "model.head.strides=[32,16,8,4]",
                                    "train.iters=2", "model.head.tau=0.5"]), progress=False)
    out = tmp_path / "a.json"
    assert main(["analyze", "--checkpoint", str(work / "final.pt"), f"data.root={camvid_root}",
                 "data.max_val_samples=2", "--out", str(out), "--no-progress"]) == 0
    r = json.loads(out.read_text())
    assert len(r["mIoU"]) == 4 and all(len(row) == 4 for row in r["mIoU"])
    assert sum(r["pixel_share"]) == pytest.approx(100.0)
    assert len(r["level_mIoU"]) == 4
    ev = tmp_path / "e.json"  # the fused prediction analyze scores is the model's output, as evaluate scores it
    assert main(["evaluate", "--checkpoint", str(work / "final.pt"), f"data.root={camvid_root}",
                 "data.max_val_samples=2", "--out", str(ev), "--no-progress"]) == 0
    assert r["fused_mIoU"] == pytest.approx(json.loads(ev.read_text())["mIoU"], abs=1e-6)
    assert (tmp_path / "a.png").stat().st_size > 1000  # the Table 9 heatmap


def test_fuse_equals_finest_level_when_no_cell_is_unity():
    torch.manual_seed(0)
    sem = [torch.randn(1, 3, 1, 1), torch.randn(1, 3, 2, 2), torch.randn(1, 3, 4, 4)]
    fused, level = fuse(sem, [torch.full((1, 1, 1), 0.2), torch.full((1, 2, 2), 0.89)], tau=0.9)
    assert torch.equal(fused, sem[-1]) and (level == 2).all()


def test_loss_is_finite_with_all_ignore_levels():
    unity, semantic = pyramid_ground_truth(torch.full((1, 4, 4), I), (4, 2, 1))
    assert all((u == I).all() for u in unity)
    logits = [torch.randn(1, 3, 1, 1, requires_grad=True), torch.randn(1, 3, 2, 2), torch.randn(1, 3, 4, 4)]
    loss, _ = pyramid_loss(logits, [torch.rand(1, 1, 1), torch.rand(1, 2, 2)], unity, semantic)
    assert torch.isfinite(loss) and loss.item() == 0.0
    loss.backward()


# issue 14, defect 4: the finest level (stride 4) is supervised on every labelled pixel
# an 8x8 map, strides (8, 4): the top-left 4x4 cell is mixed (a one-pixel "pole" of class 3 in class 0),
# the top-right cell is unity (class 1), the bottom half is unity class 2 (an 8x4 band of two cells)
FINE = torch.zeros(1, 8, 8, dtype=torch.long)
FINE[0, :4, 4:] = 1
FINE[0, 4:, :] = 2
FINE[0, 1, 1] = 3  # the pole pixel
FINE[0, 7, 7] = I


def test_finest_level_supervises_every_labelled_pixel_of_mixed_cells():
    from sceneparse.models.pyramid.targets import finest_pixel_target, supervised_share

    unity, semantic = pyramid_ground_truth(FINE, (8, 4))
    assert semantic[1][0].tolist() == [[I, 1], [2, 2]]  # the mixed cell has no cell-level class
    for policy in ("naive", "simple_fix"):
        u, y = relabel(unity, semantic, policy)
        target = finest_pixel_target(FINE, unity, u, 4)
        assert target.shape == FINE.shape
        assert torch.equal(target[0, :4, :4], FINE[0, :4, :4])  # every pixel of the mixed cell, pole included
        assert target[0, 1, 1] == 3
        share = supervised_share(FINE, y, (8, 4), target)
        assert share["sup_none"] == 0.0 and share["sup_s4"] == 100.0  # level 1 (8x8) is one mixed cell
    # the old stride-4 cell supervision left the mixed cell (16 of 63 labelled pixels) unsupervised
    old = semantic[1].repeat_interleave(4, -2).repeat_interleave(4, -1)
    assert supervised_share(FINE, semantic, (8, 4), old)["sup_none"] == pytest.approx(100 * 16 / 63)


def test_finest_target_respects_done_by_coarser():
    from sceneparse.models.pyramid.targets import finest_pixel_target

    label = torch.full((1, 8, 8), 2, dtype=torch.long)  # level 1 (stride 8) is one unity-cell
    label[0, 0, 0] = I
    unity, semantic = pyramid_ground_truth(label, (8, 4))
    u, _ = relabel(unity, semantic, "simple_fix")
    assert (finest_pixel_target(label, unity, u, 4) == I).all()  # done by the coarser level
    u, _ = relabel(unity, semantic, "naive")
    assert torch.equal(finest_pixel_target(label, unity, u, 4), label)


def _two_level_model(num_classes: int, policy: str):
    """A two-level (strides 8, 4) pyramidal-output model with tiny heads, seeded."""
    from sceneparse import build_model

    torch.manual_seed(0)
    return build_model("pyramid_output", "resnet18", num_classes, strides=(8, 4), decoder_channels=8,
                       unity_channels=4, semantic_channels=8, relabel_policy=policy, context=False)


def test_pyramid_model_loss_trains_the_pixels_of_mixed_cells():
    """compute_loss equals Eq. 1 with the finest level's CE taken on the upsampled logits against
    every labelled pixel; the old cell-level supervision differs (and ignores the pole pixel)."""
    model = _two_level_model(4, "naive")
    sem = [torch.randn(1, 4, 1, 1), torch.randn(1, 4, 2, 2)]
    uni = [torch.rand(1, 1, 1)]
    loss, parts = model.compute_loss({"semantic": sem, "unity": uni}, FINE)
    up = F.interpolate(sem[1], size=(8, 8), mode="bilinear", align_corners=False)
    unity, _ = pyramid_ground_truth(FINE, (8, 4))
    expect = (sem[0].sum() * 0 + F.cross_entropy(up, FINE, ignore_index=I)) / 2 \
        + F.binary_cross_entropy(uni[0], unity[0].float())
    torch.testing.assert_close(loss, expect, rtol=1e-5, atol=1e-5)
    assert float(parts["sup_none"]) == 0.0
    model.finest_per_pixel = False
    _, old = model.compute_loss({"semantic": sem, "unity": uni}, FINE)
    assert float(old["sup_none"]) > 25.0


def test_finest_target_places_a_partial_done_mask_on_the_right_pixels():
    """A 16x8 map, strides (8, 4): the top 8x8 cell is one unity-cell (class 1, done by the coarse level
    under simple_fix), the bottom one is mixed. Only the top half of the finest target is ignored; the
    bottom keeps every pixel (a tiled instead of interleaved mask, or a transposed one, would not)."""
    from sceneparse.models.pyramid.targets import finest_pixel_target

    label = torch.full((1, 16, 8), 1, dtype=torch.long)
    label[0, 8:, :] = 2
    label[0, 13, 2] = 0  # the bottom cell is mixed
    unity, semantic = pyramid_ground_truth(label, (8, 4))
    u, _ = relabel(unity, semantic, "simple_fix")
    target = finest_pixel_target(label, unity, u, 4)
    assert (target[0, :8] == I).all() and torch.equal(target[0, 8:], label[0, 8:])
    # "final": the top cell is done only when its predicted unity probability reaches tau
    u, _ = relabel(unity, semantic, "final", unity_prob=[torch.tensor([[[0.95], [0.99]]])], tau=0.9)
    assert (finest_pixel_target(label, unity, u, 4)[0, :8] == I).all()
    u, _ = relabel(unity, semantic, "final", unity_prob=[torch.tensor([[[0.5], [0.99]]])], tau=0.9)
    assert torch.equal(finest_pixel_target(label, unity, u, 4), label)


def test_pyramid_model_loss_ignores_pixels_done_by_coarser():
    from sceneparse import build_model

    label = torch.full((1, 16, 8), 1, dtype=torch.long)
    label[0, 8:, :] = 2
    label[0, 13, 2] = 0
    model = _two_level_model(3, "simple_fix")
    sem = [torch.randn(1, 3, 2, 1), torch.randn(1, 3, 4, 2)]
    uni = [torch.rand(1, 2, 1)]
    loss, parts = model.compute_loss({"semantic": sem, "unity": uni}, label)
    unity, semantic = pyramid_ground_truth(label, (8, 4))
    up = F.interpolate(sem[1], size=(16, 8), mode="bilinear", align_corners=False)
    finest = label.clone()
    finest[0, :8] = I  # done by the coarse unity-cell
    expect = (F.cross_entropy(sem[0], semantic[0], ignore_index=I) + F.cross_entropy(up, finest, ignore_index=I)) / 2 \
        + F.binary_cross_entropy(uni[0], unity[0].float())
    torch.testing.assert_close(loss, expect, rtol=1e-5, atol=1e-5)
    assert float(parts["sup_s8"]) == pytest.approx(100 * 64 / 128) and float(parts["sup_none"]) == 0.0


def test_context_aggregation_attention_in_bf16_is_close_and_float32_is_unchanged():
    from sceneparse.models.pyramid.model import ContextAggregation

    torch.manual_seed(0)
    ca = ContextAggregation(16).eval()
    x, theta = torch.randn(2, 16, 6, 8), torch.randn(2, 16, 110)
    with torch.no_grad():
        q = ca.query(x).flatten(2).transpose(1, 2)
        attn = torch.softmax(q @ ca.key(theta) * ca.scale, dim=-1)  # Eqs. 8-9 written out
        att = (attn @ ca.value(theta).transpose(1, 2)).transpose(1, 2).reshape(2, 16, 6, 8)
        expect = ca.agg(torch.cat([att, x], dim=1))
        assert torch.equal(ca(x, theta), expect)
        ca.matmul_dtype = torch.bfloat16
        got = ca(x, theta)
    assert got.dtype == torch.float32 and (got - expect).abs().max() < 2e-2 * expect.abs().max()


@pytest.mark.parametrize("h,w", [(88, 120), (90, 120), (23, 30), (11, 15), (5, 7)])
def test_training_pools_equal_the_plain_pools_and_their_gradients(h, w):
    # while training, the token pools run as two matrix products and the level pools read each other; the
    # values and the input gradient equal adaptive / plain average pooling (eval keeps the plain ops)
    from sceneparse.models.heads import adaptive_pool2d
    from sceneparse.models.pyramid.model import PyramidPoolTokens, _avg_pools

    torch.manual_seed(0)
    x = torch.randn(2, 5, h, w).contiguous(memory_format=torch.channels_last).requires_grad_()
    pool = PyramidPoolTokens((1, 3, 6, 8))
    got = pool(x)
    ref = torch.cat([adaptive_pool2d(x, b).flatten(2) for b in (1, 3, 6, 8)], dim=2)
    assert got.shape == ref.shape == (2, 5, 110) and torch.allclose(got, ref, atol=1e-5)
    g = torch.randn_like(ref)
    (gx,) = torch.autograd.grad((got * g).sum(), x)
    (gref,) = torch.autograd.grad((ref * g).sum(), x)
    assert torch.allclose(gx, gref, atol=1e-6)
    with torch.no_grad():
        assert torch.equal(pool(x), torch.cat([adaptive_pool2d(x, b).flatten(2) for b in (1, 3, 6, 8)], dim=2))
    if min(h, w) < 8:
        return  # a level of 8 x 8 cells needs 8 rows (plain avg_pool2d refuses it too)
    levels = _avg_pools(x, (8, 4, 2, 1))
    plain = [F.avg_pool2d(x, k) for k in (8, 4, 2)] + [x]
    assert all(a.shape == b.shape and torch.allclose(a, b, atol=1e-6) for a, b in zip(levels, plain))
    (gl,) = torch.autograd.grad(sum((lv * (i + 1)).sum() for i, lv in enumerate(levels)), x)
    (gp,) = torch.autograd.grad(sum((lv * (i + 1)).sum() for i, lv in enumerate(plain)), x)
    assert torch.allclose(gl, gp, atol=1e-6)


def test_pyramid_loss_with_the_fused_finest_upsampling_equals_the_plain_one():
    from sceneparse.kernels import train_ops
    from sceneparse.models.pyramid.targets import finest_pixel_target

    if train_ops.load() is None:
        pytest.skip(f"native training kernels unavailable: {train_ops.error()}")
    torch.manual_seed(0)
    strides = (32, 16, 8, 4)
    label = torch.randint(0, 5, (2, 64, 96))
    label[:, :3] = 255
    unity0, sem0 = pyramid_ground_truth(label, strides)
    sem0[-1] = finest_pixel_target(label, unity0, unity0, strides[-1])
    semantic = [torch.randn(2, 5, 64 // s, 96 // s, requires_grad=True) for s in strides]
    unity = [torch.rand(2, 64 // s, 96 // s) for s in strides[:-1]]
    plain, _ = pyramid_loss(semantic, unity, unity0, sem0)
    fused, _ = pyramid_loss(semantic, unity, unity0, sem0, fused_upsample=True)
    assert torch.allclose(plain, fused, atol=1e-5)
    gp = torch.autograd.grad(plain, semantic[-1])[0]
    gf = torch.autograd.grad(fused, semantic[-1])[0]
    assert torch.allclose(gp, gf, atol=1e-6)


@pytest.mark.parametrize("output", ["fuse", "finest"])
def test_low_res_eval_logits_give_the_engine_the_same_labels(output):
    """With ``set_eval_logit_upsampling(False)`` the eval ``"out"`` stays at stride 4 of the (resized) input and the
    engine's fused upsample + argmax gives the labels of the full-size output; train mode and the pyramid
    outputs are unchanged."""
    from sceneparse import build_model
    from sceneparse.inference.engine import InferenceConfig, infer_probs, predict_labels

    torch.manual_seed(0)
    m = build_model("pyramid_output", "efficientnet_lite0", 5, pretrained=False, decoder_channels=16,
                    unity_channels=8, semantic_channels=16, output=output).eval()
    x = torch.randn(1, 3, 70, 100)  # resized to 64 x 96 inside
    with torch.no_grad():
        full = m(x)["out"]
        assert m.set_eval_logit_upsampling(False) is True
        low = m(x)["out"]
        assert low.shape == (1, 5, 16, 24)
        torch.testing.assert_close(F.interpolate(low, size=(70, 100), mode="bilinear", align_corners=False), full)
        cfg = InferenceConfig(channels_last=False)
        assert torch.equal(predict_labels(m, x, cfg), full.argmax(1))
        torch.testing.assert_close(infer_probs(m, x, cfg), full.softmax(1))
        m.return_pyramid = True
        assert m(x)["out"].shape == (1, 5, 70, 100)  # the analysis reads full-size scores
        m.return_pyramid = False
        m.set_eval_logit_upsampling(True)
        torch.testing.assert_close(m(x)["out"], full)
        m.set_eval_logit_upsampling(False)
        m.train()  # (updates the BN statistics: last)
        assert m(x)["out"].shape == (1, 5, 70, 100)


def test_final_relabelling_counts_true_positives_at_relabel_tau_and_fuses_at_tau():
    """``relabel_tau`` sets the training threshold of "final" (a true-positive unity-cell), ``tau`` the fuse
    step's: the top 8x8 unity-cell predicted at 0.7 is done by the coarse level with relabel_tau 0.5, not with
    the default (relabel_tau = tau = 0.9); inference keeps tau."""
    from sceneparse import build_model

    label = torch.full((1, 16, 8), 1, dtype=torch.long)
    label[0, 8:, :] = 2
    label[0, 13, 2] = 0  # the bottom cell is mixed
    sem = [torch.randn(1, 3, 2, 1), torch.randn(1, 3, 4, 2)]
    uni = [torch.tensor([[[0.7], [0.2]]])]
    unity, semantic = pyramid_ground_truth(label, (8, 4))
    up = F.interpolate(sem[1], size=(16, 8), mode="bilinear", align_corners=False)
    coarse_ce = F.cross_entropy(sem[0], semantic[0], ignore_index=I)
    bce = F.binary_cross_entropy(uni[0], unity[0].float())
    finest_done = label.clone()
    finest_done[0, :8] = I
    for relabel_tau, finest in ((None, label), (0.5, finest_done), (0.75, label)):
        torch.manual_seed(0)
        model = build_model("pyramid_output", "resnet18", 3, strides=(8, 4), decoder_channels=8, unity_channels=4,
                            semantic_channels=8, relabel_policy="final", context=False, relabel_tau=relabel_tau)
        assert model.tau == 0.9
        loss, _ = model.compute_loss({"semantic": sem, "unity": uni}, label)
        expect = (coarse_ce + F.cross_entropy(up, finest, ignore_index=I)) / 2 + bce
        torch.testing.assert_close(loss, expect, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="relabel_tau"):
        build_model("pyramid_output", "resnet18", 3, strides=(8, 4), relabel_tau=0.0)
    for policy, strides in (("simple_fix", (8, 4)), ("final", (4,))):  # no 'final' pyramid: nothing to set
        with pytest.raises(ValueError, match="has no use for it"):
            build_model("pyramid_output", "resnet18", 3, strides=strides, relabel_policy=policy, relabel_tau=0.5)

    class Unity07(torch.nn.Module):  # every coarse cell predicted unity at 0.7
        def forward(self, x):
            return [torch.full((x.shape[0], x.shape[-2] // 2, x.shape[-1] // 2), 0.7)]

    model.unity_head = Unity07()  # (relabel_tau 0.75 from the loop; 0.5 would count the cells in training)
    with torch.no_grad():  # the fuse step keeps tau 0.9: no cell is taken by the coarse level
        assert (model.eval().forward_pyramid(torch.randn(1, 3, 32, 32))["level"] == 1).all()
        model.tau = 0.6
        assert (model.forward_pyramid(torch.randn(1, 3, 32, 32))["level"] == 0).all()


def _ca_attention_entropy(model, x):
    """Mean entropy of each CA module's attention over the context tokens (train mode forward of ``x``)."""
    ents = []

    def hook(mod, inp, out):
        feat, theta = inp
        logits = (mod.query(feat).flatten(2).transpose(1, 2) @ mod.key(theta)) * mod.scale
        attn = logits.softmax(-1)
        ents.append(float(-(attn.clamp_min(1e-12).log() * attn).sum(-1).mean()))

    hooks = [ca.register_forward_hook(hook) for ca in model.semantic_head.ca]
    try:
        with torch.no_grad():
            model.train()(x)
    finally:
        for h in hooks:
            h.remove()
    return ents


def test_context_attention_starts_selective_with_normalised_query_and_key():
    """The CA attention (Eq. 8) with Conv1x1-BN-ReLU query / key / value transforms (default) starts away
    from uniform over its 110 tokens; with bare Conv1x1 transforms (the earlier layout) it starts uniform
    (entropy within 0.01 of log 110), which a 20-epoch CamVid run never left."""
    from sceneparse import build_model

    x = torch.randn(2, 3, 64, 96, generator=torch.Generator().manual_seed(0))
    uniform = math.log(1 + 9 + 36 + 64)
    entropies = {}
    for transform in ("conv_bn_relu", "conv"):
        torch.manual_seed(0)
        model = build_model("pyramid_output", "efficientnet_lite0", 3, pretrained=False, decoder_channels=32,
                            unity_channels=8, semantic_channels=64, context_transform=transform)
        ca = model.semantic_head.ca[0]
        assert isinstance(ca.query, torch.nn.Conv2d) == (transform == "conv")
        entropies[transform] = _ca_attention_entropy(model, x)
    assert max(entropies["conv_bn_relu"]) < uniform - 0.05, entropies
    assert min(entropies["conv"]) > uniform - 0.01, entropies
    with pytest.raises(ValueError, match="context_transform"):
        build_model("pyramid_output", "resnet18", 3, strides=(8, 4), context=False, context_transform="bn")


def test_a_checkpoint_with_the_earlier_context_layout_loads_as_trained():
    """A checkpoint whose config predates ``context_transform`` and whose CA transforms are bare convs is
    rebuilt with them (same outputs); one of the current layout is rebuilt with BN-ReLU transforms."""
    from sceneparse import build_model
    from sceneparse.models.factory import model_from_checkpoint

    head = {"strides": [8, 4], "decoder_channels": 8, "unity_channels": 4, "semantic_channels": 8}
    x = torch.randn(1, 3, 32, 48, generator=torch.Generator().manual_seed(1))
    for transform in ("conv", "conv_bn_relu"):
        torch.manual_seed(0)
        model = build_model("pyramid_output", "resnet18", 3, pretrained=False, context_transform=transform,
                            **head).eval()
        ckpt = {"config": {"model": {"arch": "pyramid_output", "backbone": "resnet18", "output_stride": 32,
                                     "head": dict(head)}},
                "meta": {"classes": ["a", "b", "c"]}, "num_classes": 3, "model": model.state_dict()}
        rebuilt, _ = model_from_checkpoint(ckpt)
        assert isinstance(rebuilt.semantic_head.ca[0].query, torch.nn.Conv2d) == (transform == "conv")
        with torch.no_grad():
            torch.testing.assert_close(rebuilt(x)["out"], model(x)["out"])



def test_loading_earlier_context_weights_into_the_current_layout_names_the_option():
    from sceneparse import build_model
    from sceneparse.models.factory import load_model_weights

    head = {"strides": (8, 4), "decoder_channels": 8, "unity_channels": 4, "semantic_channels": 8}
    old = build_model("pyramid_output", "resnet18", 3, pretrained=False, context_transform="conv", **head)
    new = build_model("pyramid_output", "resnet18", 3, pretrained=False, **head)
    with pytest.raises(ValueError, match="model.head.context_transform=conv"):
        load_model_weights(new, old.state_dict())
