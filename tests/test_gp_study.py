"""
``scripts/gp_study.py``: the early-stop bookkeeping of a training checkpoint; the tables of an old study JSON rewritten
with ``--tables_from``; the image names ``PerImageMetricsSaver`` writes for the pairing (the paired statistics
themselves: ``test_paired_metrics.py``). The study itself runs end to end in ``test_bundle_gp_input_transfer.py``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch


@pytest.fixture(scope="module")
def gp_study(load_script):
    return load_script("gp_study")


def test_training_state_reads_the_early_stop(gp_study, tmp_path: Path) -> None:
    def save(epochs: int, counter: int | None) -> None:
        state = {"trainer": {"iteration": 4 * epochs, "epoch_length": 4, "max_epochs": 50}}
        state["run_state"] = {"best_metric": 0.8, "best_metric_epoch": max(epochs - (counter or 0), 1)}
        if counter is not None:
            state["early_stop"] = {"counter": counter, "best_score": 0.8}
        torch.save(state, tmp_path / "checkpoint.pt")

    assert gp_study._training_state(tmp_path, 50, 3) == "new"
    (tmp_path / "model.pt").write_bytes(b"")
    save(7, 2)
    assert gp_study._training_state(tmp_path, 50, 3) == "resume"
    save(8, 3)
    assert gp_study._training_state(tmp_path, 50, 3) == "done"  # stopped early: not run again
    assert gp_study._checkpoint(tmp_path) == {
        "epochs": 8, "max_epochs": 50, "best_epoch": 5, "best_validation_dice": 0.8, "early_stop_counter": 3
    }  # fmt: skip
    save(50, None)
    assert gp_study._training_state(tmp_path, 50) == "done"
    assert gp_study._training_state(tmp_path, 60) == "resume"


def test_tables_from_an_old_study(gp_study, tmp_path: Path) -> None:
    """A study JSON without names, settings or a control (the format of the committed results): paired by position,
    against ORIG only, every row in the tables."""
    values = {
        "orig": {"dice": [0.8, 0.7, 0.9, 0.6], "fpr": [0.1, 0.2, 0.1, 0.3], "fnr": [0.2, 0.3, 0.1, 0.4]},
        "gp_ts": {"dice": [0.85, 0.7, 0.92, 0.5], "fpr": [0.1, 0.1, 0.1, 0.2], "fnr": [0.1, 0.3, 0.05, 0.5]},
    }
    results = {}
    for method, per_image in values.items():
        summary = {m: {"mean": sum(v) / 4, "standard_error": 0.01, "std": 0.02, "n": 4} for m, v in per_image.items()}
        results[method] = {"label": gp_study.METHODS[method], "summary": summary, "values": per_image}
    path = tmp_path / "old_gp_study.json"
    path.write_text(json.dumps({"name": "old", "overrides": {}, "seconds": {"train ORIG": 1.5}, "results": results}))
    table = gp_study.study(tables_from=str(path))
    data = json.loads(path.read_text())
    paired = data["results"]["gp_ts"]["paired"]
    assert set(paired) == {"orig"} and paired["orig"]["dice"]["paired_by"] == "position"
    assert paired["orig"]["dice"]["mean"] == pytest.approx((0.05 + 0.0 + 0.02 - 0.1) / 4)
    assert data["results"]["orig"]["paired"] == {}
    assert (tmp_path / "old_gp_study.md").read_text() == table
    assert table.count("| GP_Ts |") == 4 and "| train ORIG | 1.5 |" in table  # Table 1 and three paired tables


def test_per_image_saver_names_the_images(tmp_path: Path) -> None:
    """``PerImageMetricsSaver`` writes the images' files relative to their common folder, in the order of the values,
    from collated batches as from decollated ones; a batch without file names gives no names."""
    from ignite.engine import Engine
    from monai.data import MetaTensor
    from monai.handlers import MeanDice

    from monai_ext.handlers import PerImageMetricsSaver

    files = [str(tmp_path / "data" / case / "images" / f"{case}.png") for case in ("b", "a", "c")]
    pred = torch.stack([torch.zeros(2, 2), torch.ones(2, 2)])  # one-hot, all foreground

    def step(engine, batch):  # a list of items (as MONAI's engines decollate) or one collated dictionary
        n = len(batch) if isinstance(batch, list) else len(batch["image"])
        return {"y_pred": [pred] * n, "y": [pred] * n}

    for batches in (
        [{"image": MetaTensor(torch.zeros(2, 1, 2, 2), meta={"filename_or_obj": files[:2]})},
         {"image": MetaTensor(torch.zeros(1, 1, 2, 2), meta={"filename_or_obj": files[2:]})}],
        [[{"image": MetaTensor(torch.zeros(1, 2, 2), meta={"filename_or_obj": f})}] for f in files],
    ):  # fmt: skip
        engine = Engine(step)
        MeanDice(include_background=False).attach(engine, "mean_dice")
        PerImageMetricsSaver(tmp_path / "out", metrics={"dice": "mean_dice"}).attach(engine)
        engine.run(batches)
        written = json.loads((tmp_path / "out" / "per_image.json").read_text())
        assert written["names"] == ["b/images/b.png", "a/images/a.png", "c/images/c.png"]
        assert written["values"]["dice"] == [1.0, 1.0, 1.0]
    engine = Engine(step)
    MeanDice(include_background=False).attach(engine, "mean_dice")
    PerImageMetricsSaver(tmp_path / "plain", metrics={"dice": "mean_dice"}).attach(engine)
    engine.run([{"image": torch.zeros(1, 1, 2, 2)}])
    assert "names" not in json.loads((tmp_path / "plain" / "per_image.json").read_text())
