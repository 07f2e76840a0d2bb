"""``scripts/paired_differences.py``: attacked minus clean per attack and budget, paired by image name (rows written in
another order), and one attack against another run's at the same budget, against values computed by hand; a distance
(HD95) counts a rise as worse; an attacked image without a clean score, a missing column or attack are refused by
name."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest


def _write(path: Path, rows: list[tuple[str, str, str, float]], metric: str = "dice") -> Path:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["attack", "epsilon", "image", metric])
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


def test_one_attack_against_another_run(tmp_path: Path, load_script: Callable[[str], ModuleType]) -> None:
    script = load_script("paired_differences")
    strong = _write(tmp_path / "sea.csv", [
        ("SEA", "0", "a", 0.9), ("SEA", "0", "b", 0.8),
        ("SEA", "4", "a", 0.1), ("SEA", "4", "b", 0.3), ("SEA", "8", "a", 0.0), ("SEA", "8", "b", 0.1),
    ])  # fmt: skip
    folder = tmp_path / "pgd"
    folder.mkdir()
    weak = _write(folder / "per_image.csv", [
        ("PGD-20", "0", "a", 0.9), ("PGD-20", "4", "a", 0.2), ("PGD-20", "4", "b", 0.25), ("PGD-20", "4", "c", 0.5),
        ("FGSM", "4", "a", 0.6), ("FGSM", "4", "b", 0.6),
    ])  # fmt: skip
    table = script.paired_differences(str(strong), versus=str(weak), versus_attack="PGD-20")
    # SEA - PGD-20 at 4 over a and b (c: PGD only): -0.1 and +0.05: mean -0.025, sd 0.1061, SE 0.075, 1 worse;
    # eps 8: PGD-20 has no such budget, no row
    assert "| SEA | 4 | 2 | -0.0250 | 0.0750 | 1 |" in table and "| SEA | 8 |" not in table
    saved = json.loads((tmp_path / "paired_dice_vs_PGD_20.json").read_text())
    assert saved["versus_attack"] == "PGD-20" and len(saved["rows"]) == 1
    with pytest.raises(ValueError, match="versus_attack"):
        script.paired_differences(str(strong), versus=str(weak))
    with pytest.raises(ValueError, match="no attack 'CosPGD'"):
        script.paired_differences(str(strong), versus=str(weak), versus_attack="CosPGD")


def test_a_distance_counts_a_rise_as_worse(tmp_path: Path, load_script: Callable[[str], ModuleType]) -> None:
    script = load_script("paired_differences")
    rows = [("PGD", "0", "a", 10.0), ("PGD", "0", "b", 12.0), ("PGD", "4", "a", 30.0), ("PGD", "4", "b", 11.0)]
    table = script.paired_differences(str(_write(tmp_path / "per_image.csv", rows, "hd95")), metric="hd95")
    assert "| PGD | 4 | 2 | +9.5000 | 10.5000 | 1 |" in table  # +20 and -1: one volume worse (its HD95 rose)
    with pytest.raises(ValueError, match="no column 'dice'"):
        script.paired_differences(str(tmp_path / "per_image.csv"))
