"""
Training beyond one process: every bundle's ``configs/multi_gpu_train.json`` (an override of ``train.json``) run as a
GPU user runs it, ``torchrun --nproc_per_node 2 -m monai.bundle run --config_file "['train.json',
'multi_gpu_train.json']"``, here with gloo on CPU, also layered over the variants that train another way
(``train_online.json``, ``unet_baseline.json``) and resumed after the ranks were killed; and the helpers of
``monai_ext.utils.distributed`` in one process.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NamedTuple

import pytest
import torch
from conftest import BUNDLES, REPO, config_files, read_bundle_config, state_leaves, tiny
from ignite.metrics import Average
from monai.handlers import CheckpointSaver, StatsHandler, ValidationHandler

from monai_ext.utils import (
    destroy_distributed,
    device_ids,
    get_rank,
    get_world_size,
    init_distributed,
    local_device,
    main_process_handlers,
    rank_zero_call,
)

SUMMARY = re.compile(r"best validation mean Dice (\d+\.\d+)")
GENERATED = "Generated a synthetic dataset"
REFUSAL = "holds the checkpoints of an earlier run"
RESUMING = "resuming the run of"

#: the config chains trained under DDP (``multi_gpu_train.json`` layered last): every bundle's ``train.json``, and the
#: variants that train another network or with another loss
CHAINS = [pytest.param(bundle, ("train",), id=bundle) for bundle in BUNDLES] + [
    pytest.param("protoseg", ("train", "train_online"), id="protoseg-train_online"),
    pytest.param("sagan_seg", ("train", "unet_baseline"), id="sagan_seg-unet_baseline"),
]

#: the networks a checkpoint may hold (each saved without DDP's ``module.`` prefix)
NETWORKS = ("network", "discriminator")

#: the bundles whose DDP run is killed and resumed (each costs two more torchrun launches)
RESUMED = ["sagan_seg"]

#: a last config file's ``initialize`` step that kills both ranks (SIGKILL, 9) at the end of epoch 1, once rank 0 has
#: saved its checkpoint (the barrier)
KILL_STEP = "$@train#trainer.add_event_handler(ignite.engine.Events.EPOCH_COMPLETED(once=1), @kill)"
KILL = "$lambda engine: torch.distributed.barrier() or os.kill(os.getpid(), 9)"


def _torchrun(
    bundle: str,
    root: Path,
    logs: Path,
    chain: Sequence[str] = ("train",),
    last: Sequence[str] = (),
    options: Sequence[str] = (),
) -> subprocess.CompletedProcess:
    """
    ``chain`` + ``multi_gpu_train.json`` (+ the config files ``last``) under torchrun, 2 processes on CPU, 2 epochs at
    tiny sizes (+ ``options``); each rank's output in ``logs``.
    """
    sizes = [w for k, v in tiny(bundle).items() for w in (f"--{k}", json.dumps(v))]
    files = [*config_files(bundle, [*chain, "multi_gpu_train"]), *last]
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    command += ["--log-dir", str(logs), "--redirects", "3", "-m", "monai.bundle", "run", "--config_file", str(files)]
    command += ["--bundle_root", str(root), "--epochs", "2", "--batch_size", "4", *sizes, *options]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    return subprocess.run(command, check=False, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def _rank_logs(logs: Path) -> dict[int, str]:
    """Each rank's stdout and stderr, as torchrun's ``--log-dir`` keeps them (``<run>/attempt_0/<rank>/``)."""
    found: dict[int, str] = {}
    for folder in sorted(p for p in logs.rglob("*") if p.is_dir() and p.name.isdigit()):
        found[int(folder.name)] = "".join(f.read_text() for f in sorted(folder.glob("*.log")))
    return found


class DDPRun(NamedTuple):
    """A torchrun launch: its ``bundle_root``, the launcher's result and each rank's output."""

    root: Path
    result: subprocess.CompletedProcess
    logs: dict[int, str]


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str, tuple[str, ...]], DDPRun]:
    """``ddp_run(bundle, chain)``: :func:`_torchrun` of a config chain, once per module, on the synthetic default data
    the run generates in its ``bundle_root``."""
    done: dict[tuple[str, tuple[str, ...]], DDPRun] = {}

    def run(bundle: str, chain: tuple[str, ...]) -> DDPRun:
        if (bundle, chain) not in done:
            folder = tmp_path_factory.mktemp(f"{bundle}_ddp")
            result = _torchrun(bundle, folder / "root", folder / "logs", chain)
            done[bundle, chain] = DDPRun(folder / "root", result, _rank_logs(folder / "logs"))
        return done[bundle, chain]

    return run


def _agreed_metric(run: DDPRun) -> str:
    """The best validation metric of a run that ended well on both ranks, the same on both."""
    assert run.result.returncode == 0, (run.result.stderr[-3000:], {r: t[-3000:] for r, t in run.logs.items()})
    assert sorted(run.logs) == [0, 1]
    metrics = {rank: SUMMARY.findall(text) for rank, text in run.logs.items()}
    assert len(metrics[0]) == 1 and metrics[0] == metrics[1], metrics
    return metrics[0][0]


def _folders(bundle: str, chain: Sequence[str], root: Path) -> tuple[Path, Path]:
    """The run's ``ckpt_dir`` and ``output_dir`` (TensorBoard logs)."""
    parser = read_bundle_config(bundle, chain, bundle_root=str(root))
    return Path(parser.get_parsed_content("ckpt_dir")), Path(parser.get_parsed_content("output_dir"))


