"""
Result files are whole or absent and strict JSON; sweeps write after each level and resume where they stopped, and do
not mix results of other settings.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import monai.handlers.metrics_saver
import pytest
import torch
from ignite.engine import Engine, Events
from torch import nn
from torch.utils.data import DataLoader

from monai_ext.engines import RobustnessSweep, UniformNoise
from monai_ext.handlers import AtomicMetricsSaver
from monai_ext.handlers.protoseg_saver import write_quality_results
from monai_ext.metrics import quality_summary
from monai_ext.utils import atomic_open, write_json

pytestmark = pytest.mark.usefixtures("one_thread")

LEVELS = [0.0, 0.2, 0.4, 0.6]


def _strict(path: Path) -> Any:
    """``path`` read as strict JSON: ``NaN`` and ``Infinity`` are errors."""

    def refuse(name: str) -> None:
        raise ValueError(f"{path.name} holds {name}")

    return json.loads(path.read_text(), parse_constant=refuse)


def _data(n: int = 5, size: int = 12) -> list[dict[str, torch.Tensor]]:
    gen = torch.Generator().manual_seed(0)
    items = []
    for _ in range(n):
        label = (torch.rand(1, size, size, generator=gen) > 0.5).float()
        items.append({"image": (0.2 + 0.6 * label).clamp(0, 1), "label": label})
    return items


def _network(scale: float = 20.0) -> nn.Module:
    net = nn.Conv2d(1, 2, kernel_size=1)
    with torch.no_grad():
        net.weight.copy_(torch.tensor([[[[-scale]]], [[[scale]]]]))
        net.bias.copy_(torch.tensor([scale / 2, -scale / 2]))
    return net.eval()


class Killed(Exception):
    pass


def _sweep(out: Path, levels: list[float] = LEVELS, network: nn.Module | None = None, **kwargs: Any) -> RobustnessSweep:
    """A noise sweep (``UniformNoise`` as the attack) that counts the levels it computes in ``sweep.computed``."""
    sweep = RobustnessSweep(_network() if network is None else network, DataLoader(_data(), batch_size=2),
                            UniformNoise, levels, num_classes=2, output_dir=out, **kwargs)  # fmt: skip
    sweep.computed = []
    evaluator = sweep.sweep.evaluator
    evaluator.add_event_handler(Events.STARTED, lambda e: sweep.computed.append(sweep.sweep.levels[sweep.sweep._index]))
    return sweep


def _without_seconds(document: dict[str, Any]) -> dict[str, Any]:
    return {**document, "results": [{k: v for k, v in r.items() if k != "seconds"} for r in document["results"]]}


def test_interrupted_sweep_resumes_to_the_uninterrupted_result(tmp_path: Path) -> None:
    whole = _sweep(tmp_path / "whole")
    whole.run()
    assert whole.computed == LEVELS

    killed = _sweep(tmp_path / "killed")

    def kill(engine: Engine) -> None:
        if killed.computed == LEVELS[:2]:
            raise Killed("killed at the second level")

    killed.sweep.evaluator.add_event_handler(Events.STARTED, kill)
    with pytest.raises(Killed):
        killed.run()
    partial = _strict(tmp_path / "killed" / "robustness.json")  # written after the first level
    assert [r["epsilon"] for r in partial["results"]] == LEVELS[:1] and partial["complete"] is False

    rerun = _sweep(tmp_path / "killed")
    rerun.run()
    assert rerun.computed == LEVELS[1:]  # only the missing levels
    expected = _without_seconds(_strict(tmp_path / "whole" / "robustness.json"))
    assert _without_seconds(_strict(tmp_path / "killed" / "robustness.json")) == expected
    assert expected["complete"] is True and [r["epsilon"] for r in expected["results"]] == LEVELS

    longer = _sweep(tmp_path / "killed", [*LEVELS, 0.8])
    longer.run()
    assert longer.computed == [0.8]  # a longer list of levels extends a finished sweep


def test_sweep_of_other_settings_is_refused_unless_overwrite(tmp_path: Path) -> None:
    _sweep(tmp_path).run()
    before = (tmp_path / "robustness.json").read_text()
    with pytest.raises(ValueError, match=r"robustness.json holds the results of a sweep with other settings \(network"):
        _sweep(tmp_path, network=_network(scale=5.0)).run()
    assert (tmp_path / "robustness.json").read_text() == before
    with pytest.raises(ValueError, match=r"settings \(data differ"):
        RobustnessSweep(_network(), DataLoader(_data(4)), UniformNoise, LEVELS, 2, output_dir=tmp_path).run()
    again = _sweep(tmp_path, network=_network(scale=5.0), overwrite=True)
    again.run()
    assert again.computed == LEVELS


def test_json_is_strict(tmp_path: Path) -> None:
    """ProtoSeg's quality.json: a constant quality score has no correlation (NaN), written as null."""
    summary = quality_summary([0.5, 0.5, 0.5], [0.1, 0.2, 0.3])
    write_quality_results(tmp_path, summary, {"filename": ["a", "b", "c"], "mu": [0.5] * 3, "dice": [0.1, 0.2, 0.3]})
    quality = _strict(tmp_path / "quality.json")
    assert quality["mu"]["correlation"]["pearson_r"] is None and quality["mean_mu"] == 0.5
    write_json(tmp_path / "values.json", {"a": float("inf"), "b": [float("nan"), 1.0], "c": torch.tensor([0.5])})
    assert _strict(tmp_path / "values.json") == {"a": None, "b": [None, 1.0], "c": [0.5]}


def test_a_failed_write_leaves_the_old_file(tmp_path: Path) -> None:
    path = tmp_path / "table.csv"
    path.write_text("old\n")
    with pytest.raises(Killed), atomic_open(path, newline="") as f:
        f.write("new, half written")
        raise Killed
    assert path.read_text() == "old\n" and [p.name for p in tmp_path.iterdir()] == ["table.csv"]
    with atomic_open(path) as f:
        f.write("new\n")
    assert path.read_text() == "new\n" and [p.name for p in tmp_path.iterdir()] == ["table.csv"]


def test_metrics_saver_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """MONAI's MetricsSaver files, each moved into place whole: a write that fails half-way leaves the old files."""
    engine = Engine(lambda e, b: None)
    saver = AtomicMetricsSaver(str(tmp_path), metrics=["mean_dice"], metric_details=None)
    saver.attach(engine)
    engine.state.metrics = {"mean_dice": 0.75}
    saver(engine)
    assert (tmp_path / "metrics.csv").read_text() == "mean_dice,0.75\n"
    write = monai.handlers.metrics_saver.write_metrics_reports

    def fail_half_way(save_dir: str, **kwargs: Any) -> None:
        write(save_dir=save_dir, **kwargs)
        (Path(save_dir) / "metrics.csv").write_text("mean_dice,0.")  # torn
        raise Killed

    monkeypatch.setattr(monai.handlers.metrics_saver, "write_metrics_reports", fail_half_way)
    engine.state.metrics = {"mean_dice": 0.5}
    with pytest.raises(Killed):
        saver(engine)
    assert (tmp_path / "metrics.csv").read_text() == "mean_dice,0.75\n"
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.csv"]
