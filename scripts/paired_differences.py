"""
Paired differences of a robustness table's per-image results: for each attack and budget, the mean over the images of
(attacked Dice - clean Dice), its paired standard error (the standard deviation of the differences / sqrt(n)) and the
number of images that lost (:func:`monai_ext.metrics.paired_difference`), as a Markdown table (and JSON beside it). An
empty budget is an attack's own budget (VAFA's ``q_max``), shown as "own". The clean score of an image is its score at
budget 0 of the same attack (the same for every attack: the clean network on the clean image). With ``versus``, each
attack is compared instead with one attack of another run at the same budget, over the images both scored (SEA
against PGD on the same volumes, say).

Examples (the 3D study of bundles/robust3d/docs/README.md)::

    python scripts/paired_differences.py bundles/robust3d/docs/results/unet_attacks/per_image.csv
    python scripts/paired_differences.py bundles/robust3d/docs/results/unet_sea20/per_image.csv \
        --versus bundles/robust3d/docs/results/unet_pgd20_all_volumes/per_image.csv --versus_attack PGD-20
"""

from __future__ import annotations

import csv
import math
import re
from collections import defaultdict
from pathlib import Path

import fire

from monai_ext.metrics import paired_difference
from monai_ext.utils import write_json, write_text

#: the per-image metrics where lower is better (the others: higher is better)
LOWER_IS_BETTER = ("hd95",)

Scores = dict[tuple[str, float], dict[str, float]]


def _read(per_image_csv: str, metric: str) -> Scores:
    """``{(attack, epsilon): {image: score}}`` of one ``per_image.csv`` (an own budget is epsilon inf)."""
    scores: Scores = defaultdict(dict)
    with open(per_image_csv, newline="") as f:
        for row in csv.DictReader(f):
            if metric not in row:
                raise ValueError(f"{per_image_csv} has no column {metric!r} (columns: {', '.join(row)}).")
            scores[(row["attack"], float(row["epsilon"] or "inf"))][row["image"]] = float(row[metric])
    return scores


def paired_differences(
    per_image_csv: str, metric: str = "dice", versus: str | None = None, versus_attack: str | None = None
) -> str:
    """
    Write ``paired_<metric>.md`` and ``.json`` beside ``per_image_csv`` (with ``versus``:
    ``paired_<metric>_vs_<versus_attack>``) and return the Markdown table.

    Args:
        per_image_csv: a robustness run's ``per_image.csv`` (``attack``, ``epsilon``, ``image`` and the metrics).
        metric: its column to compare (``dice``, ``jaccard``, ``hd95``; lower is better for ``hd95``).
        versus: another run's ``per_image.csv``: compare each attack with ``versus_attack`` of that run at the same
            budget, over the images both scored; ``None``: with the clean scores.
        versus_attack: the attack of ``versus`` (its name in the ``attack`` column), needed with ``versus``.

    Raises:
        ValueError: an attack has no budget 0, or an attacked image has no clean score; with ``versus``: no
            ``versus_attack``, or no budget or image in common.
    """
    scores = _read(per_image_csv, metric)
    higher = metric not in LOWER_IS_BETTER
    other = None
    if versus is not None:
        if not versus_attack:
            raise ValueError("versus needs versus_attack, the attack of the other run to compare with.")
        other = {eps: s for (attack, eps), s in _read(versus, metric).items() if attack == versus_attack}
        if not other:
            raise ValueError(f"{versus} has no attack {versus_attack!r}.")
    rows = []
    for (attack, eps), attacked in sorted(scores.items()):
        if eps == 0:
            continue
        if other is None:
            baseline = scores.get((attack, 0.0))
            if baseline is None or set(attacked) - set(baseline):
                raise ValueError(f"{per_image_csv}: {attack} at epsilon {eps:g} has images without a clean {metric}.")
        else:
            baseline = other.get(eps)
            if baseline is None:
                continue
        names = sorted(set(attacked) & set(baseline))
        if not names:
            raise ValueError(f"{attack} at epsilon {eps:g} and {versus_attack} of {versus} share no image.")
        paired = paired_difference(
            [attacked[n] for n in names], [baseline[n] for n in names], higher, names=names, baseline_names=names
        )
        rows.append(
            {
                "attack": attack,
                "epsilon": eps,
                "n": paired["n"],
                "mean_difference": paired["mean"],
                "paired_se": paired["standard_error"],
                "images_worse": paired["worse"],
            }
        )
    if other is not None and not rows:
        raise ValueError(f"no budget of {per_image_csv} is one of {versus_attack} in {versus}.")
    against = "clean" if other is None else versus_attack
    lines = [
        f"| attack | eps | images | mean {metric} difference (attacked - {against}) | paired SE | images worse |",
        "|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['attack']} | {'own' if math.isinf(r['epsilon']) else format(r['epsilon'], 'g')} | {r['n']} | "
        f"{r['mean_difference']:+.4f} | {r['paired_se']:.4f} | {r['images_worse']} |"
        for r in rows
    ]
    table = "\n".join(lines) + "\n"
    folder = Path(per_image_csv).parent
    stem = f"paired_{metric}" if other is None else f"paired_{metric}_vs_{re.sub(r'[^A-Za-z0-9]+', '_', against)}"
    source = str(per_image_csv) if other is None else f"{per_image_csv} against {versus_attack} of {versus}"
    write_text(folder / f"{stem}.md", f"Paired differences from {source}\n\n{table}")
    record = {"source": str(per_image_csv), "metric": metric}
    if other is not None:
        record.update(versus=versus, versus_attack=versus_attack)
    write_json(folder / f"{stem}.json", {**record, "rows": rows})
    return table


if __name__ == "__main__":
    fire.Fire(paired_differences)
