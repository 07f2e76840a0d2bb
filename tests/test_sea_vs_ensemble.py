"""``scripts/sea_vs_ensemble.py``: SEA minus the ensemble and each network minus NLCEN, paired by image, against values
computed by hand on two tiny result folders."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest

FIELDS = ["attack", "epsilon", "image", "dice"]


def _write(path: Path, label: str, dice: dict[float, list[float]]) -> None:
    path.mkdir(parents=True)
    with open(path / "per_image.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, FIELDS)
        writer.writeheader()
        for eps, values in dice.items():
            writer.writerows(
                {"attack": label, "epsilon": eps, "image": f"im{i}.png", "dice": v} for i, v in enumerate(values)
            )


def test_paired_by_hand(tmp_path: Path, load_script: Callable[[str], ModuleType]) -> None:
    script = load_script("sea_vs_ensemble")
    _write(tmp_path / "nlcen" / "ensemble20", "ensemble-20", {0: [0.9, 0.8, 0.7], 4: [0.6, 0.5, 0.4]})
    _write(tmp_path / "nlcen" / "sea300", "SEA-300", {0: [0.9, 0.8, 0.7], 4: [0.5, 0.5, 0.1]})
    _write(tmp_path / "unet" / "ensemble20", "ensemble-20", {0: [0.9, 0.9, 0.9], 4: [0.3, 0.3, 0.3]})
    _write(tmp_path / "unet" / "sea300", "SEA-300", {0: [0.9, 0.9, 0.9], 4: [0.2, 0.3, 0.1]})
    markdown = script.sea_vs_ensemble(str(tmp_path))
    rows = json.loads((tmp_path / "sea_vs_ensemble.json").read_text())["rows"]
    assert [(r["network"], r["epsilon"]) for r in rows] == [("nlcen", 4.0), ("unet", 4.0)]
    nlcen, unet = rows
    # NLCEN: SEA - ensemble = (-0.1, 0, -0.3): mean -0.1333, sd 0.1528, SE 0.0882, lower on 2
    assert nlcen["sea_minus_ensemble"]["mean"] == pytest.approx(-0.4 / 3)
    assert nlcen["sea_minus_ensemble"]["standard_error"] == pytest.approx(0.15275252 / 3**0.5)
    assert nlcen["sea_minus_ensemble"]["worse"] == 2 and nlcen["minus_nlcen_under_sea"] is None
    # U-Net - NLCEN under SEA: (-0.3, -0.2, 0.0): mean -0.1667, sd 0.1528
    assert unet["minus_nlcen_under_sea"]["mean"] == pytest.approx(-0.5 / 3)
    assert unet["minus_nlcen_under_sea"]["standard_error"] == pytest.approx(0.15275252 / 3**0.5)
    assert unet["clean"] == pytest.approx(0.9) and unet["ensemble"] == pytest.approx(0.3)
    assert (
        "| unet | 4 | 3 | 0.9000 | 0.3000 | 0.2000 | -0.1000 (0.0577), lower on 2 of 3 | -0.1667 (0.0882) |" in markdown
    )


def test_nothing_to_compare_is_an_error(tmp_path: Path, load_script: Callable[[str], ModuleType]) -> None:
    script = load_script("sea_vs_ensemble")
    _write(tmp_path / "nlcen" / "sea300", "SEA-300", {0: [0.9, 0.8], 4: [0.5, 0.5]})
    with pytest.raises(FileNotFoundError, match="has both ensemble20 and sea300"):
        script.sea_vs_ensemble(str(tmp_path))
