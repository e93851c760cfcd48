"""Issue 17: OHEM, class-weighted cross-entropy, Dice and Lovasz-softmax, against hand-computed values."""
import math

import pytest
import torch
import torch.nn.functional as F

from sceneparse.training.losses import SegLoss, class_weights, ohem_cross_entropy


def _logits_for(probs):
    """(1, 2, 1, n) logits whose class-0 softmax probabilities are ``probs``."""
    p = torch.tensor(probs, dtype=torch.float64)
    return torch.stack([torch.log(p), torch.log(1 - p)])[None, :, None, :].float()


def test_ohem_keeps_pixels_below_the_threshold():
    logits = _logits_for([0.9, 0.6, 0.3, 0.95])  # true class 0 everywhere
    target = torch.zeros(1, 1, 4, dtype=torch.long)
    loss = ohem_cross_entropy(logits, target, thresh=0.7, min_kept=1)
    assert loss.item() == pytest.approx((-math.log(0.6) - math.log(0.3)) / 2, rel=1e-5)


def test_ohem_keeps_at_least_min_kept_hardest_pixels_and_skips_ignored_ones():
    logits = _logits_for([0.9, 0.6, 0.3, 0.95, 0.1])
    target = torch.tensor([[[0, 0, 0, 0, 255]]])  # the hardest pixel is ignored
    loss = ohem_cross_entropy(logits, target, thresh=0.5, min_kept=3)  # 0.3, 0.6, 0.9 (below 0.95)
    assert loss.item() == pytest.approx(-(math.log(0.3) + math.log(0.6) + math.log(0.9)) / 3, rel=1e-5)
    everything = ohem_cross_entropy(logits, target, thresh=0.5, min_kept=10)  # more than labelled: plain CE
    assert everything.item() == pytest.approx(F.cross_entropy(logits, target, ignore_index=255).item(), rel=1e-6)


def test_class_weights_median_frequency_and_inverse_log():
    w = class_weights([10, 30, 60, 0])  # shares 0.1, 0.3, 0.6; median 0.3
    assert w.tolist() == pytest.approx([3.0, 1.0, 0.5, 0.0])
    w = class_weights([10, 30, 60], "inverse_log")
    assert w.tolist() == pytest.approx([1 / math.log(1.12), 1 / math.log(1.32), 1 / math.log(1.62)])
    with pytest.raises(ValueError, match="median_freq"):
        class_weights([1, 2], "sqrt")


def test_weighted_seg_loss_is_the_weighted_mean_of_pixel_ces():
    logits = _logits_for([0.8, 0.4])
    target = torch.tensor([[[0, 1]]])
    crit = SegLoss(aux_weight=0.0, class_weight=torch.tensor([1.0, 3.0]))
    loss, _ = crit({"out": logits}, target)
    expect = (1 * -math.log(0.8) + 3 * -math.log(0.6)) / (1 + 3)
    assert loss.item() == pytest.approx(expect, rel=1e-5)
    ohem = SegLoss(aux_weight=0.0, class_weight=torch.tensor([1.0, 3.0]), ohem_thresh=0.7, ohem_min_kept=1)
    assert ohem({"out": logits}, target)[0].item() == pytest.approx(-math.log(0.6), rel=1e-5)  # 0.8 is easy


def test_dice_loss_is_hand_computed_and_added_with_its_weight():
    from sceneparse.training.losses import dice_loss

    logits = _logits_for([0.8, 0.4, 0.5])  # p(class 0) per pixel; the third pixel is ignored
    target = torch.tensor([[[0, 1, 255]]])
    # class 0: inter 0.8, sums (0.8 + 0.4) + 1; class 1: inter 0.6, sums (0.2 + 0.6) + 1
    expect = 1 - ((2 * 0.8 + 1) / (1.2 + 1 + 1) + (2 * 0.6 + 1) / (0.8 + 1 + 1)) / 2
    assert dice_loss(logits, target).item() == pytest.approx(expect, rel=1e-5)
    crit = SegLoss(aux_weight=0.0, dice_weight=0.5)
    total, parts = crit({"out": logits}, target)
    assert parts["loss_dice"].item() == pytest.approx(expect, rel=1e-5)
    assert total.item() == pytest.approx(parts["loss"].item() + 0.5 * expect, rel=1e-5)


