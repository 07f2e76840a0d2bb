"""
ProtoSeg's mean SA score ``mu`` (eq. 12) as MONAI Label active learning: :class:`ProtoSegScoring` runs a bundle's
network over the datastore's unlabelled images and stores ``mu`` per image in the datastore's image info, and
:class:`LowestMuStrategy` proposes the unlabelled image with the lowest stored ``mu`` (the least trusted prediction).

This is the only module of ``monai_ext`` that imports ``monailabel``; ``import monai_ext`` does not import it.
:func:`protoseg_tasks` builds both for every bundle of a MONAI Label app (``self.models`` of the ``monaibundle``
sample app) for ``init_scoring_methods`` / ``init_strategies``.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from monai.bundle import ConfigParser
from monai.utils import convert_to_tensor
from monailabel.interfaces.datastore import Datastore
from monailabel.interfaces.tasks.scoring import ScoringMethod
from monailabel.interfaces.tasks.strategy import Strategy
from torch import nn

from monai_ext.metrics import mean_sa_score
from monai_ext.networks.utils import FeatureRecorder

__all__ = [
    "LowestMuStrategy",
    "ProtoSegScoring",
    "default_quality_layers",
    "load_bundle_network",
    "protoseg_tasks",
]

logger = logging.getLogger(__name__)

#: the image-info key ``mu`` is stored under (with ``"_ts"`` appended: the model file's time it was computed with)
MU_KEY = "protoseg_mu"


def default_quality_layers(network: nn.Module, count: int = 2) -> list[str]:
    """The names of the last ``count`` convolution modules of ``network`` (in ``named_modules`` order)."""
    convs = [name for name, module in network.named_modules() if isinstance(module, nn.modules.conv._ConvNd)]
    if len(convs) < count:
        raise ValueError(f"the network has {len(convs)} convolution layers, fewer than {count}.")
    return convs[-count:]


def load_bundle_network(
    bundle_path: str | os.PathLike, layers: Sequence[str] | None = None, device: str | torch.device = "cpu"
) -> tuple[nn.Module, Any, list[str]]:
    """
    ``(network, preprocessing, layers)`` of a bundle folder: ``network_def`` of ``configs/inference.json`` with the
    weights of ``models/model.pt`` in eval mode on ``device``, its ``preprocessing`` and the layers to score:
    ``layers``, else the config's ``quality_layers`` if it defines one, else :func:`default_quality_layers`.
    """
    parser = ConfigParser()
    parser.read_config(os.path.join(bundle_path, "configs", "inference.json"))
    parser["bundle_root"] = str(bundle_path)
    network = parser.get_parsed_content("network_def", instantiate=True)
    state = torch.load(os.path.join(bundle_path, "models", "model.pt"), map_location="cpu", weights_only=True)
    if isinstance(state, Mapping) and set(state) == {"model"}:  # CheckpointSaver's {"model": network}
        state = state["model"]
    network.load_state_dict(state)
    network = network.to(device).eval()
    if layers is None:
        layers = parser.get_parsed_content("quality_layers") if "quality_layers" in parser else None
    layers = list(layers) if layers is not None else default_quality_layers(network)
    preprocessing = parser.get_parsed_content("preprocessing", instantiate=True)
    return network, preprocessing, layers


class ProtoSegScoring(ScoringMethod):
    """
    Score every unlabelled image of the datastore by ProtoSeg's ``mu``: the bundle's network predicts the image
    (after the bundle's ``preprocessing``), and :func:`monai_ext.metrics.mean_sa_score` of the recorded ``layers``
    against that prediction is written to the image info as ``key`` (and ``key + "_ts"``, the model file's time:
    images already scored with the same model file are skipped, as MONAI Label's epistemic scoring does).

    Args:
        bundle_path: the bundle folder (``configs/inference.json``, ``models/model.pt``).
        layers: module names to record; ``None``: the bundle's ``quality_layers`` or the last two convolutions.
        key: the image-info key.

    Request keys: ``device`` (default ``cuda`` when available, else ``cpu``), ``max_samples`` (0: all),
    ``force`` (re-score images already scored with this model file).
    """

    def __init__(self, bundle_path: str | os.PathLike, layers: Sequence[str] | None = None, key: str = MU_KEY) -> None:
        super().__init__(f"ProtoSeg mean SA score (mu) of the unlabelled images, stored as '{key}'")
        self.bundle_path = str(bundle_path)
        self.layers = None if layers is None else list(layers)
        self.key = key

    def info(self) -> dict[str, Any]:
        return {**super().info(), "key": self.key, "layers": self.layers}

    def __call__(self, request: Mapping[str, Any], datastore: Datastore) -> dict[str, Any]:
        start = time.time()
        device = request.get("device") or ("cuda" if torch.cuda.is_available() else "cpu")
        model_file = os.path.join(self.bundle_path, "models", "model.pt")
        model_ts = int(os.stat(model_file).st_mtime)
        network, preprocessing, layers = load_bundle_network(self.bundle_path, self.layers, device)
        images = datastore.get_unlabeled_images()
        todo = [
            i for i in images if request.get("force") or datastore.get_image_info(i).get(f"{self.key}_ts") != model_ts
        ]
        max_samples = int(request.get("max_samples") or 0)
        todo = todo[:max_samples] if max_samples else todo
        scores = {}
        with FeatureRecorder(network, layers) as recorder, torch.no_grad():
            for image_id in todo:
                data = preprocessing({"image": datastore.get_image_uri(image_id)})
                image = convert_to_tensor(data["image"], track_meta=False)
                pred = network(image[None].to(device))
                mu = float(mean_sa_score(list(recorder.pop().values()), pred)[0])
                datastore.update_image_info(image_id, {self.key: mu, f"{self.key}_ts": model_ts})
                scores[image_id] = mu
                logger.info("ProtoSeg mu:: %s => %.6f", image_id, mu)
        return {
            "total": len(images),
            "skipped": len(images) - len(todo),
            "executed": len(todo),
            "layers": layers,
            "scores": scores,
            "latency": round(time.time() - start, 3),
        }


class LowestMuStrategy(Strategy):
    """The unlabelled image with the lowest ``mu`` stored by :class:`ProtoSegScoring` (``key``); unscored images
    are not proposed; ``None`` when no unlabelled image has a score."""

    def __init__(self, key: str = MU_KEY) -> None:
        super().__init__(f"Unlabelled image with the lowest ProtoSeg mu ('{key}')")
        self.key = key

    def __call__(self, request: Mapping[str, Any], datastore: Datastore) -> dict[str, Any] | None:
        images = datastore.get_unlabeled_images(request.get("label_tag"), request.get("labels"))
        scored = [(info[self.key], i) for i in images if self.key in (info := datastore.get_image_info(i))]
        if not scored:
            return None
        mu, image_id = min(scored)
        logger.info("LowestMu:: selected %s (mu %.6f of %d scored)", image_id, mu, len(scored))
        return {"id": image_id, self.key: mu}


def protoseg_tasks(
    models: Mapping[str, str], layers: Sequence[str] | None = None
) -> tuple[dict[str, ProtoSegScoring], dict[str, LowestMuStrategy]]:
    """
    For every bundle ``{name: folder}`` (``self.models`` of the ``monaibundle`` app): a scoring method
    ``protoseg_mu_<name>`` and a strategy ``lowest_mu_<name>``, sharing the image-info key ``protoseg_mu_<name>``.
    """
    methods, strategies = {}, {}
    for name, path in models.items():
        key = f"{MU_KEY}_{name}"
        methods[key] = ProtoSegScoring(path, layers, key=key)
        strategies[f"lowest_mu_{name}"] = LowestMuStrategy(key)
    return methods, strategies
