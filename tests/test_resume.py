"""
Training runs never replace an earlier run's checkpoints unasked, resume where a killed run stopped (and end where an
uninterrupted run ends), and refuse an ``init_ckpt`` of another network.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from conftest import BUNDLES, config_files, read_bundle_config, run_bundle_configs, state_leaves, tiny
from ignite.engine import Engine, Events
from monai.bundle import create_workflow
from monai.handlers import CheckpointLoader, CheckpointSaver

from monai_ext.data import make_synthetic_dataset
from monai_ext.utils import RunState, load_weights, prepare_ckpt_dir

pytestmark = pytest.mark.usefixtures("one_thread")

#: the config chains that train, each with what its checkpoint must hold
TRAINING = [
    pytest.param("nlcen", ["train"], id="nlcen"),
    pytest.param("protoseg", ["train"], id="protoseg"),
    pytest.param("protoseg", ["train", "train_online"], id="protoseg-online"),
    pytest.param("sagan_seg", ["train"], id="sagan_seg"),
    pytest.param("sagan_seg", ["train", "unet_baseline"], id="sagan_seg-unet_baseline"),
]


class Killed(Exception):
    """Stands for the run being killed."""


def _kill_after_first_epoch(trainer: Any) -> None:
    """Raise at the end of epoch 1, after every handler of the bundle (the checkpoint saver included) has run."""

    def kill(engine: Any) -> None:
        raise Killed(f"killed after epoch {engine.state.epoch}")

    trainer.add_event_handler(Events.EPOCH_COMPLETED(once=1), kill)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> str:
    root = tmp_path_factory.mktemp("resume_data")
    return str(make_synthetic_dataset(root, num_training=8, num_validation=4, num_test=0, spatial_size=(48, 48)))


def _args(bundle: str, root: Path, data: str) -> dict[str, Any]:
    return {"bundle_root": str(root), "dataset_dir": data, "batch_size": 4, **tiny(bundle), "spatial_size": [32, 32]}


def _raises(match: str, run: Callable[[], Any]) -> None:
    """``run()`` raises an error (MONAI wraps a config's errors) whose chain of causes says ``match``."""
    with pytest.raises(Exception) as info:
        run()
    chain, error = [], info.value
    while error is not None:
        chain.append(str(error))
        error = error.__cause__
    assert any(match in message for message in chain), chain


@pytest.mark.parametrize("bundle, chain", TRAINING)
def test_checkpoint_holds_every_stateful_part(bundle: str, chain: list[str], tmp_path: Path) -> None:
    """The resume checkpoint names every network and optimiser of the run, its scheduler, trainer and run state."""
    parser = read_bundle_config(bundle, chain, bundle_root=str(tmp_path))
    saved = set(parser["checkpoint"])
    expected = {"network", "optimizer", "trainer", "run_state"}
    expected |= {"lr_scheduler"} if "lr_scheduler" in parser else {"discriminator", "d_optimizer"}
    assert saved == expected, saved
    assert (
        parser["train#trainer"]["optimizer"] == "@optimizer" and parser["validate#handlers"][-1] == "@best_model_saver"
    )


@pytest.mark.slow
@pytest.mark.parametrize("bundle, chain", TRAINING)
def test_killed_run_resumes_to_the_uninterrupted_result(bundle: str, chain: list[str], tmp_path: Path, data) -> None:
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    run_bundle_configs(bundle, chain, epochs=2, **_args(bundle, whole, data))
    initialize = [*read_bundle_config(bundle, chain)["initialize"], "$@kill(@train#trainer)"]
    args = _args(bundle, killed, data)
    _raises("killed after epoch 1", lambda: run_bundle_configs(bundle, chain, epochs=2, initialize=initialize,
                                                               kill=_kill_after_first_epoch, **args))  # fmt: skip
    models = {root.name: Path(read_bundle_config(bundle, chain, bundle_root=str(root)).get_parsed_content("ckpt_dir"))
              for root in (whole, killed)}  # fmt: skip
    assert torch.load(models["killed"] / "checkpoint.pt", weights_only=True)["trainer"]["iteration"] == 2
    run_bundle_configs(bundle, chain, epochs=2, resume=True, **args)

    final = {}
    for name, folder in models.items():
        checkpoint = torch.load(folder / "checkpoint.pt", weights_only=True)
        best = torch.load(folder / "model.pt", weights_only=True)
        final[name] = {**state_leaves(checkpoint), **state_leaves(best, "best.")}
    assert final["killed"]["trainer.iteration"] == 4 and final["killed"]["run_state.best_metric_epoch"] >= 1
    assert final["whole"].keys() == final["killed"].keys()
    differ = [
        key
        for key, value in final["whole"].items()
        if not (torch.equal(value, final["killed"][key]) if isinstance(value, torch.Tensor) else value == final["killed"][key])
    ]  # fmt: skip
    assert not differ, differ  # weights, optimiser and scheduler states, best metric, random generators


@pytest.mark.slow
def test_second_run_into_a_folder_is_refused_unless_asked(tmp_path: Path, data) -> None:
    bundle, args = "nlcen", _args("nlcen", tmp_path, data)
    run_bundle_configs(bundle, "train", epochs=1, **args)
    models = tmp_path / "models"
    best = (models / "model.pt").read_bytes()
    _raises("--overwrite True", lambda: run_bundle_configs(bundle, "train", epochs=1, **args))
    assert (models / "model.pt").read_bytes() == best  # untouched
    _raises("not both", lambda: run_bundle_configs(bundle, "train", resume=True, overwrite=True, **args))
    elsewhere = {**args, "ckpt_dir": str(tmp_path / "elsewhere")}
    _raises("no checkpoint.pt", lambda: run_bundle_configs(bundle, "train", resume=True, **elsewhere))
    run_bundle_configs(bundle, "train", epochs=1, overwrite=True, learning_rate=0.01, **args)
    assert (models / "model.pt").read_bytes() != best
    # MONAI Label fine-tunes models/model.pt by putting a CheckpointLoader of it first in train#handlers
    loader = {
        "_target_": "CheckpointLoader",
        "load_path": str(models / "model.pt"),
        "load_dict": {"model": "$@network"},
    }
    handlers = [loader, *read_bundle_config(bundle, "train")["train#handlers"]]
    run_bundle_configs(bundle, "train", epochs=1, **{"train#handlers": handlers}, **args)


def test_prepare_ckpt_dir(tmp_path: Path) -> None:
    models = tmp_path / "models"
    assert prepare_ckpt_dir(models) is None and models.is_dir()  # a new folder
    (models / "epochs").mkdir()
    for name in ("model.pt", "checkpoint.pt", "epochs/model_epoch=1.pt", "notes.txt"):
        (models / name).write_bytes(b"x")
    patterns = ("*.pt", "epochs/*.pt")
    with pytest.raises(ValueError, match=r"earlier run \(checkpoint.pt, epochs/model_epoch=1.pt, model.pt\)"):
        prepare_ckpt_dir(models, patterns=patterns)
    assert prepare_ckpt_dir(models, resume=True) == models / "checkpoint.pt"
    # MONAI Label fine-tunes models/model.pt: it stays (the run replaces it), the earlier run's other files go
    loader = CheckpointLoader(load_path=str(models / "model.pt"), load_dict={"model": torch.nn.Linear(1, 1)})
    assert prepare_ckpt_dir(models, handlers=[loader], patterns=patterns) is None
    assert sorted(p.name for p in models.rglob("*") if p.is_file()) == ["model.pt", "notes.txt"]
    assert prepare_ckpt_dir(models, overwrite=True) is None
    assert sorted(p.name for p in models.rglob("*") if p.is_file()) == ["notes.txt"]
    with pytest.raises(TypeError, match="True or False"):
        prepare_ckpt_dir(models, resume="false")


def test_init_ckpt_of_another_network_is_refused(tmp_path: Path) -> None:
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Conv2d(4, 2, 1))
    other = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Conv2d(4, 5, 1))
    path = tmp_path / "other.pt"
    torch.save(other.state_dict(), path)
    # the first bias and the BatchNorm's 5 entries match, the convolutions' other 3 do not: 6 of 9
    with pytest.raises(ValueError, match=r"other.pt matches 6 of the 9 variables of Sequential"):
        load_weights(net, path, strict=False, min_fraction=0.7)
    load_weights(net, path, strict=False, min_fraction=0.5)  # enough: loaded
    assert torch.equal(net[1].running_var, other[1].running_var)