def _check_checkpoints(bundle: str, chain: Sequence[str], root: Path) -> None:
    """``model.pt`` loads strictly into the network a user builds (``inference.json``'s for ``train.json``, else the
    chain's), and no network of ``checkpoint.pt`` has DDP's ``module.`` prefix."""
    folder = _folders(bundle, chain, root)[0]
    configs = "inference" if tuple(chain) == ("train",) else chain
    network = read_bundle_config(bundle, configs, **tiny(bundle)).get_parsed_content("network_def")
    network.load_state_dict(torch.load(folder / "model.pt", map_location="cpu", weights_only=True), strict=True)
    checkpoint = torch.load(folder / "checkpoint.pt", map_location="cpu", weights_only=True)
    assert checkpoint.keys() & set(NETWORKS)
    prefixed = [f"{name}.{key}" for name in NETWORKS for key in checkpoint.get(name, {}) if key.startswith("module.")]
    assert not prefixed, prefixed


@pytest.mark.slow
@pytest.mark.parametrize("bundle, chain", CHAINS)
def test_multi_gpu_train(bundle: str, chain: tuple[str, ...], ddp_run, tmp_path: Path) -> None:
    """
    Two ranks: exit 0, the same best validation metric on both, the synthetic default data generated once (rank 0),
    ``model.pt`` and ``checkpoint.pt`` without DDP's ``module.`` prefix, one process writing TensorBoard logs; for nlcen
    a second run is refused on both ranks (rank 0 decides, the others raise its error, none hangs).
    """
    run = ddp_run(bundle, chain)
    _agreed_metric(run)
    assert [text.count(GENERATED) for _, text in sorted(run.logs.items())] == [1, 0]
    _check_checkpoints(bundle, chain, run.root)
    writers = {p.name.rsplit(".", 2)[1] for p in _folders(bundle, chain, run.root)[1].glob("events.out.tfevents.*")}
    assert len(writers) == 1, writers  # the process id of the event files' names: rank 0 alone

    if bundle == "nlcen" and chain == ("train",):
        again = _torchrun(bundle, run.root, tmp_path / "logs_again")
        assert again.returncode != 0
        logs = _rank_logs(tmp_path / "logs_again")
        assert sorted(logs) == [0, 1] and all(REFUSAL in text for text in logs.values()), logs