def test_lovasz_softmax_is_hand_computed_and_added_with_its_weight():
    from sceneparse.training.losses import lovasz_softmax, lovasz_softmax_sorted

    logits = _logits_for([0.6, 0.3, 0.5])  # p(class 0) per pixel; the third pixel is ignored
    target = torch.tensor([[[0, 1, 255]]])
    # class 0: errors (0.4 fg, 0.3 bg) sorted; Jaccard losses of the prefixes 1, 1 -> grad (1, 0): 0.4
    # class 1: errors (0.4 bg, 0.3 fg); prefixes 1 - 1/2, 1 -> grad (0.5, 0.5): 0.35
    expect = (0.4 + 0.35) / 2
    assert lovasz_softmax(logits, target).item() == pytest.approx(expect, rel=1e-5)
    assert lovasz_softmax_sorted(logits, target).item() == pytest.approx(expect, rel=1e-5)
    crit = SegLoss(aux_weight=0.0, lovasz_weight=0.5)
    total, parts = crit({"out": logits}, target)
    assert parts["loss_lovasz"].item() == pytest.approx(expect, rel=1e-5)
    assert total.item() == pytest.approx(parts["loss"].item() + 0.5 * expect, rel=1e-5)


def test_lovasz_softmax_on_hard_predictions_is_one_minus_the_miou_of_present_classes():
    from sceneparse.training.losses import lovasz_softmax, lovasz_softmax_sorted

    g = torch.Generator().manual_seed(0)
    target = torch.randint(0, 3, (2, 5, 7), generator=g)  # class 3 of 4 is absent
    target[0, 0, :3] = 255
    pred = torch.randint(0, 4, (2, 5, 7), generator=g)
    logits = F.one_hot(pred, 4).permute(0, 3, 1, 2).float() * 1e4  # softmax is exactly one-hot
    valid = target != 255
    ious = []
    for c in range(3):
        inter = ((pred == c) & (target == c) & valid).sum().item()
        union = (((pred == c) | (target == c)) & valid).sum().item()
        ious.append(inter / union)
    assert lovasz_softmax(logits, target).item() == pytest.approx(1 - sum(ious) / 3, rel=1e-5)
    assert lovasz_softmax_sorted(logits, target).item() == pytest.approx(1 - sum(ious) / 3, rel=1e-5)
    assert lovasz_softmax(logits, torch.full_like(target, 255)).item() == 0.0


def _lovasz_sorted_float64(logits, target, ignore_index=255):
    from sceneparse.training.losses import lovasz_softmax_sorted

    return lovasz_softmax_sorted(logits, target, ignore_index, dtype=torch.float64)


def _alg1_expected_over_tie_orders(logits, target):
    """Alg. 1's gradient averaged over every order of tied errors (float64; errors equal to 1e-9 tie): a tie
    group of n ground-truth and m other pixels, ranked after a ground-truth / b other pixels; one of its
    ground-truth pixels has j ~ U{0..m} of its other pixels before it, the (j+1)-th of its other pixels
    n (j+1) / (m+1) of its ground-truth ones on average."""
    x = logits.double().clone().requires_grad_()
    p = x.softmax(1).permute(0, 2, 3, 1).reshape(-1, x.shape[1])
    y = target.flatten()
    losses = []
    for c in range(x.shape[1]):
        fg = y == c
        e = torch.where(fg, 1 - p[:, c], p[:, c])
        g, a, b = int(fg.sum()), 0, 0
        steps = torch.zeros_like(e)
        r = (e.detach() * 1e9).round()
        for v in r.unique().flip(0):  # tie groups, largest error first
            grp = r == v
            n, m = int((grp & fg).sum()), int((grp & ~fg).sum())
            steps[grp & fg] = sum(1.0 / (g + b + j) for j in range(m + 1)) / (m + 1)
            steps[grp & ~fg] = sum((g - a - n * (j + 1) / (m + 1)) / ((g + b + j) * (g + b + j + 1))
                                   for j in range(m)) / max(m, 1)
            a, b = a + n, b + m
        losses.append(torch.dot(e, steps))
    torch.stack(losses).mean().backward()
    return x.grad


