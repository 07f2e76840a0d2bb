"""
The paired statistics of ``scripts/gp_study.py`` against naive references on hand data: the mean and paired standard
error of the differences, the better / worse / equal counts, pairing by name against pairing by position, and the
Wilcoxon signed-rank p-value against an enumeration of its exact null distribution (and a normal approximation with
ties written out) and against SciPy called directly; the early-stop bookkeeping of a training checkpoint; the tables
of an old study JSON rewritten with ``--tables_from``; the image names ``PerImageMetricsSaver`` writes for the pairing.
The study itself runs end to end in ``test_bundle_gp_input_transfer.py``.
"""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import pytest
import torch
from scipy.stats import norm, rankdata, wilcoxon


@pytest.fixture(scope="module")
def gp_study(load_script):
    return load_script("gp_study")


def _signed_rank_sum(diffs: list[float]) -> float:
    ranks = rankdata([abs(d) for d in diffs])  # average ranks for ties
    return float(sum(r for r, d in zip(ranks, diffs, strict=True) if d > 0))


def _exact_p(diffs: list[float]) -> float:
    """Two-sided p of the signed-rank sum by enumerating the 2^n equally likely signs (distinct, non-zero |d|)."""
    ranks = rankdata([abs(d) for d in diffs])
    observed = _signed_rank_sum(diffs)
    sums = [
        sum(r for r, s in zip(ranks, signs, strict=True) if s) for signs in itertools.product([0, 1], repeat=len(diffs))
    ]
    low = sum(t <= observed for t in sums) / len(sums)
    high = sum(t >= observed for t in sums) / len(sums)
    return min(1.0, 2 * min(low, high))


def _normal_p(diffs: list[float]) -> float:
    """Two-sided p of the normal approximation with the tie correction of the variance, no continuity correction."""
    n = len(diffs)
    _, counts = torch.unique(torch.tensor([abs(d) for d in diffs]), return_counts=True)
    variance = n * (n + 1) * (2 * n + 1) / 24 - sum(int(t) ** 3 - int(t) for t in counts) / 48
    z = (_signed_rank_sum(diffs) - n * (n + 1) / 4) / math.sqrt(variance)
    return float(2 * norm.sf(abs(z)))


def test_paired_difference_by_hand(gp_study) -> None:
    method = [0.9, 0.8, 0.75, 0.6, 0.5, 0.95, float("nan"), 0.7]
    baseline = [0.85, 0.82, 0.75, 0.5, 0.3, 0.9, 0.4, 0.71]
    result = gp_study.paired_difference(method, baseline)
    diffs = [a - b for a, b in zip(method, baseline, strict=True) if not math.isnan(a)]  # the NaN image left out
    mean = sum(diffs) / len(diffs)
    se = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (len(diffs) - 1)) / math.sqrt(len(diffs))
    assert result["n"] == 7 and result["mean"] == pytest.approx(mean) and result["standard_error"] == pytest.approx(se)
    assert (result["better"], result["worse"], result["equal"]) == (4, 2, 1)
    lower = gp_study.paired_difference(method, baseline, higher_is_better=False)  # FPR, FNR: lower is better
    assert (lower["better"], lower["worse"], lower["equal"]) == (2, 4, 1)
    test = result["wilcoxon"]
    nonzero = [d for d in diffs if d != 0]  # the zero difference is dropped before ranking
    assert test["n_nonzero"] == 6 and test["zeros"] == 1 and test["method"] == "exact"
    assert test["p_value"] == pytest.approx(_exact_p(nonzero))
    assert test["p_value"] == pytest.approx(wilcoxon(nonzero).pvalue)
    assert result["paired_by"] == "position"


def test_pairing_by_name_ignores_the_order(gp_study) -> None:
    names = [f"case_{i}.png" for i in range(6)]
    method, baseline = [0.9, 0.1, 0.5, 0.7, 0.3, 0.6], [0.8, 0.3, 0.45, 0.4, 0.35, 0.55]
    order = [3, 0, 5, 1, 4, 2]
    shuffled = gp_study.paired_difference(
        method, [baseline[i] for i in order], names=names, baseline_names=[names[i] for i in order]
    )
    in_order = gp_study.paired_difference(method, baseline)
    assert shuffled["paired_by"] == "name" and in_order["paired_by"] == "position"
    for key in ("mean", "standard_error", "better", "worse", "equal"):
        assert shuffled[key] == pytest.approx(in_order[key]), key
    assert shuffled["wilcoxon"]["p_value"] == pytest.approx(in_order["wilcoxon"]["p_value"])
    with pytest.raises(ValueError, match="different images"):
        gp_study.paired_difference(method, baseline, names=names, baseline_names=[*names[:5], "other.png"])
    with pytest.raises(ValueError, match="cannot pair"):
        gp_study.paired_difference(method, baseline[:5])


def test_wilcoxon_ties_large_samples_and_zeros(gp_study) -> None:
    ties = [0.1, -0.1, 0.2, 0.2, 0.3, -0.05, 0.1, 0.4, 0.0, 0.25, -0.2, 0.15]
    test = gp_study.wilcoxon_signed_rank(ties)  # ties among |d|: the normal approximation with the tie correction
    nonzero = [d for d in ties if d != 0]
    assert test["method"] == "asymptotic" and test["zeros"] == 1 and test["n_nonzero"] == 11
    assert test["p_value"] == pytest.approx(_normal_p(nonzero))
    assert test["p_value"] == pytest.approx(wilcoxon(nonzero, method="asymptotic").pvalue)
    large = [((i * 37) % 101 - 45) / 1000 + i * 1e-6 for i in range(60)]  # 60 distinct: over 50, the approximation
    test = gp_study.wilcoxon_signed_rank(large)
    assert test["method"] == "asymptotic" and test["p_value"] == pytest.approx(_normal_p(large))
    small = [0.3, -0.1, 0.25, 0.05, 0.4, -0.02, 0.33, 0.12]
    assert gp_study.wilcoxon_signed_rank(small)["p_value"] == pytest.approx(_exact_p(small))
    assert gp_study.wilcoxon_signed_rank([0.1, 0.2, 0.3])["p_value"] == pytest.approx(0.25)  # 2 / 2^3
    none = gp_study.wilcoxon_signed_rank([0.0, 0.0, 0.0])
    assert none == {"p_value": None, "statistic": None, "n_nonzero": 0, "zeros": 3, "method": None}


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
