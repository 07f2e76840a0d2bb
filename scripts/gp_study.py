"""
The deep input transfer study (Taghanaki et al., MICCAI 2019) on one dataset, with the baselines that tell whether GP
itself helps: every stage of ``bundles/gp_input_transfer``, then the paper's Table 1 (mean and standard error of Dice,
FPR and FNR per image) and its Fig. 4 (kernel density estimates). Every row is compared with ORIG and with the
end-to-end control image by image: the mean of the paired differences, their paired standard error, how many images
got better and worse, and the two-sided Wilcoxon signed-rank p-value (:func:`paired_difference`).

The rows (``METHODS``), each a ``python -m monai.bundle run`` of the bundle's configs over ``train.json`` (the command
lines are logged and kept in the JSON), into ``<work_dir>/<name>`` as the bundle root:

- ORIG (``train.json``): the U-Net segmenter, ``epochs`` epochs; every translator works in front of it;
- ORIG converged (``orig_converged.json`` + ``early_stop.json``): the same training from scratch until the validation
  Dice has not risen for ``patience`` epochs (at most ``max_epochs``), the best epoch kept;
- ORIG fine-tuned (``finetune.json``): ORIG's weights trained on for as many epochs as the GP_Ts translator trained
  (``finetune_epochs``): the segmenter gets the epochs the translator got;
- the control (``control.json``): the translator trained end to end through the frozen segmenter, no GP;
- GP_T and GP_Ts (``perturb.json`` at gamma 0.1 / 1, ``translator.json`` with L1 / SSIM + L1): the FC-DenseNet
  translator learning ``I -> I + Delta``;
- GP_cG (``train_cyclegan.json``) and, on request, GP_p2p (``train_pix2pix.json``, not in the paper) on the
  gamma 1 GP set, sized by ``gan`` (its generator options go to the evaluation too);
- the oracle (``evaluate_oracle.json``): GP of the test images toward their own labels, then ORIG.

Each method is trained, then scored on the test split (``evaluate.json`` + ``evaluate_<method>.json``), and the study's
files are rewritten after every stage (the JSON atomically), so a killed study keeps what it finished. Run again, it
goes on where it stopped: a finished training (its ``checkpoint.pt`` at its epochs, or stopped early) is skipped and an
unfinished one resumes from its checkpoint; a finished GP set made with the same ORIG is only read; an evaluation is
skipped while the model it scored (SHA-256 of its ``model.pt``, kept in the JSON) is unchanged. The JSON keeps for
every stage its command line and each run's wall-clock and CPU seconds, whether it resumed, and the load average when it
ended; for every row its translator, parameters, input size and epochs (trained, best, stopped early or not).

``--tables_from FILE.json`` runs no stage: it rewrites the tables (``FILE.md``) and the paired differences in
``FILE.json`` from the per-image values a study wrote before.

Example (CPU sizes)::

    python scripts/gp_study.py --dataset_dir ../shared/datasets/kvasir_seg --name kvasir_seg \
        --overrides "{'spatial_size': [64, 64], 'in_channels': 3, 'label_threshold': 128, \
'channels': [16, 32, 64, 128], 'strides': [2, 2, 2], 'num_res_units': 1, 'translator_layers': 56, 'growth_rate': 8, \
'init_features': 16, 'batch_size': 8}" \
        --epochs 10 --translator_epochs 5 --patience 5 \
        --gan "{'generator_features': 16, 'generator_blocks': 6, 'd_features': 16}"
    python scripts/gp_study.py --tables_from bundles/gp_input_transfer/docs/results/jsrt_scr_224_gp_study.json
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import sys
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import fire
import torch
from monai.bundle import ConfigParser, run

from monai_ext.metrics import paired_difference
from monai_ext.networks.nets.fc_densenet import FC_DENSENET_CONFIGS
from monai_ext.utils import file_sha256, write_json, write_text
from monai_ext.visualize import plot_metric_densities

CONFIGS = Path(__file__).resolve().parents[1] / "bundles" / "gp_input_transfer" / "configs"
#: the rows of the table, in their order, with their names (the paper's where it has them)
METHODS = {
    "orig": "ORIG",
    "orig_converged": "ORIG converged",
    "orig_finetuned": "ORIG fine-tuned",
    "control": "control (end to end)",
    "gp_t": "GP_T",
    "gp_ts": "GP_Ts",
    "gp_cg": "GP_cG",
    "gp_p2p": "GP_p2p (not in the paper)",
    "oracle": "oracle",
}
#: the rows a study produces unless told otherwise: all but the paired variant the paper does not have
DEFAULT_METHODS = tuple(m for m in METHODS if m != "gp_p2p")
#: the order the stages run in: the rows the verdict needs first (fine-tuning takes GP_Ts's epochs)
ORDER = ("orig", "gp_ts", "control", "orig_finetuned", "orig_converged", "gp_cg", "gp_t", "gp_p2p", "oracle")
#: every row is paired with these, where they were run
BASELINES = ("orig", "control")
#: the override configs (over train.json) of each training stage
TRAIN_CONFIGS = {
    "orig": (),
    "orig_converged": ("orig_converged", "early_stop"),
    "orig_finetuned": ("finetune",),
    "control": ("control",),
    "gp_t": ("translator",),
    "gp_ts": ("translator",),
    "gp_cg": ("train_cyclegan",),
    "gp_p2p": ("train_pix2pix",),
}
#: GP's step of the perturbed training set of each translator (the paper's GP_T: 0.1, the others: 1.0)
GAMMAS = {"gp_t": 0.1, "gp_ts": 1.0, "gp_cg": 1.0, "gp_p2p": 1.0}
LOSSES = {"gp_t": "l1", "gp_ts": "ssim_l1"}
GANS = ("gp_cg", "gp_p2p")
#: the options of a GAN translator that its evaluation must restate (the generator it builds)
GAN_EVAL_KEYS = ("generator_features", "generator_blocks", "generator_residual")
#: the networks a GAN stage trains beside the translator it is evaluated with (config ids)
GAN_EXTRA_NETWORKS = {
    "gp_cg": ("generator_ba_def", "discriminator_a_def", "discriminator_b_def"),
    "gp_p2p": ("discriminator_def",),
}
#: the table's metrics, each with whether a higher value is better
METRICS = {"dice": True, "fpr": False, "fnr": False}
PAIRING = (
    "by image name where both evaluations wrote the names of their images (per_image.json's names: the image files "
    "relative to their common folder), else by position (every evaluation scores the test split in its datalist "
    "order, unshuffled, batch 1); each comparison's paired_by says which"
)
STATISTICS = (
    "per image, d = method - baseline (images where either is undefined left out): mean of d, paired standard error "
    "= sample standard deviation of d / sqrt(n), images better / worse / equal (d = 0 exactly); two-sided Wilcoxon "
    "signed-rank test of d (scipy.stats.wilcoxon): zero differences are dropped before ranking (Wilcoxon's "
    "zero_method 'wilcox'; their count is 'equal'), tied |d| get average ranks; the p-value is exact when at most "
    "50 differences are left and none tie, otherwise from the normal approximation with scipy's tie correction, no "
    "continuity correction; none when every difference is zero"
)

logger = logging.getLogger("gp_study")
#: the command line of the study when it runs as a script (kept in its JSON)
COMMAND: str | None = None


# --- the paired statistics ----------------------------------------------------------------------------------------


def _add_paired(results: dict[str, dict]) -> None:
    """Each method's ``paired`` differences from each baseline run (``{baseline: {metric: ...}}``), in place."""
    for result in results.values():
        result.pop("paired", None)
    for method, result in results.items():
        paired = {}
        for baseline in BASELINES:
            if baseline in results and baseline != method:
                reference = results[baseline]
                paired[baseline] = {
                    metric: paired_difference(result["values"][metric], reference["values"][metric], higher,
                                              result.get("names"), reference.get("names"))
                    for metric, higher in METRICS.items()
                }  # fmt: skip
        result["paired"] = paired


