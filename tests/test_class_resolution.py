"""scripts/class_resolution.py: the share of a class's pixels a stride-s output can win by plurality."""
import numpy as np

from .conftest import load_script


def test_plurality_share_counts_a_thin_pole_by_cell():
    mod = load_script("class_resolution")
    y = np.zeros((8, 8), dtype=np.int64)  # class 0 background
    y[:, 1] = 2  # a 1-pixel-wide pole in column 1
    y[0, 0] = 255  # ignored
    y[4:, 4:6] = 1  # a 2-wide object in the lower right 4x4 cell
    at4 = mod.plurality_share(y, 4, 3)
    # stride 4: cells of 16 pixels; the pole has 4 of 16 in each left cell: never the plurality
    assert at4[2].tolist() == [8, 0]
    # the lower-right cell holds 8 of class 1 and 8 of class 0: a tie goes to the lower id (0)
    assert at4[1].tolist() == [8, 0]
    assert at4[0].tolist() == [47, 47]  # 64 - 8 pole - 8 object - 1 ignored, every one in a class-0 cell
    # stride 2: a 2x2 cell over columns 0-1 holds 2 pole pixels and 2 of class 0 (or 1 + the ignored one)
    at2 = mod.plurality_share(y, 2, 3)
    assert at2[2].tolist() == [8, 2]  # only the top cell (one pixel ignored) has the pole as plurality
    assert at2[1].tolist() == [8, 8]
