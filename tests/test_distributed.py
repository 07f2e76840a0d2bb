"""
Training beyond one process: every bundle's ``configs/multi_gpu_train.json`` (an override of ``train.json``) run as a
GPU user runs it, ``torchrun --nproc_per_node 2 -m monai.bundle run --config_file "['train.json',
'multi_gpu_train.json']"``, here with gloo on CPU; and the helpers of ``monai_ext.utils.distributed`` in one process.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import BUNDLES, REPO, config_files, read_bundle_config, tiny
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


def _torchrun(bundle: str, root: Path, logs: Path) -> subprocess.CompletedProcess:
    """``train.json`` + ``multi_gpu_train.json`` under torchrun, 2 processes on CPU; each rank's output in ``logs``."""
    sizes = [w for k, v in tiny(bundle).items() for w in (f"--{k}", json.dumps(v))]
    files = config_files(bundle, ["train", "multi_gpu_train"])
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    command += ["--log-dir", str(logs), "--redirects", "3", "-m", "monai.bundle", "run", "--config_file", str(files)]
    command += ["--bundle_root", str(root), "--epochs", "2", "--batch_size", "4", *sizes]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    return subprocess.run(command, check=False, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def _rank_logs(logs: Path) -> dict[int, str]:
    """Each rank's stdout and stderr, as torchrun's ``--log-dir`` keeps them (``<run>/attempt_0/<rank>/``)."""
    found: dict[int, str] = {}
    for folder in sorted(p for p in logs.rglob("*") if p.is_dir() and p.name.isdigit()):
        found[int(folder.name)] = "".join(f.read_text() for f in sorted(folder.glob("*.log")))
    return found


@pytest.mark.slow
@pytest.mark.parametrize("bundle", BUNDLES)
def test_multi_gpu_train(bundle: str, tmp_path: Path) -> None:
    """
    Two ranks: exit 0, the same best validation metric on both, the synthetic default data generated once (rank 0),
    ``model.pt`` and ``checkpoint.pt`` without DDP's ``module.`` prefix, one process writing TensorBoard logs; for nlcen
    a second run is refused on both ranks (rank 0 decides, the others raise its error, none hangs).
    """
    root = tmp_path / "root"
    result = _torchrun(bundle, root, tmp_path / "logs")
    logs = _rank_logs(tmp_path / "logs")
    assert result.returncode == 0, (result.stderr[-3000:], {r: text[-3000:] for r, text in logs.items()})
    assert sorted(logs) == [0, 1]
    metrics = {rank: SUMMARY.findall(text) for rank, text in logs.items()}
    assert len(metrics[0]) == 1 and metrics[0] == metrics[1], metrics
    assert [text.count(GENERATED) for _, text in sorted(logs.items())] == [1, 0]

    parser = read_bundle_config(bundle, "inference", bundle_root=str(root), **tiny(bundle))
    state = torch.load(parser.get_parsed_content("ckpt_path"), map_location="cpu", weights_only=True)
    parser.get_parsed_content("network_def").load_state_dict(state, strict=True)
    checkpoint = torch.load(root / "models" / "checkpoint.pt", map_location="cpu", weights_only=False)
    assert not [k for k in checkpoint["network"] if k.startswith("module.")]
    writers = {p.name.rsplit(".", 2)[1] for p in (root / "runs").glob("events.out.tfevents.*")}
    assert len(writers) == 1, writers  # the process id of the event files' names: rank 0 alone

    if bundle == "nlcen":
        again = _torchrun(bundle, root, tmp_path / "logs_again")
        assert again.returncode != 0
        logs = _rank_logs(tmp_path / "logs_again")
        assert sorted(logs) == [0, 1] and all(REFUSAL in text for text in logs.values()), logs


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
