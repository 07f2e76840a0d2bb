"""
Distributed data-parallel (DDP) training of a bundle: the logic of its ``configs/multi_gpu_train.json``, as named
functions instead of long ``$`` lines.

Launched by ``torchrun --nproc_per_node N -m monai.bundle run --config_file "['train.json','multi_gpu_train.json']"``,
every process runs the same config; ``multi_gpu_train.json`` wires::

    "device": "$monai_ext.utils.local_device()",
    "initialize": ["$monai_ext.utils.init_distributed(@device)", ...],
    "train#trainer#train_handlers": "$monai_ext.utils.main_process_handlers(@train#handlers)",
    "finalize": ["$monai_ext.utils.destroy_distributed()"]

Work that writes shared files runs once, on rank 0, with :func:`rank_zero_call`: every rank gets its result, or
raises its error, so that all ranks agree (``prepare_ckpt_dir``, the synthetic default data).

Every function also works in one process without a process group (rank 0 of 1).

This module imports no other ``monai_ext`` package.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from ignite import distributed as idist
from monai.handlers import CheckpointSaver, MetricsSaver, StatsHandler, TensorBoardStatsHandler

__all__ = [
    "WRITER_HANDLERS",
    "destroy_distributed",
    "device_ids",
    "get_rank",
    "get_world_size",
    "init_distributed",
    "local_device",
    "main_process_handlers",
    "rank_zero_call",
]

T = TypeVar("T")

#: handlers that log or write files: on ranks other than 0, :func:`main_process_handlers` leaves them out
WRITER_HANDLERS: tuple[type, ...] = (StatsHandler, TensorBoardStatsHandler, CheckpointSaver, MetricsSaver)


def get_rank() -> int:
    """This process's rank in the default process group; 0 without one."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def get_world_size() -> int:
    """The number of processes of the default process group; 1 without one."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def local_device() -> torch.device:
    """This process's device: ``cuda:<LOCAL_RANK>`` (torchrun sets ``LOCAL_RANK``; 0 without it) with CUDA, else CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")


def device_ids(device: str | torch.device) -> list[torch.device] | None:
    """``device_ids`` of ``DistributedDataParallel``: ``[device]`` for a CUDA device, ``None`` on CPU."""
    device = torch.device(device)
    return [device] if device.type == "cuda" else None


def init_distributed(device: str | torch.device | None = None, backend: str | None = None) -> bool:
    """
    Initialise the default process group, once: backend ``nccl`` on a CUDA ``device`` (made the current one), else
    ``gloo``. Under ``torchrun`` (``WORLD_SIZE`` set) the group joins the launched processes through torchrun's
    environment; without it, a group of this one process (so the DDP config also runs as a plain ``monai.bundle run``).

    Args:
        device: this process's device (:func:`local_device`); ``None``: CPU.
        backend: the backend; ``None``: by the device, as above.

    Returns:
        ``True`` when this call initialised the group, ``False`` when one was already there.
    """
    if dist.is_initialized():
        return False
    device = torch.device("cpu" if device is None else device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    backend = backend or ("nccl" if device.type == "cuda" else "gloo")
    if "WORLD_SIZE" in os.environ:
        dist.init_process_group(backend=backend)
    else:
        dist.init_process_group(backend=backend, store=dist.HashStore(), rank=0, world_size=1)
    return True


def destroy_distributed() -> None:
    """
    Destroy the default process group, when there is one (the end of a DDP run, its ``finalize``), and reset ignite's
    distributed model, which keeps the group it found for its metrics: later runs in the process are serial again.
    The ranks first wait for each other, so that none tears the group down while another still works in it (rank 0
    writing the last checkpoint; a rank that did so was once seen to abort, "terminate called without an active
    exception").
    """
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        idist.finalize()  # destroys the group when ignite had picked it up
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def rank_zero_call(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """
    ``fn(*args, **kwargs)`` run on rank 0 only, while the other ranks wait; every rank returns rank 0's result, or
    raises rank 0's error. For work that writes shared files (generating data, preparing a checkpoint folder) and
    decisions every rank must share (refusing a run). Without a process group, or with one process, a plain call.

    The result and the error travel pickled (``broadcast_object_list``); an error that cannot be pickled arrives as a
    ``RuntimeError`` with its message.
    """
    if get_world_size() == 1:
        return fn(*args, **kwargs)
    message: list[Any] = [None]
    if get_rank() == 0:
        try:
            message[0] = (True, fn(*args, **kwargs))
        except Exception as error:  # noqa: BLE001 - handed to every rank, raised there
            message[0] = (False, error)
        try:
            pickle.dumps(message[0])
        except (pickle.PicklingError, TypeError, AttributeError):
            message[0] = (False, RuntimeError(f"rank 0: {message[0][1]!r}"))
    dist.broadcast_object_list(message, src=0)
    ok, value = message[0]
    if not ok:
        raise value
    return value


def main_process_handlers(handlers: Sequence[Any] | None, writers: Sequence[type] = WRITER_HANDLERS) -> list[Any]:
    """
    The handlers this rank attaches: all of them on rank 0; on the others, all but the ``writers`` (loggers and file
    writers), so that one process logs and writes while every rank runs the handlers that take part in the training
    (validation, learning-rate schedules, metrics gathered across ranks).
    """
    handlers = list(handlers or [])
    if get_rank() == 0:
        return handlers
    return [h for h in handlers if not isinstance(h, tuple(writers))]
