"""
Summaries of a per-image quality score without ground truth (the mean SA score ``mu`` of the ProtoSeg paper,
section 4.6): the Dice kept at each coverage when the lowest-scored images are rejected (Table 2) and the
correlation of the score with the Dice (Fig. 10).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import stats

__all__ = ["coverage_table", "score_correlation"]


def _pair(scores: Sequence[float], dice: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    s, d = np.asarray(scores, float), np.asarray(dice, float)
    if s.ndim != 1 or s.shape != d.shape or s.size == 0:
        raise ValueError(f"scores and dice must be two 1D sequences of one length, got shapes {s.shape} and {d.shape}.")
    if not (np.isfinite(s).all() and np.isfinite(d).all()):
        raise ValueError("scores and dice must be finite.")
    return s, d


def coverage_table(
    scores: Sequence[float],
    dice: Sequence[float],
    coverages: Sequence[float] = (1.0, 0.9, 0.7, 0.5),
    higher_is_better: bool = True,
) -> list[dict[str, float]]:
    """
    Dice over the images kept at each coverage (Table 2 of the ProtoSeg paper): at coverage ``c`` the
    ``ceil(c * N)`` images of best score are kept (the others are rejected for review) and their Dice averaged.
    Ties are broken by the images' order (a stable sort).

    Args:
        scores: a quality score per image (``mu``; or the VoG score with ``higher_is_better=False``).
        dice: the output's Dice per image.
        coverages: fractions in (0, 1].
        higher_is_better: rank by decreasing score (``mu``) or increasing score (VoG, an uncertainty).

    Returns:
        one ``{"coverage", "num_images", "mean", "std", "threshold"}`` per coverage (``threshold``: the lowest kept
        score, or the highest with ``higher_is_better=False``; population standard deviation).
    """
    s, d = _pair(scores, dice)
    order = np.argsort(-s if higher_is_better else s, kind="stable")
    rows = []
    for c in coverages:
        if not 0.0 < float(c) <= 1.0:
            raise ValueError(f"coverages must be in (0, 1], got {c}.")
        keep = order[: max(1, math.ceil(float(c) * len(s) - 1e-9))]
        rows.append(
            {
                "coverage": float(c),
                "num_images": int(keep.size),
                "mean": float(d[keep].mean()),
                "std": float(d[keep].std()),
                "threshold": float(s[keep[-1]]),
            }
        )
    return rows


def score_correlation(scores: Sequence[float], dice: Sequence[float]) -> dict[str, float]:
    """
    Pearson's r and Spearman's rho (with their two-sided p-values) between a per-image score and the Dice (Fig. 10).
    Undefined values (fewer than 3 images, or a constant input) are NaN.

    Returns:
        ``{"n", "pearson_r", "pearson_p", "spearman_rho", "spearman_p"}``.
    """
    s, d = _pair(scores, dice)
    out = {
        "n": int(s.size),
        "pearson_r": math.nan,
        "pearson_p": math.nan,
        "spearman_rho": math.nan,
        "spearman_p": math.nan,
    }
    if s.size >= 3 and np.ptp(s) > 0 and np.ptp(d) > 0:
        pearson = stats.pearsonr(s, d)
        spearman = stats.spearmanr(s, d)
        out.update(
            pearson_r=float(pearson.statistic),
            pearson_p=float(pearson.pvalue),
            spearman_rho=float(spearman.statistic),
            spearman_p=float(spearman.pvalue),
        )
    return out
