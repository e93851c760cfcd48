"""scripts/front_errors.py: where a model's errors lie relative to label boundaries, hand-computed maps."""
import pytest
import torch

from .conftest import load_script


@pytest.fixture(scope="module")
def fe():
    return load_script("front_errors")


def _halves():
    y = torch.zeros(5, 10, dtype=torch.long)
    y[:, 5:] = 1  # a vertical boundary between columns 4 and 5
    return y


def test_bands_measure_the_distance_to_the_nearest_other_label(fe):
    b = fe.boundary_distance_bands(_halves()[None], radii=(2, 4, 8, 16))[0]
    # a 5-wide window (r=2) reaches the other half from columns 3..6, a 9-wide one from 1..8, r=8 the rest
    assert b[0].tolist() == [2, 1, 1, 0, 0, 0, 0, 1, 1, 2]
    assert (b == b[0]).all()  # every row alike
    y = torch.zeros(1, 9, 9, dtype=torch.long)
    y[0, 4, 4] = 255  # void counts as another label
    b = fe.boundary_distance_bands(y, radii=(2, 4))[0]
    assert b[4, 2].item() == 0 and b[4, 1].item() == 1 and b[0, 0].item() == 1
    assert fe.boundary_distance_bands(torch.zeros(1, 4, 4, dtype=torch.long), radii=(2,)).eq(1).all()


def test_analyse_splits_errors_and_fixes_each_kind_by_oracle(fe):
    y = _halves()
    p = y.clone()
    p[0, 4] = 1  # an error at the boundary (band 0)
    p[0, 0] = 1  # an error inside the left region (band 2)
    p[1, 0] = 1
    y[4, 9] = 255  # ignored, and never counted as an error
    p[4, 9] = 0
    r = fe.analyse([p], [y], k=2, band_px=2, radii=(2, 4, 8, 16))
    assert r["wrong_share_by_boundary_distance"] == {"<= 2 px": 33.3, "<= 4 px": 0.0, "<= 8 px": 66.7,
                                                     "<= 16 px": 0.0, "> 16 px": 0.0}
    # class 0: 25 pixels, 3 predicted 1; class 1: 24 labelled pixels, all right
    assert r["mIoU"] == pytest.approx(100 * (22 / 25 + 24 / 27) / 2, abs=0.01)
    assert r["mIoU_if_errors_inside_regions_fixed"] == pytest.approx(100 * (24 / 25 + 24 / 25) / 2, abs=0.01)
    assert r["mIoU_if_errors_near_boundaries_fixed"] == pytest.approx(100 * (23 / 25 + 24 / 26) / 2, abs=0.01)
    with pytest.raises(ValueError, match="band 3"):
        fe.analyse([p], [y], k=2, band_px=3)
