"""
Paired comparison of two methods scored on the same images: the mean of the per-image differences, its paired standard
error, how many images got better and worse, and the two-sided Wilcoxon signed-rank test.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from scipy.stats import wilcoxon

from monai_ext.metrics.per_image import mean_standard_error

__all__ = ["paired_difference", "wilcoxon_signed_rank"]


def wilcoxon_signed_rank(diffs: Sequence[float]) -> dict[str, Any]:
    """
    The two-sided Wilcoxon signed-rank test of paired differences (``scipy.stats.wilcoxon``).

    Zero differences are dropped first (``zero_method="wilcox"``); tied absolute differences get average ranks. The
    p-value is exact for at most 50 non-zero differences without ties, else from the normal approximation (scipy's,
    with its tie correction, no continuity correction).

    Returns:
        ``{"p_value", "statistic", "n_nonzero", "zeros", "method"}``: ``statistic`` is scipy's, the smaller of the
        positive and negative rank sums; ``p_value``, ``statistic`` and ``method`` are ``None`` when no difference is
        non-zero.
    """
    nonzero = [float(d) for d in diffs if d != 0]
    n = len(nonzero)
    result: dict[str, Any] = {"p_value": None, "statistic": None, "n_nonzero": n, "zeros": len(diffs) - n}
    if n == 0:
        return {**result, "method": None}
    method = "exact" if n <= 50 and len({abs(d) for d in nonzero}) == n else "asymptotic"
    test = wilcoxon(nonzero, zero_method="wilcox", alternative="two-sided", method=method)
    return {**result, "p_value": float(test.pvalue), "statistic": float(test.statistic), "method": method}


def _aligned(
    values: Sequence[float],
    baseline: Sequence[float],
    names: Sequence[str] | None,
    baseline_names: Sequence[str] | None,
) -> tuple[list[float], list[float], str]:
    """The two methods' values on the same images, in one order, and how they were paired (``"name"``, ``"position"``)."""
    if names is not None and baseline_names is not None:
        for label, n, v in (("values", names, values), ("baseline", baseline_names, baseline)):
            if len(set(n)) != len(n) or len(n) != len(v):
                raise ValueError(f"the {label}' names must be unique, one per value.")
        if set(names) != set(baseline_names):
            odd = sorted(set(names) ^ set(baseline_names))
            raise ValueError(f"the two evaluations scored different images, e.g. {odd[:5]}.")
        where = {name: i for i, name in enumerate(baseline_names)}
        return list(values), [baseline[where[name]] for name in names], "name"
    if len(values) != len(baseline):
        raise ValueError(f"cannot pair {len(values)} per-image values with {len(baseline)} of the baseline.")
    return list(values), list(baseline), "position"


def paired_difference(
    values: Sequence[float],
    baseline: Sequence[float],
    higher_is_better: bool = True,
    names: Sequence[str] | None = None,
    baseline_names: Sequence[str] | None = None,
) -> dict[str, Any]:
    """
    The paired difference of one method from a baseline over the same images.

    The images pair by name when both ``names`` are given (each unique, the same set), else by position. Per image
    ``d = value - baseline``, images where either is undefined (NaN) left out.

    Args:
        values: the method's per-image scores (Dice, a distance, ...).
        baseline: the baseline's per-image scores of the same images.
        higher_is_better: whether a positive ``d`` counts as ``better`` (Dice) or as ``worse`` (FPR, a distance).
        names: the images of ``values``; with ``baseline_names``, the pairing is by name.
        baseline_names: the images of ``baseline``.

    Returns:
        ``{"mean", "standard_error", "std", "n"}`` of ``d`` (:func:`monai_ext.metrics.mean_standard_error`: the
        standard error is the sample standard deviation of ``d`` over ``sqrt(n)``), the images the method made
        ``better``, ``worse`` and left ``equal`` (``d == 0``), ``wilcoxon`` (:func:`wilcoxon_signed_rank` of ``d``)
        and ``paired_by`` (``"name"`` or ``"position"``).

    Raises:
        ValueError: the two cannot be paired (different counts, or names of different images).
    """
    a, b, paired_by = _aligned(values, baseline, names, baseline_names)
    diffs = [x - y for x, y in zip(a, b, strict=True) if math.isfinite(x) and math.isfinite(y)]
    sign = 1 if higher_is_better else -1
    better = sum(sign * d > 0 for d in diffs)
    worse = sum(sign * d < 0 for d in diffs)
    return {
        **mean_standard_error(diffs),
        "better": better,
        "worse": worse,
        "equal": len(diffs) - better - worse,
        "wilcoxon": wilcoxon_signed_rank(diffs),
        "paired_by": paired_by,
    }