@pytest.mark.parametrize("case", ["random x0.3", "random x3", "random x30", "confident"])
def test_lovasz_softmax_matches_alg1_sorted_in_float64(case):
    from sceneparse.training.losses import lovasz_softmax

    g = torch.Generator().manual_seed(1)
    target = torch.randint(0, 4, (2, 24, 32), generator=g)  # class 4 absent
    target[(target == 2) & (torch.rand(target.shape, generator=g) < 0.9)] = 3  # a rare class
    if case == "confident":  # a trained model's margins: errors of 1e-6 to 5e-3 ("random x30" has errors near 1)
        logits = F.one_hot(target, 5).permute(0, 3, 1, 2).float() * 12 + torch.randn(2, 5, 24, 32, generator=g)
    else:
        logits = torch.randn(2, 5, 24, 32, generator=g) * float(case.split("x")[1])
    target[:, :3] = 255
    ref_in = logits.clone().requires_grad_()
    ref = _lovasz_sorted_float64(ref_in, target)
    ref.backward()
    ours_in = logits.clone().requires_grad_()
    ours = lovasz_softmax(ours_in, target)
    ours.backward()
    assert ours.dtype == torch.float32
    assert ours.item() == pytest.approx(ref.item(), abs=1e-5)
    rel = (ours_in.grad.double() - ref_in.grad).norm() / ref_in.grad.norm()
    assert rel < 2e-3


def test_lovasz_softmax_steps_of_tied_errors_are_near_their_mean_over_tie_orders():
    from sceneparse.training.losses import lovasz_softmax

    target = torch.zeros(1, 4, 10, dtype=torch.long)
    target[0, 2:] = 1  # 20 pixels of each class
    logits = torch.zeros(1, 2, 4, 10)
    # p(class 0) = 0.599 on class-0 pixels, 0.401 on the others: every error 0.401, ground truth and not alike
    logits[0, 0] = torch.where(target[0] == 0, 0.4, -0.4)
    logits[0, 0, 0, :3] = 0.9  # three surer pixels: a group of their own
    ref = _alg1_expected_over_tie_orders(logits, target)
    ours_in = logits.clone().requires_grad_()
    lovasz_softmax(ours_in, target).backward()
    assert (ours_in.grad.double() - ref).norm() / ref.norm() < 6e-3  # 2.2e-3; at each group's first rank: 1.8e-2


def test_lovasz_softmax_steps_are_alg1s_when_no_two_errors_share_a_bin():
    from sceneparse.training.losses import _lovasz_bin_keys, lovasz_softmax

    g = torch.Generator().manual_seed(2)
    logits = torch.randn(1, 3, 3, 4, generator=g)
    target = torch.randint(0, 3, (1, 3, 4), generator=g)
    p = logits.softmax(1).permute(0, 2, 3, 1).reshape(-1, 3)
    fg = F.one_hot(target.flatten(), 3).bool()
    keys, _ = _lovasz_bin_keys(torch.where(fg, 1 - p, p), torch.where(fg, p, 1 - p), 8, 2.0 ** -40)
    for c in range(3):  # the precondition: 12 distinct bins per class
        assert keys[:, c].unique().numel() == 12
    ref_in, ours_in = logits.clone().requires_grad_(), logits.clone().requires_grad_()
    ref, ours = _lovasz_sorted_float64(ref_in, target), lovasz_softmax(ours_in, target)
    ref.backward()
    ours.backward()
    assert ours.item() == pytest.approx(ref.item(), abs=1e-6)
    torch.testing.assert_close(ours_in.grad, ref_in.grad, atol=1e-6, rtol=1e-5)
