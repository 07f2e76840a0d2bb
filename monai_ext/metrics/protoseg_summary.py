"""
Summaries of the ProtoSeg analyses over a set of images (He et al., MedIA 2023): the SA score per layer with the
input separability and the units of one layer (Fig. 5, 7, Tables 1 and 3), the SA score under noise (Fig. 16), and
for a per-image quality score without ground truth (the mean SA score ``mu``, section 4.6) the Dice kept at each
coverage when the lowest-scored images are rejected (Table 2) and the correlation of the score with the Dice
(Fig. 10).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy import stats

from monai_ext.networks.utils import INPUT_LAYER

__all__ = ["coverage_table", "layer_summary", "mean_std", "noise_summary", "quality_summary", "score_correlation"]


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


def mean_std(values: Sequence[float] | np.ndarray) -> dict[str, float]:
    """``{"mean", "std", "n"}`` of ``values`` (population standard deviation)."""
    arr = np.asarray(values, dtype=float)
    return {"mean": float(arr.mean()), "std": float(arr.std()), "n": int(arr.size)}


def layer_summary(
    layer_scores: Sequence[Sequence[float]],
    output_dice: Sequence[float],
    layers: Sequence[str],
    feature_shapes: Mapping[str, Sequence[int]] | None = None,
    unit_scores: np.ndarray | None = None,
    unit_layer: str | None = None,
) -> dict[str, Any]:
    """
    The layer analysis of a set of images: the mean and std SA score of each layer (Fig. 5), the output's Dice, the
    last layer's SA score (Table 1), the input separability (Table 3) and the units of one layer sorted (Fig. 7).

    Args:
        layer_scores: (N, L) SA score per image and layer (averaged over the classes), in the order of ``layers``.
        output_dice: (N,) the output's Dice per image.
        layers: the L layer names; ``"input"`` first scores the network's input as layer 0 (``S_x``).
        feature_shapes: layer name -> feature shape (C, *spatial).
        unit_scores: (N, C) SA score per image and unit of ``unit_layer``.
        unit_layer: the layer of the units.

    Returns:
        ``num_images``, ``output_dice`` (mean/std), ``layers`` (index, label, name, feature shape, mean/std SA),
        ``last_layer``, ``separability`` (``sx``, ``output_dice``, ``m_d``: with the input scored), ``units`` (the
        mean SA per unit and the units sorted by it: with ``unit_scores``).
    """
    scores, dice = np.asarray(layer_scores, float), np.asarray(output_dice, float)
    include_input = layers[0] == INPUT_LAYER
    named = [name for name in layers if name != INPUT_LAYER]
    labels = (["in"] if include_input else []) + [str(i + 1) for i in range(len(named))]
    first = 0 if include_input else 1
    shapes = dict(feature_shapes or {})
    rows = [
        {"index": first + j, "label": label, "name": name, "feature_shape": shapes.get(name), **mean_std(scores[:, j])}
        for j, (label, name) in enumerate(zip(labels, layers))
    ]
    out: dict[str, Any] = {
        "num_images": int(scores.shape[0]),
        "output_dice": mean_std(dice),
        "layers": rows,
        "last_layer": {"name": named[-1], **mean_std(scores[:, -1])},
    }
    if include_input:
        out["separability"] = {
            "sx": mean_std(scores[:, 0]),
            "output_dice": mean_std(dice),
            "m_d": mean_std(dice - scores[:, 0]),
        }
    if unit_scores is not None and unit_layer is not None:
        units = np.asarray(unit_scores).mean(axis=0)
        order = np.argsort(-units, kind="stable")
        out["units"] = {
            "layer": unit_layer,
            "index": named.index(unit_layer) + 1,
            "mean_per_unit": units.tolist(),
            "sorted_units": order.tolist(),
            "sorted_scores": units[order].tolist(),
        }
    return out


def noise_summary(
    levels: Sequence[float], clean: Mapping[str, Any], noisy: Sequence[Mapping[str, Any]]
) -> dict[str, Any]:
    """
    The noise study (Fig. 16) from :func:`layer_summary` of the clean run and of one run per noise level: the mean
    SA score per layer, noisy minus clean, and the output's Dice.

    Returns:
        ``{"levels", "noise", "num_images", "layer_labels", "layer_names", "clean": [mean SA per layer], "noisy":
        [[...] per level], "difference": [[noisy - clean] per level], "output_dice": {"clean", "noisy": [...]}}``.
    """
    clean_sa = [row["mean"] for row in clean["layers"]]
    noisy_sa = [[row["mean"] for row in s["layers"]] for s in noisy]
    return {
        "levels": [float(v) for v in levels],
        "noise": "uniform in [-level, level] added to the input, no clipping",
        "num_images": clean["num_images"],
        "layer_labels": [row["label"] for row in clean["layers"]],
        "layer_names": [row["name"] for row in clean["layers"]],
        "clean": clean_sa,
        "noisy": noisy_sa,
        "difference": [[n - c for n, c in zip(row, clean_sa)] for row in noisy_sa],
        "output_dice": {"clean": clean["output_dice"]["mean"], "noisy": [s["output_dice"]["mean"] for s in noisy]},
    }


def quality_summary(
    mu: Sequence[float],
    dice: Sequence[float] | None = None,
    vog: Sequence[float] | None = None,
    coverages: Sequence[float] = (1.0, 0.9, 0.7, 0.5),
    layers: Sequence[str] | None = None,
    num_checkpoints: int = 0,
) -> dict[str, Any]:
    """
    The quality estimate ``mu`` of a set of images: its mean and, with the output's Dice, the coverage table
    (Table 2) and its correlation with the Dice (Fig. 10); the same for the VoG baseline (ranked by increasing VoG).

    Args:
        mu: the mean SA score per image.
        dice: the output's Dice per image (needs ground truth).
        vog: the VoG score per image.
        coverages: the coverages of the tables.
        layers: the layers of ``mu``, recorded in the summary.
        num_checkpoints: the checkpoints of VoG, recorded in the summary.

    Returns:
        ``num_images``, ``mean_mu``, ``layers``; with ``dice`` also ``mean_dice``, ``mu`` (``coverage``,
        ``correlation``) and, with ``vog``, ``vog`` (``coverage``, ``correlation``, ``num_checkpoints``).
    """
    out: dict[str, Any] = {"num_images": len(mu), "mean_mu": float(np.mean(mu)), "layers": layers}
    if dice is not None:
        out["mean_dice"] = float(np.mean(dice))
        out["mu"] = {"coverage": coverage_table(mu, dice, coverages), "correlation": score_correlation(mu, dice)}
        if vog is not None:
            out["vog"] = {
                "coverage": coverage_table(vog, dice, coverages, higher_is_better=False),
                "correlation": score_correlation(vog, dice),
                "num_checkpoints": num_checkpoints,
            }
    return out
