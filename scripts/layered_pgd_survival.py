"""
How much of each pass of method 1 (``monai_ext.attacks.LayeredPGD``) survives to the end of the chain, under both
readings of what bounds it: one ball of radius ``eps`` per pass (``per_pass_ball=True``, the default, eq. 2) and one
ball around the clean images for the whole chain (``per_pass_ball=False``).

Model 1 of a finished robust-training study (``scripts/robust_training_study.py``) attacks the first ``num_images``
training images (the images method 1 is built from, preprocessed as for the build) with the study's method-1 attack
(``layered_pgd_attack`` of the bundle's ``train.json`` under the same overrides) under both readings, keeping the
images after every pass (``LayeredPGD.passes``): ``x_0`` the clean images, ``x_k`` after the pass toward class
``classes[k - 1]``, ``x_K`` the result. For each pass ``k``, with ``d = x_K - x_0`` the final perturbation:

- ``own``: the fraction of the pixels that pass ``k`` moved (``x_k - x_{k-1} != 0``) where ``d`` has the sign of that
  move: 1 when the pass's pattern is all still there, about 0.5 when the later passes left no trace of it;
- ``chain``: the same with the chain up to and including pass ``k``, ``x_k - x_0``;
- ``own_vs_last_only``: the control, the sign agreement of the pass's own move with a plain PGD toward the last class
  from the clean images (``PGD``, the same steps, step size and ``eps``, no random start), what ``own`` would be if the
  chain's result were that attack alone;
- ``own_where_last_differs``: ``own`` on the pixels where the pass's move and that last-class-only PGD disagree in sign
  (where the two push apart, so the control's correlation does not count): about 0 when the last pass overwrites;
- ``effect``: what of the pass's pull toward its class is left at the end, ``(L(x_0) - L(x_K)) / (L(x_0) - L(x_k))``
  with ``L`` model 1's cross-entropy toward the full-area target of the pass's class (per image; 1: all of it, 0:
  none, negative: pushed back; NaN where the pass did not lower ``L``);

and for the chain, ``final_vs_last_only``: the sign agreement of ``d`` with that last-class-only PGD, ``linf`` the
largest ``|d|`` (in the unit of the images, ``[0, 1]``) and ``predicted``: the fraction of the pixels of ``x_K`` that
model 1 predicts as each class (the draft's Fig. 1: a fragmented prediction where the earlier passes' patterns
survive). Each value is the mean over the images with its standard error (the sign agreements are per image).

Writes ``<output>.json`` and ``<output>.md`` (the table) and prints the table. Example (the JSRT study of the
bundle's docs, whose overrides it repeats)::

    python scripts/layered_pgd_survival.py --work_dir bundles/robust_training/study/jsrt_scr_224 \
        --output bundles/robust_training/docs/results/jsrt_scr_224_layered_pgd_survival \
        --dataset_dir ../shared/datasets/jsrt_scr_224 --spatial_size "[96, 96]" --channels "[8, 16, 32, 64]" \
        --num_res_units 1 --build_steps 50
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from pathlib import Path
from typing import Any

import fire
import torch
import torch.nn.functional as F
from monai.data import list_data_collate

from monai_ext.attacks import PGD, LayeredPGD
from monai_ext.metrics import mean_standard_error
from monai_ext.utils import load_weights, write_json, write_text

CONFIGS = Path(__file__).resolve().parents[1] / "bundles" / "robust_training" / "configs"
#: the two readings: name -> ``per_pass_ball``
READINGS = {"per-pass balls (default)": True, "one ball (per_pass_ball=False)": False}

logger = logging.getLogger("layered_pgd_survival")


def sign_agreement(reference: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    """
    Per image, the fraction of the elements where ``reference`` is not zero that ``other`` has the same sign at.

    Args:
        reference: ``(B, ...)``, the perturbation whose pattern is looked for.
        other: ``(B, ...)``, the perturbation it is looked for in.

    Returns:
        ``(B,)`` float64 in ``[0, 1]``; NaN for an image where ``reference`` is zero everywhere.
    """
    moved = reference.flatten(1) != 0
    same = (reference.flatten(1).sign() == other.flatten(1).sign()) & moved
    return same.sum(1).double() / moved.sum(1).double()


def target_loss(network: torch.nn.Module, images: torch.Tensor, target: int) -> torch.Tensor:
    """Per image ``(B,)``, the mean over the pixels of the cross-entropy of ``network``'s logits toward class ``target``."""
    with torch.no_grad():
        logits = network(images)
        labels = torch.full((logits.shape[0], *logits.shape[2:]), target, dtype=torch.long, device=logits.device)
        return F.cross_entropy(logits, labels, reduction="none").flatten(1).mean(1).double()


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _summary(values: torch.Tensor) -> dict[str, float]:
    stats = mean_standard_error(values.double().cpu())
    return {"mean": stats["mean"], "standard_error": stats["standard_error"], "n": stats["n"]}


