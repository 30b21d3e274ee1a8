"""`labelled_grid`: nearest upscaling, label strips, and clear errors."""

import numpy as np
import pytest
from PIL import Image

from flextok_hf.visualization import labelled_grid


def _cell(value: int) -> Image.Image:
    array = np.zeros((8, 8, 3), dtype=np.uint8)
    array[2:6, 2:6] = value
    return Image.fromarray(array)


def test_cells_are_upscaled_with_nearest_and_labels_take_their_own_strips():
    rows = [[_cell(255), _cell(128)], [_cell(64), _cell(32)]]
    plain = labelled_grid(rows, scale=3, padding=2)
    assert plain.size == (2 + 2 * (24 + 2), 2 + 2 * (24 + 2))
    first = np.asarray(plain)[2 : 2 + 24, 2 : 2 + 24]
    assert set(np.unique(first)) == {0, 255}  # nearest: no blurred values
    assert np.array_equal(first[6:18, 6:18], np.full((12, 12, 3), 255))
    labelled = labelled_grid(rows, row_labels=["a row", "b"], column_labels=["1 token", "2 tokens"], scale=3)
    assert labelled.size[0] > plain.size[0] and labelled.size[1] > plain.size[1]
    top = np.asarray(labelled.convert("L"))[:10]
    assert top.min() < 128  # text drawn in the column-label strip


def test_errors_name_the_parameter():
    with pytest.raises(ValueError, match="rows"):
        labelled_grid([])
    with pytest.raises(ValueError, match="every row"):
        labelled_grid([[_cell(1)], [_cell(1), _cell(2)]])
    with pytest.raises(ValueError, match="row_labels"):
        labelled_grid([[_cell(1)]], row_labels=["a", "b"])
    with pytest.raises(ValueError, match="scale"):
        labelled_grid([[_cell(1)]], scale=0)
