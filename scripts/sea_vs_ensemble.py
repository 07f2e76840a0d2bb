"""
The NLCEN study under SEA beside the 20-step broad ensemble (issue 21, item 3), from the per-image results that
``scripts/nlcen_sea_study.sh`` writes: for each network and budget, the mean Dice under each attack, SEA minus the
ensemble paired over the same images (mean difference, paired standard error, images lower under SEA), and each network
minus NLCEN under each attack, paired the same way. Writes ``sea_vs_ensemble.md`` and ``.json`` in the results folder.

Example::

    python scripts/sea_vs_ensemble.py bundles/nlcen/docs/results/sea_s128_12
"""

from __future__ import annotations

import csv
from pathlib import Path

import fire

from monai_ext.metrics import paired_difference
from monai_ext.utils import write_json, write_text

#: the networks of the study, in the order of the table (folders of the results folder)
VARIANTS = ("nlcen", "nlcen_wo_nlce", "unet")
#: the two attacks (folders of each network's results): the 20-step broad ensemble and SEA at 300 steps
ENSEMBLE, SEA = "ensemble20", "sea300"


def _dice(per_image_csv: Path) -> dict[float, dict[str, float]]:
    """Dice per budget and image of one ``per_image.csv``."""
    scores: dict[float, dict[str, float]] = {}
    with open(per_image_csv, newline="") as f:
        for row in csv.DictReader(f):
            scores.setdefault(float(row["epsilon"]), {})[row["image"]] = float(row["dice"])
    return scores


def _paired(a: dict[str, float], b: dict[str, float]) -> dict:
    """``a - b`` over the images both have (:func:`monai_ext.metrics.paired_difference`, Dice: higher is better)."""
    images = sorted(set(a) & set(b))
    if len(images) < 2:
        raise ValueError(f"fewer than 2 images in common ({len(images)}): nothing to pair.")
    return paired_difference([a[i] for i in images], [b[i] for i in images], names=images, baseline_names=images)


def sea_vs_ensemble(results: str) -> str:
    """Write ``sea_vs_ensemble.md`` / ``.json`` in ``results`` and return the Markdown."""
    root = Path(results)
    found = {
        v: {
            a: _dice(root / v / a / "per_image.csv")
            for a in (ENSEMBLE, SEA)
            if (root / v / a / "per_image.csv").is_file()
        }
        for v in VARIANTS
    }
    found = {v: attacks for v, attacks in found.items() if len(attacks) == 2}
    if not found:
        raise FileNotFoundError(f"no network of {', '.join(VARIANTS)} has both {ENSEMBLE} and {SEA} under {root}.")
    rows, lines = [], []
    lines.append(f"# SEA-300 beside the 20-step broad ensemble: {root}\n")
    lines.append("Mean Dice (background excluded) over the images; differences paired over the same images, with the")
    lines.append("paired standard error (sd of the differences / sqrt(n)) and the images lower.\n")
    lines.append("| network | eps | images | clean | ensemble-20 | SEA-300 | SEA - ensemble | minus NLCEN under SEA |")
    lines.append("|---|---|---|---|---|---|---|---|")
    for variant, attacks in found.items():
        for eps in sorted(e for e in attacks[SEA] if e > 0):
            ens, sea, clean = attacks[ENSEMBLE].get(eps, {}), attacks[SEA][eps], attacks[SEA].get(0.0, {})
            row = {"network": variant, "epsilon": eps, "images": len(sea),
                   "clean": sum(clean.values()) / len(clean), "sea": sum(sea.values()) / len(sea)}  # fmt: skip
            row["ensemble"] = sum(ens.values()) / len(ens) if ens else None
            row["sea_minus_ensemble"] = _paired(sea, ens) if ens else None
            nlcen = found.get("nlcen", {}).get(SEA, {}).get(eps)
            row["minus_nlcen_under_sea"] = _paired(sea, nlcen) if nlcen and variant != "nlcen" else None
            rows.append(row)
            diff, vs = row["sea_minus_ensemble"], row["minus_nlcen_under_sea"]
            diff_text = (
                f"{diff['mean']:+.4f} ({diff['standard_error']:.4f}), lower on {diff['worse']} of {diff['n']}"
                if diff
                else "-"
            )
            vs_text = f"{vs['mean']:+.4f} ({vs['standard_error']:.4f})" if vs else ""
            ens_text = f"{row['ensemble']:.4f}" if ens else "-"
            lines.append(f"| {variant} | {eps:g} | {row['images']} | {row['clean']:.4f} | {ens_text} | {row['sea']:.4f} | "
                         f"{diff_text} | {vs_text} |")  # fmt: skip
    markdown = "\n".join(lines) + "\n"
    write_text(root / "sea_vs_ensemble.md", markdown)
    write_json(root / "sea_vs_ensemble.json", {"results": str(root), "rows": rows})
    return markdown


if __name__ == "__main__":
    fire.Fire(sea_vs_ensemble)