def survival(
    network: torch.nn.Module, attack: LayeredPGD, images: torch.Tensor, labels: torch.Tensor
) -> dict[str, Any]:
    """
    The survival of each pass of ``attack`` on one batch (see the module's docstring).

    Args:
        network: model 1, logits ``(B, C, H, W)``.
        attack: the method-1 attack, with its ``classes`` given or read from ``network``.
        images: ``(B, C_in, H, W)`` in the attack's data range.
        labels: ``(B, 1, H, W)`` class indices.

    Returns:
        ``{"classes", "passes": [{"target", "own", "chain", "own_vs_last_only", "own_where_last_differs", "effect"},
        ...], "final_vs_last_only", "linf", "predicted"}``, each value ``{"mean", "standard_error", "n"}`` over the images.
    """
    passes = attack.passes(network, images, labels)
    classes = attack.classes or list(range(max(int(network(images[:1]).shape[1]), 2)))
    last_only = PGD(
        attack.eps, attack.alpha, attack.num_steps, attack.norm, False, attack.unit, attack.data_range,
        attack.loss, target=classes[-1], inferer=attack.inferer,
    )(network, images, labels) - images  # fmt: skip
    final = passes[-1] - images
    rows = []
    for k, (start, end) in enumerate(zip([images, *passes[:-1]], passes, strict=True)):
        own = end - start
        conflict = own * (own.sign() != last_only.sign())
        clean_loss, pass_loss, final_loss = (target_loss(network, x, classes[k]) for x in (images, end, passes[-1]))
        gained = clean_loss - pass_loss
        rows.append(
            {
                "target": classes[k],
                "own": _summary(sign_agreement(own, final)),
                "chain": _summary(sign_agreement(end - images, final)),
                "own_vs_last_only": _summary(sign_agreement(own, last_only)),
                "own_where_last_differs": _summary(sign_agreement(conflict, final)),
                "effect": _summary(torch.where(gained > 0, (clean_loss - final_loss) / gained, torch.nan)),
            }
        )
    with torch.no_grad():
        predicted = network(passes[-1]).argmax(1)
    fractions = {str(c): _summary((predicted == c).flatten(1).double().mean(1)) for c in range(len(classes))}
    return {
        "classes": classes,
        "passes": rows,
        "final_vs_last_only": _summary(sign_agreement(final, last_only)),
        "linf": _summary(final.flatten(1).abs().amax(1)),
        "predicted": fractions,
    }


def _cell(stats: dict[str, float]) -> str:
    return f"{stats['mean']:.3f} ({stats['standard_error']:.3f})"


