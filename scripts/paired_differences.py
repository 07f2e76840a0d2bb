"""
Paired differences of a robustness table's per-image results: for each attack and budget, the mean over the images of
(attacked Dice - clean Dice), its paired standard error (the standard deviation of the differences / sqrt(n)) and the
number of images that lost Dice, as a Markdown table (and JSON beside it). An empty budget is an attack's own budget
(VAFA's ``q_max``), shown as "own". The clean Dice of an image is its score at
budget 0 of the same attack (the same for every attack: the clean network on the clean image).

Example (the 3D study of bundles/robust3d/docs/README.md)::

    python scripts/paired_differences.py bundles/robust3d/docs/results/unet_attacks/per_image.csv
"""

from __future__ import annotations

import csv
import math
from collections import defaultdict
from pathlib import Path

import fire

from monai_ext.metrics import paired_difference
from monai_ext.utils import write_json, write_text


def paired_differences(per_image_csv: str, metric: str = "dice") -> str:
    """
    Write ``paired_<metric>.md`` and ``.json`` beside ``per_image_csv`` and return the Markdown table.

    Raises:
        ValueError: an attack has no budget 0, or an attacked image has no clean score.
    """
    scores: dict[tuple[str, float], dict[str, float]] = defaultdict(dict)  # an own budget is epsilon inf
    with open(per_image_csv, newline="") as f:
        for row in csv.DictReader(f):
            scores[(row["attack"], float(row["epsilon"] or "inf"))][row["image"]] = float(row[metric])
    rows = []
    for (attack, eps), attacked in sorted(scores.items()):
        if eps == 0:
            continue
        clean = scores.get((attack, 0.0))
        if clean is None or set(attacked) - set(clean):
            raise ValueError(f"{per_image_csv}: {attack} at epsilon {eps:g} has images without a clean {metric}.")
        names = sorted(attacked)
        paired = paired_difference(
            [attacked[n] for n in names], [clean[n] for n in names], names=names, baseline_names=names
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
    lines = [
        f"| attack | eps | images | mean {metric} difference (attacked - clean) | paired SE | images worse |",
        "|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['attack']} | {'own' if math.isinf(r['epsilon']) else format(r['epsilon'], 'g')} | {r['n']} | {r['mean_difference']:+.4f} | {r['paired_se']:.4f} | "
        f"{r['images_worse']} |"
        for r in rows
    ]
    table = "\n".join(lines) + "\n"
    folder = Path(per_image_csv).parent
    write_text(folder / f"paired_{metric}.md", f"Paired differences from {per_image_csv}\n\n{table}")
    write_json(folder / f"paired_{metric}.json", {"source": str(per_image_csv), "metric": metric, "rows": rows})
    return table


if __name__ == "__main__":
    fire.Fire(paired_differences)