@pytest.mark.parametrize("bundle", BUNDLES)
def test_every_bundle_wires_resume(bundle: str) -> None:
    """The options and the checkpoint's save and load, as the docs describe them; the folder is prepared when the run
    starts (the first step of ``run``), not in ``initialize``."""
    parser = read_bundle_config(bundle, "train")
    assert parser["resume"] is False and parser["overwrite"] is False
    assert parser["run"][0] == "@run_folder" and "@run_folder" not in parser["initialize"]
    assert any("@checkpoint_loader.attach" in step for step in parser["initialize"])


def test_trained_bundle_initialises_and_its_run_refuses(tmp_path: Path, data) -> None:
    """
    MONAI's ``create_workflow(config_file=train.json, workflow_type="train")`` of a bundle folder that holds an earlier
    run's ``models/model.pt`` initialises and passes ``check_properties()`` (a tool reads a trained bundle that way:
    MONAI's checks, ``python -m monai_ext robustness``); ``run`` still refuses to replace the earlier run.
    """
    models = tmp_path / "models"
    models.mkdir()
    (models / "model.pt").write_bytes(b"the best model of an earlier run")
    meta = str(Path(config_files("nlcen", "train")[0]).parent / "metadata.json")
    workflow = create_workflow(config_file=config_files("nlcen", "train"), meta_file=meta, logging_file=False,
                               workflow_type="train", **_args("nlcen", tmp_path, data))  # fmt: skip
    assert workflow.check_properties() == []
    _raises("--overwrite True", workflow.run)
    assert (models / "model.pt").read_bytes() == b"the best model of an earlier run"