def table(results: dict[str, dict[str, Any]], class_names: list[str]) -> str:
    """The markdown table of :func:`survival` for each reading: one row per pass, then one for the chain."""
    keys = {
        "own": "own",
        "chain": "chain",
        "own_vs_last_only": "own vs last-only PGD",
        "own_where_last_differs": "own where last-only PGD differs",
        "effect": "effect left",
    }
    lines = ["| reading | pass: target | " + " | ".join(f"{v} (SE)" for v in keys.values()) + " |"]
    lines.append("|---" * (2 + len(keys)) + "|")
    for reading, result in results.items():
        for k, row in enumerate(result["passes"], 1):
            cells = [f"{k}: {class_names[row['target']]}", *(_cell(row[key]) for key in keys)]
            lines.append(f"| {reading} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "| reading | final vs last-only PGD (SE) | max abs perturbation (SE) | "
        + " | ".join(f"predicted {c} (SE)" for c in class_names)
        + " |",
        "|---" * (3 + len(class_names)) + "|",
    ]
    for reading, result in results.items():
        cells = [_cell(result["final_vs_last_only"]), _cell(result["linf"])]
        cells += [_cell(result["predicted"][str(c)]) for c in range(len(class_names))]
        lines.append(f"| {reading} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(work_dir: str, output: str, num_images: int = 16, trained: bool = True, **overrides: Any) -> str:
    """
    Measure both readings with model 1 of the study ``work_dir`` and write ``<output>.json`` and ``<output>.md``.

    Args:
        work_dir: a finished study's ``work_dir`` (its model 1: ``models/model.pt``).
        output: the path of the result files without their suffix.
        num_images: how many training images (the first ones of the split).
        trained: ``False``: model 1's network as initialised (seed 0), not trained, for comparison.
        overrides: the study's bundle overrides (``--dataset_dir``, sizes, ``--build_steps`` ...).

    Returns:
        the markdown table.
    """
    from monai.bundle import ConfigParser

    logging.basicConfig(level=logging.INFO, format="%(asctime)s - %(name)s - %(levelname)s - %(message)s")
    parser = ConfigParser()
    parser.read_config(str(CONFIGS / "train.json"))
    parser.update({"bundle_root": work_dir, **overrides})
    weights = Path(work_dir) / "models" / "model.pt"
    torch.manual_seed(0)
    network = parser.get_parsed_content("network_def")
    network = (load_weights(network, weights, "cpu") if trained else network).eval()
    model = f"model 1 of `{work_dir}` (`models/model.pt`, SHA-256 {_sha256(weights)[:16]})"
    preprocessing = parser.get_parsed_content("preprocessing")
    datalist = parser.get_parsed_content("train#datalist")[:num_images]
    batch = list_data_collate([preprocessing(dict(item)) for item in datalist])
    images, labels = batch["image"].as_tensor(), batch["label"].as_tensor()
    results, seconds = {}, {}
    for reading, per_pass_ball in READINGS.items():
        parser["build_per_pass_ball"] = per_pass_ball
        attack = parser.get_parsed_content("layered_pgd_attack", lazy=False)
        start = time.perf_counter()
        results[reading] = {"settings": attack.settings(), **survival(network, attack, images, labels)}
        seconds[reading] = round(time.perf_counter() - start, 1)
        logger.info("%s: %.1f s", reading, seconds[reading])
    class_names = list(parser["class_names"])
    text = table(results, class_names)
    header = (
        f"Survival of each pass of method 1 (`scripts/layered_pgd_survival.py`): "
        f"{model if trained else 'the network of model 1, as initialised (seed 0), not trained'}, the first "
        f"{len(datalist)} training images; per image, mean (standard error) over the images.\n\n"
    )
    write_text(f"{output}.md", header + text)
    write_json(
        f"{output}.json",
        {
            "work_dir": work_dir,
            "weights": {"file": str(weights), "sha256": _sha256(weights)} if trained else "initialised, seed 0",
            "images": [os.path.relpath(item["image"]) for item in datalist],
            "overrides": overrides,
            "class_names": class_names,
            "seconds": seconds,
            "readings": results,
        },
    )
    return header + text


if __name__ == "__main__":
    fire.Fire(main)
