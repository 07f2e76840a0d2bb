"""
Gather the outputs of the ProtoSeg bundle's interpretation run (``train.json`` + ``interpret.json``) for several
datasets, each interpreted for the offline and the online (ProtoSeg loss) model, into the ProtoSeg paper's tables as
Markdown: Table 1 (output Dice and last-layer SA score), Table 2 (Dice at each coverage, images ranked by the mean SA
score mu, and by VoG), Table 3 (input separability S_x, output Dice, m(d)), the correlations of mu and VoG with the
Dice (Fig. 10), and one Fig. 5 per dataset with the offline and online curves.

It reads ``<eval_root>/<dataset>_<run>/layers.json`` and ``quality.json`` (``run`` in ``offline``, ``online``): the
``--interpret_dir`` given to the interpretation run::

    python -m monai.bundle run \
        --config_file "['bundles/protoseg/configs/train.json','bundles/protoseg/configs/interpret.json']" \
        --ckpt_path bundles/protoseg/models/jsrt_scr_224_offline/model.pt \
        --interpret_dir bundles/protoseg/eval/jsrt_scr_224_offline

Missing runs are left out of the tables.

Example::

    python scripts/protoseg_tables.py --eval_root bundles/protoseg/eval \
        --datasets "[kvasir_seg, jsrt_scr_224, dsb2018_stage1_train]"
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import fire

from monai_ext.utils import write_text
from monai_ext.visualize import plot_layer_scores

RUNS = ("offline", "online")


def _load(folder: Path) -> dict[str, Any] | None:
    if not (folder / "layers.json").is_file():
        return None
    out = {"layers": json.loads((folder / "layers.json").read_text())}
    if (folder / "quality.json").is_file():
        out["quality"] = json.loads((folder / "quality.json").read_text())
    return out


def _ms(stat: dict[str, float] | None) -> str:
    return "" if stat is None else f"{stat['mean']:.4f} ± {stat['std']:.2f}"


def _corr(value: float | None) -> str:
    return "" if value is None or math.isnan(value) else f"{value:.3f}"  # null (NaN) -> empty


def tables(
    eval_root: str = "bundles/protoseg/eval",
    datasets: Sequence[str] = ("kvasir_seg", "jsrt_scr_224", "dsb2018_stage1_train"),
    output: str | None = None,
) -> str:
    """
    Write the tables to ``output`` (default ``<eval_root>/protoseg_tables.md``) and the Fig. 5 comparisons to
    ``<eval_root>/<dataset>_layers.png``; return the Markdown.
    """
    root = Path(eval_root)
    results = {d: {r: _load(root / f"{d}_{r}") for r in RUNS} for d in datasets}
    found = [(d, r) for d in datasets for r in RUNS if results[d][r] is not None]
    if not found:
        raise FileNotFoundError(f"No interpretation output (layers.json) under {root}/<dataset>_<offline|online>/.")
    lines = ["### Table 1: output Dice and last-layer SA score (test split, mean ± std)", ""]
    lines += [
        "| dataset | offline: output | offline: S_f18 | online: output | online: S_f18 |",
        "|---|---|---|---|---|",
    ]
    for d in datasets:
        cells = []
        for r in RUNS:
            res = results[d][r]
            cells += [_ms(res["layers"]["output_dice"]), _ms(res["layers"]["last_layer"])] if res else ["", ""]
        lines.append(f"| {d} | " + " | ".join(cells) + " |")

    lines += ["", "### Table 2: output Dice of the images kept at each coverage (ranked by mu; by VoG)", ""]
    coverages = None
    for d, r in found:
        q = results[d][r].get("quality")
        if q and "mu" in q:
            coverages = [row["coverage"] for row in q["mu"]["coverage"]]
            break
    if coverages:
        lines += ["| dataset | run | ranked by | " + " | ".join(f"{c:.0%}" for c in coverages) + " |"]
        lines += ["|---|---|---|" + "---|" * len(coverages)]
        for d, r in found:
            q = results[d][r].get("quality") or {}
            for key in ("mu", "vog"):
                if key in q:
                    cells = [_ms(row) for row in q[key]["coverage"]]
                    lines.append(f"| {d} | {r} | {key} | " + " | ".join(cells) + " |")

    lines += ["", "### Table 3: input separability (offline model)", ""]
    lines += ["| dataset | S_x | output Dice | m(d) |", "|---|---|---|---|"]
    for d in datasets:
        res = results[d]["offline"]
        if res and "separability" in res["layers"]:
            sep = res["layers"]["separability"]
            lines.append(
                f"| {d} | {sep['sx']['mean']:.3f} | {sep['output_dice']['mean']:.3f} | {sep['m_d']['mean']:.3f} |"
            )

    lines += ["", "### Correlation with the output Dice (Fig. 10)", ""]
    lines += ["| dataset | run | images | mu: Pearson r | mu: Spearman rho | VoG: Pearson r | VoG: Spearman rho |"]
    lines += ["|---|---|---|---|---|---|---|"]
    for d, r in found:
        q = results[d][r].get("quality") or {}
        if "mu" not in q:
            continue
        mu, vog = q["mu"]["correlation"], q.get("vog", {}).get("correlation")
        cells = [_corr(mu["pearson_r"]), _corr(mu["spearman_rho"])]
        cells += [_corr(vog["pearson_r"]), _corr(vog["spearman_rho"])] if vog else ["", ""]
        lines.append(f"| {d} | {r} | {mu['n']} | " + " | ".join(cells) + " |")

    for d in datasets:
        runs = {r: results[d][r] for r in RUNS if results[d][r] is not None}
        if runs:
            first = next(iter(runs.values()))["layers"]["layers"]
            plot_layer_scores(
                {r: [row["mean"] for row in res["layers"]["layers"]] for r, res in runs.items()},
                [row["label"] for row in first],
                root / f"{d}_layers.png",
                references={r: res["layers"]["output_dice"]["mean"] for r, res in runs.items()},
                title=f"{d}: SA score per layer, offline vs online ProtoSeg",
            )
    text = "\n".join(lines) + "\n"
    path = Path(output) if output else root / "protoseg_tables.md"
    write_text(path, text)
    logging.getLogger("protoseg_tables").info("wrote %s", path)
    print(text)
    return str(path)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    fire.Fire(tables)
