"""``LabelToIndex(accept_class_indices=True)``: MONAI Label's saved class-index labels, and nothing wrong, accepted."""

from __future__ import annotations

import pytest
import torch

from monai_ext.transforms import LabelToIndex

NLCEN = [[0, 250], [150, 200]]


def _mask(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32).reshape(1, 1, -1)


def test_class_indices_taken_as_they_are() -> None:
    out = LabelToIndex(NLCEN, accept_class_indices=True)(_mask(0, 1, 1, 0), name="saved.png")
    assert out.flatten().tolist() == [0, 1, 1, 0]


def test_raw_values_still_mapped() -> None:
    out = LabelToIndex(NLCEN, accept_class_indices=True)(_mask(0, 150, 200, 250), name="raw.png")
    assert out.flatten().tolist() == [0, 1, 1, 0]


@pytest.mark.parametrize("values", [(0, 1, 150), (0, 2), (0, 7)])
def test_mixed_or_unknown_values_refused(values: tuple[float, ...]) -> None:
    with pytest.raises(ValueError, match="not in label_values"):
        LabelToIndex(NLCEN, accept_class_indices=True)(_mask(*values), name="bad.png")


def test_off_by_default() -> None:
    with pytest.raises(ValueError, match="not in label_values"):
        LabelToIndex(NLCEN)(_mask(0, 1), name="saved.png")


def test_ambiguous_values_refused() -> None:
    """Values that are class indices and raw values of other classes cannot be read either way."""
    with pytest.raises(ValueError, match="cannot be read either way"):
        LabelToIndex([[1], [0]], accept_class_indices=True)(_mask(0, 1), name="swap.png")


def test_threshold_mode_reads_intensities_only() -> None:
    """A threshold is explicit about what the masks hold: 0/1 masks under threshold 128 stay empty (the label check
    before training then stops the run), they are not taken as class indices."""
    converter = LabelToIndex(threshold=128, accept_class_indices=True)
    assert converter(_mask(0, 1), name="saved.png").flatten().tolist() == [0, 0]
    assert converter(_mask(0, 255), name="raw.png").flatten().tolist() == [0, 1]