@pytest.mark.slow
@pytest.mark.parametrize("bundle", RESUMED)
def test_killed_multi_gpu_run_resumes(bundle: str, ddp_run, tmp_path: Path) -> None:
    """
    Both ranks killed (SIGKILL) after epoch 1, then ``--resume True`` under 2 ranks: it continues from rank 0's
    ``checkpoint.pt``, both ranks agree, and the run ends where the uninterrupted run of :func:`ddp_run` ends (same
    best metric, every tensor of ``checkpoint.pt`` and ``model.pt`` equal: weights, optimisers, trainer, generators),
    its checkpoints without DDP's ``module.`` prefix.
    """
    whole = ddp_run(bundle, ("train",))
    expected = _agreed_metric(whole)
    kill = tmp_path / "kill.json"
    initialize = read_bundle_config(bundle, ["train", "multi_gpu_train"])["initialize"]
    kill.write_text(json.dumps({"kill": KILL, "initialize": [*initialize, KILL_STEP]}))
    root, data = tmp_path / "root", ["--dataset_dir", str(whole.root / "synthetic_data")]
    killed = _torchrun(bundle, root, tmp_path / "logs_killed", last=[str(kill)], options=data)
    assert killed.returncode != 0 and "SIGKILL" in killed.stderr, killed.stderr[-3000:]
    folder = _folders(bundle, ["train"], root)[0]
    trainer = torch.load(folder / "checkpoint.pt", map_location="cpu", weights_only=True)["trainer"]
    assert trainer["iteration"] == trainer["epoch_length"], trainer  # one epoch of two

    resumed = _torchrun(bundle, root, tmp_path / "logs", options=[*data, "--resume", "True"])
    run = DDPRun(root, resumed, _rank_logs(tmp_path / "logs"))
    assert _agreed_metric(run) == expected
    assert RESUMING in run.logs[0]
    _check_checkpoints(bundle, ["train"], root)
    for name in ("checkpoint.pt", "model.pt"):
        final = [
            state_leaves(torch.load(f / name, map_location="cpu", weights_only=True))
            for f in (_folders(bundle, ["train"], whole.root)[0], folder)
        ]
        assert final[0].keys() == final[1].keys()
        differ = [k for k, v in final[0].items() if not (torch.equal(v, final[1][k]) if isinstance(v, torch.Tensor)
                                                          else v == final[1][k])]  # fmt: skip
        assert not differ, (name, differ)


def test_single_process_helpers() -> None:
    """Without a process group: rank 0 of 1, plain calls, every handler kept; a one-process group is made and ended."""
    assert (get_rank(), get_world_size()) == (0, 1)
    assert local_device() == torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
    assert device_ids("cpu") is None and device_ids("cuda:1") == [torch.device("cuda", 1)]
    assert rank_zero_call(divmod, 7, 2) == (3, 1)
    with pytest.raises(ZeroDivisionError):
        rank_zero_call(divmod, 7, 0)
    handlers = [
        StatsHandler(),
        ValidationHandler(interval=1),
        CheckpointSaver(save_dir=".", save_dict={"net": torch.nn.Linear(1, 1)}),
    ]
    assert main_process_handlers(handlers) == handlers and main_process_handlers(None) == []
    assert init_distributed("cpu") and not init_distributed("cpu")  # once
    try:
        assert torch.distributed.get_backend() == "gloo" and get_world_size() == 1
        assert rank_zero_call(divmod, 7, 2) == (3, 1)
    finally:
        destroy_distributed()
    assert not torch.distributed.is_initialized()
    destroy_distributed()  # nothing to destroy: no error


@pytest.mark.parametrize("bundle", BUNDLES)
def test_docs_give_the_multi_gpu_command(bundle: str) -> None:
    docs = (REPO / "bundles" / bundle / "docs" / "README.md").read_text()
    assert "torchrun --nproc_per_node <gpus> -m monai.bundle run" in docs
    assert f"'bundles/{bundle}/configs/train.json','bundles/{bundle}/configs/multi_gpu_train.json'" in docs


@pytest.mark.parametrize("bundle", BUNDLES)
def test_disabled_handlers_are_tensorboard_writers(bundle: str) -> None:
    """
    multi_gpu_train.json names train.json's TensorBoard handlers by list index (``train#handlers#N#_disabled_``: not
    built on ranks > 0, where a ``SummaryWriter`` would open an event file): the indices must still name them.
    """
    raw = json.loads((REPO / "bundles" / bundle / "configs" / "multi_gpu_train.json").read_text())
    train = read_bundle_config(bundle, "train")
    disabled = [key.removesuffix("#_disabled_") for key in raw if key.endswith("#_disabled_")]
    assert disabled
    for key in disabled:
        assert train[key]["_target_"] == "TensorBoardStatsHandler", (key, train[key])
    for section in ("train", "validate"):
        keys = [f"{section}#handlers#{i}" for i in range(len(train[f"{section}#handlers"]))]
        tensorboard = [
            k for k in keys if isinstance(train[k], dict) and train[k]["_target_"].endswith("TensorBoardStatsHandler")
        ]
        assert set(tensorboard) <= set(disabled), (section, tensorboard, disabled)


def test_runs_after_a_distributed_one_are_serial() -> None:
    """After ``destroy_distributed`` a metric synced by ignite while the group lived works in one process again."""

    def average() -> float:
        metric = Average()
        metric.update(torch.tensor(2.0))
        return float(metric.compute())

    init_distributed("cpu")
    try:
        assert average() == 2.0  # ignite now holds the native group
    finally:
        destroy_distributed()
    assert average() == 2.0 and not torch.distributed.is_initialized()
