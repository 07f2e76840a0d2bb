"""
Training runs that never replace an earlier run's checkpoints unasked, and that resume where a killed run stopped.

A bundle's ``train.json`` wires them as follows (ids of every bundle; ``resume`` and ``overwrite`` are options)::

    "checkpoint": {"network": "@network", "optimizer": "@optimizer", "lr_scheduler": "@lr_scheduler",
                   "trainer": "@train#trainer",
                   "run_state": {"_target_": "monai_ext.utils.RunState", "validator": "@validate#evaluator",
                                 "best_model_saver": "@best_model_saver"}},
    "checkpoint_saver": {"_target_": "ignite.handlers.Checkpoint", "to_save": "@checkpoint", "n_saved": 1,
                         "save_handler": {"_target_": "monai_ext.utils.AtomicFileSaver", "path": "@checkpoint_path"}},
    "checkpoint_loader": {"_target_": "CheckpointLoader", "load_path": "@checkpoint_path", "load_dict": "@checkpoint"},
    "run_folder": {"_target_": "monai_ext.utils.prepare_ckpt_dir", "ckpt_dir": "@ckpt_dir", "resume": "@resume",
                   "overwrite": "@overwrite", "handlers": "@train#handlers"},
    "initialize": ["$monai.utils.set_determinism(seed=0)",
                   "$@train#trainer.add_event_handler(ignite.engine.Events.EPOCH_COMPLETED, @checkpoint_saver)",
                   "$@resume and @checkpoint_loader.attach(@train#trainer)"],
    "run": ["@run_folder", "$@train#trainer.run()"]

The folder is prepared (and an earlier run refused) when the run starts, not in ``initialize``: a tool that only reads a
trained bundle's workflow (MONAI's ``create_workflow(..., workflow_type="train")`` and ``check_properties()``,
``python -m monai_ext robustness``) initialises it next to the earlier run's ``models/model.pt`` without an error.

This module imports no other ``monai_ext`` package.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Mapping, Sequence
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ignite.engine import Engine
from ignite.handlers.checkpoint import BaseSaveHandler, Checkpoint
from monai.handlers import CheckpointLoader, CheckpointSaver

from .distributed import get_rank, rank_zero_call
from .files import atomic_open

__all__ = ["CHECKPOINT_FILENAME", "AtomicFileSaver", "RunState", "prepare_ckpt_dir"]

logger = logging.getLogger(__name__)

#: the file in ``ckpt_dir`` that a run resumes from
CHECKPOINT_FILENAME = "checkpoint.pt"


def prepare_ckpt_dir(
    ckpt_dir: str | PathLike,
    resume: bool = False,
    overwrite: bool = False,
    handlers: Sequence[Any] = (),
    patterns: Sequence[str] = ("*.pt",),
    checkpoint: str = CHECKPOINT_FILENAME,
) -> Path | None:
    """
    Make ``ckpt_dir`` ready for a training run, and refuse to replace an earlier run's checkpoints unasked.

    - ``resume``: the run continues from ``ckpt_dir/checkpoint``, which must exist (returned).
    - ``ckpt_dir`` holds files matching ``patterns`` (checkpoints of an earlier run) and the run neither resumes nor
      starts from one of them: an error naming the folder, the files and the options ``--resume`` / ``--overwrite``.
    - ``overwrite``: those files are removed, and the run starts afresh.
    - ``handlers`` hold a ``CheckpointLoader`` that loads a file of ``ckpt_dir`` (how MONAI Label fine-tunes a
      bundle's ``models/model.pt``): the run continues that model and replaces it; the earlier run's other files are
      removed.

    Args:
        ckpt_dir: the run's checkpoint folder (created).
        resume: continue the run whose checkpoint is in ``ckpt_dir``.
        overwrite: start afresh, removing the checkpoints an earlier run left in ``ckpt_dir``.
        handlers: the trainer's handlers (a bundle's ``train#handlers``).
        patterns: glob patterns, relative to ``ckpt_dir``, of the files a run leaves there.
        checkpoint: the file name of the checkpoint a run resumes from.

    Returns:
        the checkpoint to resume from, or ``None`` for a new run.

    Raises:
        ValueError: both ``resume`` and ``overwrite``; ``resume`` without a checkpoint; checkpoints of an earlier
            run, neither resumed nor overwritten.

    Under DDP, rank 0 prepares the folder and every rank returns its answer or raises its error (one decision).
    """
    return rank_zero_call(_prepare_ckpt_dir, ckpt_dir, resume, overwrite, handlers, patterns, checkpoint)


def _prepare_ckpt_dir(
    ckpt_dir: str | PathLike,
    resume: bool,
    overwrite: bool,
    handlers: Sequence[Any],
    patterns: Sequence[str],
    checkpoint: str,
) -> Path | None:
    folder = Path(ckpt_dir)
    if not isinstance(resume, bool) or not isinstance(overwrite, bool):
        raise TypeError(f"resume and overwrite must be True or False, got {resume!r} and {overwrite!r}.")
    if resume and overwrite:
        raise ValueError("pass --resume True to continue a run, or --overwrite True to start afresh, not both.")
    folder.mkdir(parents=True, exist_ok=True)
    if resume:
        path = folder / checkpoint
        if not path.is_file():
            raise ValueError(
                f"--resume True: {folder} holds no {checkpoint} to resume from (--ckpt_dir names the folder of the "
                "run to continue); run without --resume to start a new run."
            )
        logger.info("resuming the run of %s", path)
        return path
    found = sorted({p for pattern in patterns for p in folder.glob(pattern) if p.is_file()})
    if not found:
        return None
    loaded = {Path(h.load_path).resolve() for h in handlers if isinstance(h, CheckpointLoader)}
    kept = [p for p in found if p.resolve() in loaded]
    names = ", ".join(str(p.relative_to(folder)) for p in found)
    if not kept and not overwrite:
        raise ValueError(
            f"{folder} holds the checkpoints of an earlier run ({names}); a new run would replace them. Pass "
            "--resume True to continue that run, --overwrite True to replace it, or another --ckpt_dir."
        )
    for path in found:
        if path not in kept:
            path.unlink()
    if kept:
        logger.info("fine-tuning %s: it is replaced by this run's best model", ", ".join(map(str, kept)))
    else:
        logger.warning("--overwrite True: removed the checkpoints of an earlier run in %s: %s", folder, names)
    return None


class AtomicFileSaver(BaseSaveHandler):
    """
    A save handler of ignite's ``Checkpoint`` that writes every checkpoint to one file, atomically (``torch.save`` to a
    temporary file in the same folder, then ``os.replace``): the file always holds the last complete checkpoint, even
    when a run is killed while saving. Under DDP only rank 0 writes (as ignite's ``DiskSaver``). (MONAI's ``CheckpointSaver`` writes in place and removes the previous file
    first, which can leave no checkpoint, or a truncated one, to resume from.)

    Args:
        path: the checkpoint file.
    """

    def __init__(self, path: str | PathLike) -> None:
        self.path = Path(path)

    def __call__(self, checkpoint: Mapping, filename: str, metadata: Mapping | None = None) -> None:
        if get_rank() != 0:
            return
        with atomic_open(self.path, "wb") as f:
            torch.save(checkpoint, f)

    def remove(self, filename: str) -> None:
        """Nothing to remove: the next checkpoint replaces the file."""


class RunState:
    """
    What a resumed training run needs besides the state dicts of its networks, optimisers, schedulers and trainer, as
    one object for a checkpoint's save dict (``state_dict`` / ``load_state_dict``):

    - the random generators: Python's, NumPy's, torch's (CPU and CUDA), so that the resumed run draws the same
      shuffles as an uninterrupted one;
    - the best metric of the validator (a ``ValidationHandler``'s evaluator) and its epoch;
    - the best-model ``CheckpointSaver`` of the validator (``save_key_metric=True``, the default key metric sign):
      the resumed run replaces the best model only with a better one.

    Args:
        validator: the evaluator whose best metric is kept.
        best_model_saver: the validator's best-model saver.
    """

    def __init__(self, validator: Engine | None = None, best_model_saver: CheckpointSaver | None = None) -> None:
        if best_model_saver is not None and not isinstance(best_model_saver, CheckpointSaver):
            raise TypeError(f"best_model_saver must be a CheckpointSaver, got {type(best_model_saver).__name__}.")
        if best_model_saver is not None and validator is None:
            raise ValueError("best_model_saver needs the validator whose best metric it saves.")
        self.validator, self.best_model_saver = validator, best_model_saver

    def state_dict(self) -> dict[str, Any]:
        np_state = np.random.get_state()
        state: dict[str, Any] = {
            "python": random.getstate(),
            "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        }
        if self.validator is not None:
            state["best_metric"] = float(self.validator.state.best_metric)
            state["best_metric_epoch"] = int(self.validator.state.best_metric_epoch)
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        version, internal, gauss = state["python"]
        random.setstate((version, tuple(internal), gauss))
        name, keys, *rest = state["numpy"]
        np.random.set_state((name, keys.cpu().numpy().astype(np.uint32), *rest))
        torch.set_rng_state(state["torch"].cpu())
        if state["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
        if self.validator is not None:
            self.validator.state.best_metric = state["best_metric"]
            self.validator.state.best_metric_epoch = state["best_metric_epoch"]
            if self.best_model_saver is not None and state["best_metric_epoch"] >= 0:
                saved = [(state["best_metric"], "best_model")]  # (priority, file name): the file name is fixed
                keys = Checkpoint._state_dict_all_req_keys  # ("_saved",) or ("saved",), by ignite's version
                self.best_model_saver.load_state_dict(dict.fromkeys(keys, saved))
