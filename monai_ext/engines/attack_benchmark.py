"""
One robustness benchmark across bundles: a bundle's trained network on its test split under the targeted I-FGSM of
the NLCEN paper, PGD-40, SegPGD-100, CosPGD-100 and the worst-case ensemble, at several budgets; one table (Markdown
and JSON) and one figure per bundle. Run as ``python -m monai_ext robustness --bundle bundles/<name>``.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from monai.bundle import ConfigParser

from monai_ext.attacks import PGD, CosPGD, IterativeFGSM, SegPGD, ensemble_attack
from monai_ext.engines.robustness import RobustnessSweep
from monai_ext.utils.bundle import load_weights
from monai_ext.utils.checks import check_choice, check_positive_int
from monai_ext.utils.files import write_json, write_text
from monai_ext.visualize import plot_robustness_curves

__all__ = ["ATTACKS", "benchmark_attack", "bundle_robustness"]

logger = logging.getLogger(__name__)

#: the attacks of the benchmark: name -> (name in the table, default number of steps; None: Kurakin's schedule)
ATTACKS: dict[str, tuple[str, int | None]] = {
    "ifgsm": ("targeted I-FGSM", None),
    "pgd": ("PGD", 40),
    "segpgd": ("SegPGD", 100),
    "cospgd": ("CosPGD", 100),
    "ensemble": ("ensemble", 100),
}
_PGD_FAMILY = {"pgd": PGD, "segpgd": SegPGD, "cospgd": CosPGD}


def benchmark_attack(eps: float, attack: str, num_steps: int | None = None, seed: int = 0) -> Any:
    """
    The attack ``attack`` of :py:data:`ATTACKS` at budget ``eps`` (levels, images in ``[0, 1]``).

    - ``"ifgsm"``: :py:class:`~monai_ext.attacks.IterativeFGSM` toward the inverse of the ground truth, step one level,
      Kurakin's schedule (or ``num_steps``); its budgets share their trajectory in a sweep;
    - ``"pgd"``, ``"segpgd"``, ``"cospgd"``: untargeted, a random start (seeded) and the step
      ``alpha = 2.5 eps / num_steps`` (Madry et al.'s rule);
    - ``"ensemble"``: :py:func:`~monai_ext.attacks.ensemble_attack`, the worst case per image of APGD (CE, JSD,
      masked CE), SegPGD and CosPGD.
    """
    attack = check_choice("attack", attack, tuple(ATTACKS))
    steps = ATTACKS[attack][1] if num_steps is None else check_positive_int("num_steps", num_steps)
    if attack == "ifgsm":
        return IterativeFGSM(eps, num_steps=steps, target="inverse")
    if attack == "ensemble":
        return ensemble_attack(eps, num_steps=steps)
    return _PGD_FAMILY[attack](eps, 2.5 * eps / steps, steps, random_start=True, seed=seed)


def _load_bundle(bundle: Path, split: str, max_images: int | None, overrides: dict[str, Any]):
    """The network, the dataloader of ``split``, the number of classes and the device of a bundle's ``train.json``
    with ``overrides`` (config ids to values, ``bundle_root`` among them)."""
    parser = ConfigParser()
    parser.read_config(str(bundle / "configs" / "train.json"))
    for key, value in overrides.items():
        parser[key] = value
    limit = "" if max_images is None else int(max_images)
    parser["validate#datalist"] = f"$monai_ext.data.load_datalist(@data_root, {split!r})[:{limit}]"
    parsed = {k: parser.get_parsed_content(k) for k in ("network", "validate#dataloader", "num_classes", "device")}
    return parsed["network"], parsed["validate#dataloader"], int(parsed["num_classes"]), parsed["device"]


def bundle_robustness(
    bundle: str | Path,
    ckpt_path: str | Path | None = None,
    dataset_dir: str | Path | None = None,
    output_dir: str | Path | None = None,
    split: str = "test",
    epsilons: Sequence[float] = (0, 1, 2, 4, 8),
    attacks: Sequence[str] = tuple(ATTACKS),
    num_steps: int | None = None,
    max_images: int | None = None,
    overwrite: bool = False,
    **overrides: Any,
) -> dict[str, Any]:
    """
    Evaluate a bundle's trained network on its ``split`` under each attack of ``attacks`` at each budget.

    Each attack is a :py:class:`~monai_ext.engines.RobustnessSweep` that writes ``output_dir/sweeps/robustness_<attack>.json``
    after every budget, so a killed run resumes where it stopped (the budgets of I-FGSM share their trajectory);
    progress is logged per batch. At the end, ``output_dir/attack_benchmark.md`` and ``.json`` hold the table (mean
    Dice and mean Jaccard per attack and budget) and ``output_dir/attack_benchmark.png`` the curves.

    Args:
        bundle: the bundle folder, with ``configs/train.json`` (its ``network``, ``validate#dataloader``,
            ``num_classes``, ``device``, ``data_root``).
        ckpt_path: the trained weights; ``<bundle_root>/models/model.pt`` by default (``bundle_root``: ``bundle``
            unless overridden).
        dataset_dir: the dataset (the bundles' ``--dataset_dir``); the bundle's default (synthetic) data if ``None``.
        output_dir: where the results go; ``<bundle_root>/eval/attack_benchmark`` by default.
        split: the datalist split to evaluate, ``"test"`` by default.
        epsilons: the budgets in intensity levels of an 8-bit scale (images in ``[0, 1]``); 0 is the clean score.
        attacks: names from :py:data:`ATTACKS`.
        num_steps: the steps of every attack instead of its own (for a quick run); ``None``: I-FGSM Kurakin's
            schedule, PGD 40, SegPGD, CosPGD and the ensemble's attacks 100.
        max_images: evaluate only the first images of the split.
        overwrite: replace sweep files of other settings instead of refusing.
        overrides: more overrides of ``train.json``'s ids, as on ``monai.bundle run``'s command line (``--batch_size
            4``, ``--spatial_size "[128,128]"``, ``--bundle_root DIR``); the network's must match the weights.

    Returns:
        the table: ``{"bundle", "split", "num_images", "epsilons", "attacks": [{"attack", "label", "settings",
        "results"}]}``.
    """
    bundle = Path(bundle)
    if not (bundle / "configs" / "train.json").is_file():
        raise FileNotFoundError(f"{bundle} is not a bundle folder: {bundle / 'configs' / 'train.json'} does not exist.")
    overrides = {"bundle_root": str(bundle), **overrides}
    if dataset_dir is not None:
        overrides["dataset_dir"] = str(dataset_dir)
    root = Path(overrides["bundle_root"])
    ckpt_path = Path(ckpt_path) if ckpt_path is not None else root / "models" / "model.pt"
    if not ckpt_path.is_file():
        raise FileNotFoundError(f"no trained weights at {ckpt_path}: train the bundle first, or pass --ckpt_path.")
    names = [check_choice("attacks", name, tuple(ATTACKS)) for name in attacks]
    output_dir = Path(output_dir) if output_dir is not None else root / "eval" / "attack_benchmark"
    network, dataloader, num_classes, device = _load_bundle(bundle, split, max_images, overrides)
    load_weights(network, str(ckpt_path), device)
    table = {"bundle": bundle.name, "split": split, "weights": str(ckpt_path), "num_images": len(dataloader.dataset)}
    table["epsilons"], table["attacks"] = [float(e) for e in epsilons], []
    for index, name in enumerate(names):
        steps = ATTACKS[name][1] if num_steps is None else num_steps
        label = ATTACKS[name][0] if steps is None else f"{ATTACKS[name][0]}-{steps}"
        logger.info("attack %d/%d: %s on %d images of %s", index + 1, len(names), label, table["num_images"], bundle)
        factory = functools.partial(benchmark_attack, attack=name, num_steps=num_steps)
        sweep = RobustnessSweep(network, dataloader, factory, epsilons, num_classes, device=device,
                                output_dir=output_dir / "sweeps", name=f"robustness_{name}", label=label,
                                overwrite=overwrite)  # fmt: skip
        summary = sweep.run()
        table["attacks"].append({"attack": name, "label": label, "settings": summary["attacks"], **summary})
    write_json(output_dir / "attack_benchmark.json", table)
    write_text(output_dir / "attack_benchmark.md", markdown_table(table))
    plot_robustness_curves(table["attacks"], output_dir / "attack_benchmark.png", title=f"{bundle.name}: {split} split",
                           xlabel="epsilon (levels of 255)")  # fmt: skip
    logger.info("wrote %s (.md, .json, .png)", output_dir / "attack_benchmark")
    return table


def markdown_table(table: dict[str, Any]) -> str:
    """The benchmark's table in Markdown: one row per attack, mean Dice (mean Jaccard) per budget."""
    epsilons = table["epsilons"]
    lines = [
        f"# {table['bundle']}: robustness on the {table['split']} split ({table['num_images']} images)",
        "",
        f"Mean Dice (mean Jaccard), background excluded; weights {table['weights']}; budgets in levels of 255.",
        "",
        "| attack | " + " | ".join(f"eps {e:g}" for e in epsilons) + " |",
        "|---|" + "---|" * len(epsilons),
    ]
    for attack in table["attacks"]:
        by_eps = {r["epsilon"]: r for r in attack["results"]}
        cells = [_cell(by_eps.get(e)) for e in epsilons]
        lines.append(f"| {attack['label']} | " + " | ".join(cells) + " |")
    settings = {a["label"]: a["settings"][-1] if a["settings"] else {} for a in table["attacks"]}
    lines += ["", "Settings at the largest budget:", "", "```json", json.dumps(settings, indent=1), "```", ""]
    return "\n".join(lines)


def _cell(result: dict[str, Any] | None) -> str:
    if result is None or result.get("mean_dice") is None:
        return "-"
    jaccard = result.get("mean_jaccard")
    return f"{result['mean_dice']:.4f}" + ("" if jaccard is None else f" ({jaccard:.4f})")
