"""
``monai_ext.metrics.paired_difference`` and ``wilcoxon_signed_rank`` against naive references on hand data: the mean
and paired standard error of the differences, the better / worse / equal counts, pairing by name against pairing by
position, and the Wilcoxon signed-rank p-value against an enumeration of its exact null distribution (and a normal
approximation with ties written out) and against SciPy called directly; over random data, the paired mean equals the
difference of the two means.
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import norm, rankdata, wilcoxon

from monai_ext.metrics import paired_difference, wilcoxon_signed_rank


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


def test_paired_difference_by_hand() -> None:
    method = [0.9, 0.8, 0.75, 0.6, 0.5, 0.95, float("nan"), 0.7]
    baseline = [0.85, 0.82, 0.75, 0.5, 0.3, 0.9, 0.4, 0.71]
    result = paired_difference(method, baseline)
    diffs = [a - b for a, b in zip(method, baseline, strict=True) if not math.isnan(a)]  # the NaN image left out
    mean = sum(diffs) / len(diffs)
    se = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (len(diffs) - 1)) / math.sqrt(len(diffs))
    assert result["n"] == 7 and result["mean"] == pytest.approx(mean) and result["standard_error"] == pytest.approx(se)
    assert (result["better"], result["worse"], result["equal"]) == (4, 2, 1)
    lower = paired_difference(method, baseline, higher_is_better=False)  # FPR, FNR: lower is better
    assert (lower["better"], lower["worse"], lower["equal"]) == (2, 4, 1)
    test = result["wilcoxon"]
    nonzero = [d for d in diffs if d != 0]  # the zero difference is dropped before ranking
    assert test["n_nonzero"] == 6 and test["zeros"] == 1 and test["method"] == "exact"
    assert test["p_value"] == pytest.approx(_exact_p(nonzero))
    assert test["p_value"] == pytest.approx(wilcoxon(nonzero).pvalue)
    assert result["paired_by"] == "position"


def test_pairing_by_name_ignores_the_order() -> None:
    names = [f"case_{i}.png" for i in range(6)]
    method, baseline = [0.9, 0.1, 0.5, 0.7, 0.3, 0.6], [0.8, 0.3, 0.45, 0.4, 0.35, 0.55]
    order = [3, 0, 5, 1, 4, 2]
    shuffled = paired_difference(
        method, [baseline[i] for i in order], names=names, baseline_names=[names[i] for i in order]
    )
    in_order = paired_difference(method, baseline)
    assert shuffled["paired_by"] == "name" and in_order["paired_by"] == "position"
    for key in ("mean", "standard_error", "better", "worse", "equal"):
        assert shuffled[key] == pytest.approx(in_order[key]), key
    assert shuffled["wilcoxon"]["p_value"] == pytest.approx(in_order["wilcoxon"]["p_value"])
    with pytest.raises(ValueError, match="different images"):
        paired_difference(method, baseline, names=names, baseline_names=[*names[:5], "other.png"])
    with pytest.raises(ValueError, match="cannot pair"):
        paired_difference(method, baseline[:5])


def test_wilcoxon_ties_large_samples_and_zeros() -> None:
    ties = [0.1, -0.1, 0.2, 0.2, 0.3, -0.05, 0.1, 0.4, 0.0, 0.25, -0.2, 0.15]
    test = wilcoxon_signed_rank(ties)  # ties among |d|: the normal approximation with the tie correction
    nonzero = [d for d in ties if d != 0]
    assert test["method"] == "asymptotic" and test["zeros"] == 1 and test["n_nonzero"] == 11
    assert test["p_value"] == pytest.approx(_normal_p(nonzero))
    assert test["p_value"] == pytest.approx(wilcoxon(nonzero, method="asymptotic").pvalue)
    large = [((i * 37) % 101 - 45) / 1000 + i * 1e-6 for i in range(60)]  # 60 distinct: over 50, the approximation
    test = wilcoxon_signed_rank(large)
    assert test["method"] == "asymptotic" and test["p_value"] == pytest.approx(_normal_p(large))
    small = [0.3, -0.1, 0.25, 0.05, 0.4, -0.02, 0.33, 0.12]
    assert wilcoxon_signed_rank(small)["p_value"] == pytest.approx(_exact_p(small))
    assert wilcoxon_signed_rank([0.1, 0.2, 0.3])["p_value"] == pytest.approx(0.25)  # 2 / 2^3
    none = wilcoxon_signed_rank([0.0, 0.0, 0.0])
    assert none == {"p_value": None, "statistic": None, "n_nonzero": 0, "zeros": 3, "method": None}


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 1), st.floats(0, 1)), min_size=2, max_size=40))
def test_paired_mean_is_the_difference_of_the_means(pairs: list[tuple[float, float]]) -> None:
    values, baseline = [a for a, _ in pairs], [b for _, b in pairs]
    result = paired_difference(values, baseline)
    assert result["n"] == len(pairs)
    assert result["mean"] == pytest.approx(sum(values) / len(values) - sum(baseline) / len(baseline), abs=1e-12)
    assert result["better"] + result["worse"] + result["equal"] == len(pairs)
    flipped = paired_difference(baseline, values)
    assert (flipped["better"], flipped["worse"]) == (result["worse"], result["better"])