# --- the stages ---------------------------------------------------------------------------------------------------


def _chain(*names: str) -> list[str]:
    """The bundle's config files ``train.json`` + ``names``, later ones overriding earlier ones."""
    return [str(CONFIGS / f"{name}.json") for name in ("train", *names)]


def _shell_value(value: Any) -> str:
    """One value as a shell word that ``monai.bundle run`` (python-fire) reads back as the same Python value."""
    text = value if isinstance(value, str) else repr(value)
    if shlex.quote(text) == text:
        return text
    return f'"{text}"' if not any(c in text for c in '$"`\\!') else shlex.quote(text)


def _command(config: list[str], overrides: Mapping[str, Any]) -> str:
    """The ``python -m monai.bundle run ...`` command line of ``run(config_file=config, **overrides)``."""
    files = [os.path.relpath(f) if Path(f).is_absolute() else f for f in config]
    files_arg = files[0] if len(files) == 1 else repr(files)
    args = " ".join(f"--{k} {_shell_value(v)}" for k, v in overrides.items())
    return f"python -m monai.bundle run --config_file {_shell_value(files_arg)} {args}"


def _checkpoint(ckpt_dir: Path) -> dict[str, Any] | None:
    """What a training run's ``checkpoint.pt`` says of its epochs: trained, best (by validation Dice), early stop."""
    path = ckpt_dir / "checkpoint.pt"
    if not path.is_file():
        return None
    state = torch.load(path, map_location="cpu", weights_only=True)
    trainer, run_state = state["trainer"], state.get("run_state", {})  # ignite's state dict; monai_ext.utils.RunState
    info = {
        "epochs": int(trainer["iteration"] // trainer["epoch_length"]),
        "max_epochs": int(trainer["max_epochs"]),
        "best_epoch": run_state.get("best_metric_epoch"),
        "best_validation_dice": run_state.get("best_metric"),
    }
    if "early_stop" in state:  # ignite's EarlyStopping (configs/early_stop.json)
        info["early_stop_counter"] = int(state["early_stop"]["counter"])
    return info


def _training_state(ckpt_dir: Path, epochs: int, patience: int | None = None) -> str:
    """``"done"`` (a model, and a checkpoint at ``epochs`` or stopped early), ``"resume"`` or ``"new"``."""
    info = _checkpoint(ckpt_dir)
    if info is None:
        return "new"
    stopped = patience is not None and info.get("early_stop_counter", 0) >= patience
    return "done" if (info["epochs"] >= epochs or stopped) and (ckpt_dir / "model.pt").is_file() else "resume"


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


class _Study:
    """One study's folder, its JSON (kept up to date after every stage) and its stages."""

    def __init__(self, root: Path, name: str, common: dict[str, Any], arguments: dict[str, Any]) -> None:
        self.root, self.name, self.common = root, name, common
        self.path = root / "gp_study.json"
        self.data: dict[str, Any] = json.loads(self.path.read_text()) if self.path.is_file() else {}
        self.data.update({"name": name, "dataset_dir": arguments["dataset_dir"], "overrides": common})
        self.data["arguments"] = arguments
        if COMMAND:
            self.data["command"] = COMMAND
        for key in ("seconds", "stages", "results"):
            self.data.setdefault(key, {})
        self.settings = {m: r["setting"] for m, r in self.data["results"].items() if "setting" in r}

    # the runs
    def run(self, stage: str, config: list[str], overrides: Mapping[str, Any], resumed: bool = False) -> None:
        command = _command(config, overrides)
        logger.info("%s: %s", stage, command)
        wall, cpu = time.perf_counter(), time.process_time()
        run(config_file=config[0] if len(config) == 1 else config, **overrides)
        record = self.data["stages"].setdefault(
            stage, {"runs": [{"seconds": self.data["seconds"][stage]}] if stage in self.data["seconds"] else []}
        )
        record["command"] = command
        record["runs"].append(
            {
                "seconds": round(time.perf_counter() - wall, 1),
                "cpu_seconds": round(time.process_time() - cpu, 1),
                "resumed": resumed,
                "finished": datetime.now(UTC).isoformat(timespec="seconds"),
                "load_average": [round(x, 2) for x in os.getloadavg()],
            }
        )
        starts = [i for i, r in enumerate(record["runs"]) if not r.get("resumed")]  # a run that started afresh
        record["seconds"] = round(sum(r["seconds"] for r in record["runs"][starts[-1] if starts else 0 :]), 1)
        self.data["seconds"][stage] = record["seconds"]
        self.save()

    def train(self, stage: str, config: list[str], ckpt_dir: Path, epochs: int, patience: int | None = None,
              **extra: Any) -> None:  # fmt: skip
        state = _training_state(ckpt_dir, epochs, patience)
        if state != "done":
            overrides = {**self.common, **extra, "epochs": epochs, "resume": state == "resume"}
            if patience is not None:
                overrides["early_stop_patience"] = patience
            self.run(stage, config, overrides, resumed=state == "resume")

    def perturb(self, gamma: float) -> None:
        """The GP training set at ``gamma``, unless a finished one made with the current ORIG is there."""
        content = self.root / "gp_data" / f"gamma_{gamma}" / "dataset.json"
        if content.is_file():
            written = json.loads(content.read_text())
            same = written.get("settings", {}).get("model_sha256") == file_sha256(self.root / "models" / "model.pt")
            if same and written.get("complete", {}).get("training"):
                return
        self.run(f"perturb gamma {gamma}", _chain("perturb"), {**self.common, "gp_gamma": gamma})

    def evaluate(self, method: str, config: list[str], overrides: Mapping[str, Any], ckpt: Path) -> None:
        """Score ``method`` on the test split unless its evaluation of the same model is there; collect its values."""
        stage = f"evaluate {METHODS[method]}"
        eval_dir = self.root / "eval" / method
        sha = file_sha256(ckpt)
        done = (eval_dir / "summary.json").is_file() and (eval_dir / "per_image.json").is_file()
        # a score the study did not record making (another run into the same eval folder) is made again
        if not done or self.data["stages"].get(stage, {}).get("model_sha256") != sha:
            self.run(stage, config, overrides)
            self.data["stages"][stage]["model_sha256"] = sha
        summary = json.loads((eval_dir / "summary.json").read_text())
        per_image = json.loads((eval_dir / "per_image.json").read_text())
        result = {"label": METHODS[method], "summary": summary["metrics"], "values": per_image["values"]}
        if "names" in per_image:
            result["names"] = per_image["names"]
        if method == "oracle":
            result["gp"] = json.loads((eval_dir / "gp.json").read_text())
        self.data["results"][method] = result
        self.save()

    # what the rows are
    def describe(self, method: str, config: list[str], overrides: Mapping[str, Any], extra_ids: Sequence[str] = (),
                 patience: int | None = None) -> None:  # fmt: skip
        """Keep ``method``'s translator, parameters, input size and epochs (from its config and checkpoint)."""
        parser = ConfigParser()
        parser.read_config(config)
        parser.update({k: v for k, v in overrides.items() if k not in ("resume", "overwrite")})
        network = parser.get_parsed_content("network_def")
        setting: dict[str, Any] = {
            "segmenter_parameters": _count(network.segmenter),
            "input_size": list(parser.get_parsed_content("spatial_size")),
            "scored_at": "the network's input size" if method == "oracle" else "each test image's own size",
        }
        if method in ("orig", "orig_converged", "orig_finetuned", "oracle"):
            setting.update({"translator": None, "translator_parameters": None, "trained_parameters": None})
        else:
            if method in GANS:
                features, blocks = parser["generator_features"], parser["generator_blocks"]
                setting["translator"] = f"ResNet generator ({features} first maps, {blocks} residual blocks)"
            else:
                layers = int(parser["translator_layers"])
                growth = parser["growth_rate"] or FC_DENSENET_CONFIGS[layers][2]
                setting["translator"] = f"FC-DenseNet-{layers} (growth {growth}, {parser['init_features']} first maps)"
            setting["translator_parameters"] = _count(network.translator)
            extra = sum(_count(parser.get_parsed_content(i)) for i in extra_ids)
            setting["trained_parameters"] = setting["translator_parameters"] + extra
        orig = _checkpoint(self.root / "models")
        if method == "oracle":
            setting["epochs"] = {"orig": orig, "gp_steps": parser["gp_num_steps"], "gp_gamma": parser["gp_gamma"]}
        elif method == "orig":
            setting["epochs"] = {"orig": orig}
        else:
            own = _checkpoint(self.root / "models" / method)
            setting["epochs"] = {"orig": orig, method: own}
            if patience is not None and own is not None:
                own["patience"] = patience
                own["stopped_early"] = own.get("early_stop_counter", 0) >= patience
        self.settings[method] = setting

    # the files
    def save(self, plot: bool = False) -> str:
        """Rewrite the JSON (atomically) and the tables from what the study holds now, and with ``plot`` Fig. 4."""
        results = {m: self.data["results"][m] for m in METHODS if m in self.data["results"]}
        self.data["results"] = results
        _add_paired(results)
        for method, result in results.items():
            if method in self.settings:
                result["setting"] = self.settings[method]
        table = _tables(results, self.name, self.data["seconds"])
        self.data.update({"pairing": PAIRING, "statistics": STATISTICS})
        write_json(self.path, self.data)
        write_text(self.root / "gp_study.md", table)
        curves = {r["label"]: r["values"] for m, r in results.items() if m != "oracle"}
        if plot and curves:
            plot_metric_densities(curves, self.root / "gp_study_kde.png", title=f"{self.name}: kernel density "
                                  "estimates over the test images")  # fmt: skip
        return table


def study(
    dataset_dir: str | None = None,
    name: str = "synthetic",
    work_dir: str = "bundles/gp_input_transfer/study",
    overrides: Mapping[str, Any] | None = None,
    epochs: int = 60,
    translator_epochs: int | None = None,
    control_epochs: int | None = None,
    gan_epochs: int | None = None,
    finetune_epochs: int | None = None,
    max_epochs: int = 300,
    patience: int = 10,
    translator_patience: int | None = None,
    gan: Mapping[str, Any] | None = None,
    methods: Sequence[str] = DEFAULT_METHODS,
    tables_from: str | None = None,
) -> str:
    """
    Run every stage of the study on one dataset and write ``<work_dir>/<name>/gp_study.{md,json}`` (Table 1 and the
    paired differences) and ``gp_study_kde.png`` (Fig. 4).

    Args:
        dataset_dir: the dataset folder; ``None``: the bundle's synthetic default data.
        name: the study's name, its folder under ``work_dir``.
        work_dir: where the studies go.
        overrides: config overrides of every stage (``spatial_size``, ``channels``, ``label_values``, ...).
        epochs: training epochs of ORIG, the segmenter every translator works with.
        translator_epochs: of the GP_T and GP_Ts translators (``None``: ``epochs``); with ``translator_patience``, the
            most they may train.
        control_epochs: of the end-to-end control (``None``: ``translator_epochs``).
        gan_epochs: of GP_cG and GP_p2p (``None``: ``translator_epochs``).
        finetune_epochs: of ORIG fine-tuned (``None``: the epochs GP_Ts's translator trained, else
            ``translator_epochs``).
        max_epochs: the most ORIG converged may train.
        patience: ORIG converged stops when its validation Dice has not risen for this many epochs.
        translator_patience: stop every translator (and the control) this way too (``None``: train them their epochs).
        gan: overrides of the GP_cG and GP_p2p stages (``generator_features``, ``generator_blocks``,
            ``generator_residual``, ``d_features``, ``lambda_cycle``, ...); the generator's go to their evaluation.
        methods: the rows to produce, names of ``METHODS`` (ORIG is always one: the others build on it).
        tables_from: a study's JSON written before (``gp_study.json``, or a copy of it under another name): run no
            stage, and rewrite its tables (the ``.md`` beside it, same stem) and the paired differences it holds from
            its per-image values. Every other argument is then ignored.

    Returns:
        the markdown tables (fire prints them).
    """
    logging.basicConfig(level=logging.INFO, format="%(asctime)s - %(name)s - %(levelname)s - %(message)s")
    if tables_from is not None:
        return _rewrite_tables(Path(tables_from))
    methods = list(methods)
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown methods {unknown}; choose from {list(METHODS)}.")
    translator_epochs = epochs if translator_epochs is None else translator_epochs
    control_epochs = translator_epochs if control_epochs is None else control_epochs
    gan_epochs = translator_epochs if gan_epochs is None else gan_epochs
    gan = dict(gan or {})
    root = Path(work_dir) / name
    common = {
        "bundle_root": str(root),
        **({"dataset_dir": dataset_dir} if dataset_dir else {}),
        **dict(overrides or {}),
    }
    arguments = {
        "dataset_dir": dataset_dir, "epochs": epochs, "translator_epochs": translator_epochs,
        "control_epochs": control_epochs, "gan_epochs": gan_epochs, "finetune_epochs": finetune_epochs,
        "max_epochs": max_epochs, "patience": patience, "translator_patience": translator_patience, "gan": gan,
        "methods": methods,
    }  # fmt: skip
    s = _Study(root, name, common, arguments)
    models = root / "models"
    stop = ("early_stop",) if translator_patience is not None else ()
    for method in ("orig", *(m for m in ORDER if m in methods and m != "orig")):
        train_extra: dict[str, Any] = {}
        eval_extra: dict[str, Any] = {}
        patience_of = None
        if method == "orig":
            s.train("train ORIG", _chain(), models, epochs)
        elif method == "orig_converged":
            patience_of = patience
            s.train("train ORIG converged", _chain(*TRAIN_CONFIGS[method]), models / method, max_epochs, patience)
        elif method == "orig_finetuned":
            gp_ts = _checkpoint(models / "gp_ts") if "gp_ts" in methods else None
            n = finetune_epochs or (gp_ts["epochs"] if gp_ts else translator_epochs)
            s.data["arguments"]["finetune_epochs_run"] = n
            s.train("train ORIG fine-tuned", _chain(*TRAIN_CONFIGS[method]), models / method, n)
        elif method in TRAIN_CONFIGS:
            patience_of = translator_patience
            train_extra = {"gp_gamma": GAMMAS[method]} if method in GAMMAS else {}
            if method in LOSSES:
                train_extra["translator_loss"] = LOSSES[method]
            if method in GANS:
                train_extra.update(gan)
                eval_extra = {k: v for k, v in gan.items() if k in GAN_EVAL_KEYS}
            n = {"control": control_epochs, "gp_cg": gan_epochs, "gp_p2p": gan_epochs}.get(method, translator_epochs)
            if method in GAMMAS:
                s.perturb(GAMMAS[method])
            s.train(f"train {METHODS[method]}", _chain(*TRAIN_CONFIGS[method], *stop), models / method, n,
                    translator_patience, **train_extra)  # fmt: skip
        if method == "oracle":
            eval_extra = {"gp_gamma": GAMMAS["gp_ts"]}
        s.describe(method, _chain(*TRAIN_CONFIGS.get(method, ())), {**s.common, **train_extra},
                   GAN_EXTRA_NETWORKS.get(method, ()), patience_of)  # fmt: skip
        config = _chain("evaluate") if method == "orig" else _chain("evaluate", f"evaluate_{method}")
        ckpt = models / "model.pt" if method in ("orig", "oracle") else models / method / "model.pt"
        s.evaluate(method, config, {**s.common, **eval_extra}, ckpt)
    return s.save(plot=True)


def _rewrite_tables(path: Path) -> str:
    """Rewrite the tables (``path`` with suffix ``.md``) and the paired differences of a study's JSON ``path``."""
    data = json.loads(path.read_text())
    name = data.get("name") or Path(data["overrides"]["bundle_root"]).name
    _add_paired(data["results"])
    table = _tables(data["results"], name, data.get("seconds", {}))
    write_text(path.with_suffix(".md"), table)
    write_json(path, {**data, "pairing": PAIRING, "statistics": STATISTICS})
    return table


# --- the tables ---------------------------------------------------------------------------------------------------


def _p(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.3f}" if value >= 0.001 else f"{value:.1e}"


def _parameters(n: int | None) -> str:
    return "-" if n is None else f"{n / 1e6:.2f}M" if n >= 100_000 else f"{n / 1e3:.1f}k"


def _epochs(method: str, setting: Mapping[str, Any]) -> str:
    """The epochs a row trained: ORIG's, and its own stage's (best epoch, early stop)."""
    epochs = setting.get("epochs", {})
    orig = epochs.get("orig") or {}
    base = f"ORIG {orig.get('epochs', '?')} (best {orig.get('best_epoch', '?')})"
    if method == "orig":
        return base
    if method == "oracle":
        return f"{base} + GP of the test images (K {epochs.get('gp_steps')}, gamma {epochs.get('gp_gamma')})"
    own = epochs.get(method) or {}
    text = f"{own.get('epochs', '?')} (best {own.get('best_epoch', '?')})"
    if "patience" in own:
        limit = "stopped early" if own.get("stopped_early") else "reached the cap"
        text = f"{own.get('epochs', '?')} of at most {own.get('max_epochs')} ({limit}, patience {own['patience']}; best " \
               f"{own.get('best_epoch', '?')})"  # fmt: skip
    return text if method == "orig_converged" else f"{base} + {text}"


def _tables(results: Mapping[str, Mapping[str, Any]], name: str, seconds: Mapping[str, float] | None = None) -> str:
    """
    Table 1 (per row: translator, parameters, input size, epochs, images, mean +- standard error of Dice, FPR and
    FNR), one table of paired differences per metric (from ORIG and from the control: mean +- paired standard error,
    images better / worse / equal, Wilcoxon p) and the seconds of every stage.
    """
    lines = [
        (
            f"**{name}**: mean +- standard error over the test images. Translator parameters: the network in front of the "
            "segmenter at test time (in brackets: all the stage trained, e.g. a Cycle-GAN's second generator and "
            "discriminators); epochs: ORIG's (best by validation Dice) + the row's own stage's."
        ),
        "",
        "| method | translator | translator parameters | input size | epochs | images | Dice | FPR | FNR |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for method, result in results.items():
        setting = result.get("setting") or {}
        translator = setting.get("translator") or ("-" if setting else "")
        params = _parameters(setting.get("translator_parameters")) if setting else ""
        if setting.get("trained_parameters") not in (None, setting.get("translator_parameters")):
            params += f" ({_parameters(setting['trained_parameters'])})"
        size = "x".join(str(s) for s in setting.get("input_size", []))
        cells = [f"{result['summary'][m]['mean']:.4f} +- {result['summary'][m]['standard_error']:.4f}" for m in METRICS]
        epochs = _epochs(method, setting) if setting else ""
        lines.append(f"| {result['label']} | {translator} | {params} | {size} | {epochs} | "
                     f"{result['summary']['dice']['n']} | " + " | ".join(cells) + " |")  # fmt: skip
    segmenters = {r["setting"]["segmenter_parameters"] for r in results.values() if r.get("setting")}
    if segmenters:
        lines += ["", f"Segmenter (U-Net) parameters: {', '.join(_parameters(n) for n in sorted(segmenters))}."]
    baselines = [b for b in BASELINES if b in results]
    for metric, higher in METRICS.items():
        label = {"dice": "Dice", "fpr": "FPR", "fnr": "FNR"}[metric]
        lines += [
            "",
            (
                f"**{label}, paired per image** ({'higher' if higher else 'lower'} is better): mean of (method - "
                "baseline) +- paired standard error (standard deviation of the differences / sqrt(n)); images better / "
                "worse / equal; two-sided Wilcoxon signed-rank p (zero differences dropped)"
            ),
            "",
            "| method | "
            + " | ".join(f"- {results[b]['label']} | better / worse / equal | p" for b in baselines)
            + " |",
            "|---|" + "---|---|---|" * len(baselines),
        ]
        for result in results.values():
            cells = []
            for baseline in baselines:
                paired = (result.get("paired") or {}).get(baseline, {}).get(metric)
                if paired is None:
                    cells += ["", "", ""]
                    continue
                cells += [
                    f"{paired['mean']:+.4f} +- {paired['standard_error']:.4f}",
                    f"{paired['better']} / {paired['worse']} / {paired['equal']}",
                    _p(paired["wilcoxon"]["p_value"]),
                ]
            lines.append(f"| {result['label']} | " + " | ".join(cells) + " |")
    pairing = {p["paired_by"] for r in results.values() for b in (r.get("paired") or {}).values() for p in b.values()}
    if pairing:
        lines += ["", f"Images paired by {' and '.join(sorted(pairing))}."]
    if seconds:
        lines += ["", "| stage | seconds (wall clock) |", "|---|---|"]
        lines += [f"| {stage} | {value:.1f} |" for stage, value in seconds.items()]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    threads = f"OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']} " if "OMP_NUM_THREADS" in os.environ else ""
    COMMAND = threads + " ".join(["python", os.path.relpath(sys.argv[0]), *map(_shell_value, sys.argv[1:])])
    fire.Fire(study)
