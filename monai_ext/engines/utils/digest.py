"""
Digests that identify what an engine's results depend on: the weights its network holds when it runs (after the
``CheckpointLoader`` handlers that load them) and its data. Results files record them, and a resume compares them
(:py:func:`monai_ext.utils.resume.resume_results`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

import torch
from ignite.engine import Engine, Events
from monai.data import MetaTensor
from monai.handlers import CheckpointLoader
from torch import nn

__all__ = ["data_digest", "load_checkpoints", "network_digest", "state_digest"]


def load_checkpoints(engine: Engine) -> None:
    """
    Run now the ``CheckpointLoader`` handlers attached to ``engine`` (a bundle's ``validate#handlers``), which load
    the weights when the engine starts: its network then holds the weights its runs evaluate. They run again when it
    starts (as they do at every run), loading the same weights.
    """
    for handler, *_ in engine._event_handlers.get(Events.STARTED, []):  # ignite lists no handlers publicly
        if isinstance(handler, CheckpointLoader):
            handler(engine)


def network_digest(engine: Engine) -> str:
    """The :func:`state_digest` of the weights ``engine.network`` is evaluated with: taken after the engine's
    checkpoints are loaded (:func:`load_checkpoints`), not of the freshly initialised network."""
    load_checkpoints(engine)
    return state_digest(engine.network)


def state_digest(network: nn.Module) -> str:
    """A digest of a network's state dict (names, dtypes, shapes and values), 20 hexadecimal digits."""
    digest = hashlib.sha256()
    for name, value in network.state_dict().items():
        digest.update(f"{name}=".encode())
        _update(digest, value)
    return digest.hexdigest()[:20]


def data_digest(dataset: Any) -> str:
    """A digest of a dataset: its length, its datalist (``dataset.data``, when it has one) and its first item."""
    digest = hashlib.sha256(f"{len(dataset)};".encode())
    data = getattr(dataset, "data", None)
    if data is not None:
        digest.update(json.dumps(data, sort_keys=True, default=str).encode())
    if len(dataset):
        _update(digest, dataset[0])
    return digest.hexdigest()[:20]


def _update(digest: Any, value: Any) -> None:
    """Feed tensors, arrays, mappings, sequences and scalars to ``digest``."""
    if isinstance(value, torch.Tensor):
        value = value.as_tensor() if isinstance(value, MetaTensor) else value  # the values, not the metadata
        value = value.detach().cpu().contiguous().reshape(-1)
        digest.update(f"{value.dtype}:{value.numel()};".encode())
        digest.update(value.view(torch.uint8).numpy().tobytes())
    elif isinstance(value, Mapping):
        for key in sorted(value, key=str):
            digest.update(f"{key}=".encode())
            _update(digest, value[key])
    elif isinstance(value, (list, tuple)):
        for item in value:
            _update(digest, item)
    elif hasattr(value, "tobytes"):  # numpy arrays
        digest.update(value.tobytes())
    else:
        digest.update(repr(value).encode())
