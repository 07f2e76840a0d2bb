"""``scripts/paired_differences.py``: attacked minus clean per attack and budget, paired by image name (rows written in
another order), against values computed by hand; an attacked image without a clean score is refused by name."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest

FIELDS = ["attack", "epsilon", "image", "dice"]


def _write(path: Path, rows: list[tuple[str, str, str, float]]) -> Path:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(FIELDS)
        writer.writerows(rows)
    return path


def test_attacked_minus_clean_by_hand(tmp_path: Path, load_script: Callable[[str], ModuleType]) -> None:
    script = load_script("paired_differences")
    rows = [
        ("PGD-5", "0", "b.nii.gz", 0.8), ("PGD-5", "0", "a.nii.gz", 0.9), ("PGD-5", "0", "c.nii.gz", 0.7),
        ("PGD-5", "4", "c.nii.gz", 0.6), ("PGD-5", "4", "a.nii.gz", 0.3), ("PGD-5", "4", "b.nii.gz", 0.8),
        ("VAFA", "0", "a.nii.gz", 0.9), ("VAFA", "", "a.nii.gz", 0.5),
    ]  # fmt: skip
    table = script.paired_differences(str(_write(tmp_path / "per_image.csv", rows)))
    # PGD-5 at 4: a -0.6, b 0.0, c -0.1: mean -0.2333, sd 0.3215, SE 0.1856, 2 worse
    assert "| PGD-5 | 4 | 3 | -0.2333 | 0.1856 | 2 |" in table
    assert "| VAFA | own | 1 | -0.4000 | nan | 1 |" in table  # an own budget; one image has no standard error
    saved = json.loads((tmp_path / "paired_dice.json").read_text())
    pgd = next(r for r in saved["rows"] if r["attack"] == "PGD-5")
    assert pgd["mean_difference"] == pytest.approx(-0.7 / 3) and pgd["paired_se"] == pytest.approx(0.185592, abs=1e-6)


def test_an_image_without_a_clean_score_is_refused(tmp_path: Path, load_script: Callable[[str], ModuleType]) -> None:
    script = load_script("paired_differences")
    rows = [("FGSM", "0", "a.nii.gz", 0.9), ("FGSM", "8", "a.nii.gz", 0.4), ("FGSM", "8", "z.nii.gz", 0.5)]
    with pytest.raises(ValueError, match="FGSM at epsilon 8 has images without a clean dice"):
        script.paired_differences(str(_write(tmp_path / "per_image.csv", rows)))