def test_run_state_restores_generators_and_best_model(tmp_path: Path) -> None:
    """The random generators, the validator's best metric, and the best-model saver's record of it: after a resume,
    a worse model does not replace the best one, a better one does."""

    def validator(best: float, epoch: int) -> Engine:
        engine = Engine(lambda e, b: None)
        engine.state.best_metric, engine.state.best_metric_epoch, engine.state.metrics = best, epoch, {}
        return engine

    def saver() -> CheckpointSaver:
        network = torch.nn.Linear(1, 1)
        return CheckpointSaver(str(tmp_path), {"model": network}, save_key_metric=True, key_metric_name="dice",
                               key_metric_filename="model.pt")  # fmt: skip

    path = tmp_path / "state.pt"
    torch.save(RunState(validator(0.8, 3), saver()).state_dict(), path)
    expected = torch.rand(3), np.random.rand(), random.random()
    torch.manual_seed(1), np.random.seed(1), random.seed(1)  # the generators move on
    fresh_validator, fresh_saver = validator(-1.0, -1), saver()
    RunState(fresh_validator, fresh_saver).load_state_dict(torch.load(path, weights_only=True))
    again = torch.rand(3), np.random.rand(), random.random()
    assert torch.equal(again[0], expected[0]) and again[1:] == expected[1:]
    assert fresh_validator.state.best_metric == 0.8 and fresh_validator.state.best_metric_epoch == 3
    best = tmp_path / "model.pt"
    best.write_bytes(b"the best model of epoch 3")
    fresh_validator.state.metrics = {"dice": 0.5}
    fresh_saver.metrics_completed(fresh_validator)
    assert best.read_bytes() == b"the best model of epoch 3"  # worse than the restored best: kept
    fresh_validator.state.metrics = {"dice": 0.9}
    fresh_saver.metrics_completed(fresh_validator)
    assert "weight" in torch.load(best, weights_only=True)  # better: replaced
