# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#     http://www.apache.org/licenses/LICENSE-2.0
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS,
# WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
# See the License for the specific language governing permissions and
# limitations under the License.
"""Dictionary transform over the attacks of :py:mod:`monai_ext.attacks`, for building adversarial datasets."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping
from typing import Any

import torch
from monai.config import KeysCollection
from monai.inferers import Inferer
from monai.transforms import MapTransform
from monai.utils import convert_to_dst_type, convert_to_tensor
from torch import nn

from monai_ext.attacks import describe_inferer, with_inferer
from monai_ext.utils.checks import check_callable
from monai_ext.utils.files import json_safe

__all__ = ["Attackd", "attack_record"]


def _network_device(network: nn.Module) -> torch.device:
    for tensor in network.parameters():
        return tensor.device
    for tensor in network.buffers():
        return tensor.device
    return torch.device("cpu")


def _jsonable(value: Any) -> Any:
    try:
        return json_safe(value)
    except TypeError:  # a callable loss or target
        return repr(value)


def attack_record(attack: Callable, record: Mapping[str, Any], inferer: Inferer | None = None) -> dict[str, Any]:
    """
    ``{"attack": class name, "settings": attack.settings(), "record": record}`` as JSON values (a setting JSON
    cannot hold, such as a callable loss, as its ``repr``); the settings name ``inferer``, the inferer the attack ran
    the network through, when it is not plain (:py:func:`~monai_ext.attacks.describe_inferer`).
    """
    settings = attack.settings() if hasattr(attack, "settings") else {}
    if describe_inferer(inferer) is not None:
        settings = {**settings, "inferer": describe_inferer(inferer)}
    settings = {k: _jsonable(v) for k, v in settings.items()}
    return {"attack": type(attack).__name__, "settings": settings, "record": json_safe(dict(record))}


class Attackd(MapTransform):
    """
    Attack one sample with an attack of :py:mod:`monai_ext.attacks` (``attack(network, images, labels) -> images``):
    adds the batch dimension, runs the attack on the network's device, removes the batch dimension and gives the
    adversarial image back on the device and in the type of the input (a ``MetaTensor`` keeps its meta data).

    For building adversarial datasets, e.g. the adversarial training sets of the robust training paper::

        transforms = Compose([
            LoadImaged(keys=["image", "label"]),
            EnsureChannelFirstd(keys=["image", "label"]),
            ScaleIntensityd(keys="image"),
            Attackd(keys="image", label_key="label", attack=PGD(eps=2.55, alpha=0.1, num_steps=100, target=0),
                    network=network),
        ])

    With ``record_key``, the attack's name, settings and per-image record (``attack.with_record``: the signs of
    :py:class:`~monai_ext.attacks.SignSelectionFGSM`, the class order of :py:class:`~monai_ext.attacks.LayeredPGD`)
    go to ``data[record_key]`` as ``{"attack": name, "settings": {...}, "record": {...}}`` (of the last key attacked),
    so that a dataset of adversarial images can say how each was made.

    With ``batched=True`` the data are a collated batch (``(B, C, *spatial)``, labels ``(B, 1, *spatial)``), attacked
    in one call, and ``data[record_key]`` is a list of the ``B`` records: :py:class:`monai_ext.data.DatasetWriter`
    runs it that way as its ``batch_transform``.

    Run it in the main process (``num_workers=0``, or cache the result once with ``CacheDataset`` /
    ``PersistentDataset``): a network on a GPU does not go into ``DataLoader`` worker processes. To attack batches on
    the fly during training or evaluation, use :py:class:`monai_ext.engines.utils.AdversarialPrepareBatch` instead.

    Args:
        keys: keys of the images to attack, each ``(C, *spatial)``, each attacked with the same label.
        label_key: key of the true class indices ``(1, *spatial)`` or ``(*spatial)``.
        attack: the attack, any callable ``(network, images, labels) -> images`` over a batch.
        network: the network to attack. Its modes, parameters and gradients are left as they were (by the attacks
            of :py:mod:`monai_ext.attacks`).
        device: where to run the attack; ``None`` (default) is the device of the network's parameters.
        inferer: the inferer the attack runs the network through (a bundle's ``SlidingWindowInferer``, to attack whole
            volumes), see :py:func:`~monai_ext.attacks.with_inferer`; ``None`` (default): the network as it is. A
            record (``record_key``) then names it in its settings.
        record_key: if given, the key that receives what the attack did (see above); the attack must have
            ``with_record`` (every attack of :py:mod:`monai_ext.attacks` has).
        batched: the data are a collated batch.
        allow_missing_keys: don't raise an exception if a key is missing.
    """

    def __init__(
        self,
        keys: KeysCollection = "image",
        label_key: str = "label",
        attack: Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
        network: nn.Module | None = None,
        device: str | torch.device | None = None,
        record_key: str | None = None,
        batched: bool = False,
        allow_missing_keys: bool = False,
        inferer: Inferer | None = None,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.label_key = label_key
        self.attack = check_callable("attack", attack, "a callable (network, images, labels) -> images")
        self.network = with_inferer(check_callable("network", network, "a torch.nn.Module (or a callable)"), inferer)
        self.inferer = inferer
        self.device = torch.device(device) if device is not None else None
        self.record_key = record_key
        if record_key is not None:
            check_callable("attack.with_record", getattr(attack, "with_record", None), "a method (see Attack)")
        if not isinstance(batched, bool):
            raise TypeError(f"batched must be True or False, got {batched!r}.")
        self.batched = batched

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        if self.label_key not in d:
            raise KeyError(f"label key {self.label_key!r} is not in the data (keys: {list(d)}).")
        if self.device is not None:
            device = self.device
        else:
            device = _network_device(self.network) if isinstance(self.network, nn.Module) else torch.device("cpu")
        label = convert_to_tensor(d[self.label_key], track_meta=False, device=device)
        label = label if self.batched else label[None]
        for key in self.key_iterator(d):
            img = d[key]
            batch = convert_to_tensor(img, track_meta=False, device=device)
            if batch.ndim < 2:
                raise ValueError(f"{key!r} must be channel-first (C, *spatial), got shape {tuple(batch.shape)}.")
            if not batch.is_floating_point():
                batch = batch.float()
            batch = batch if self.batched else batch[None]
            if self.record_key is None:
                adv = self.attack(self.network, batch, label)
            else:
                adv, records = self.attack.with_record(self.network, batch, label)
                records = [attack_record(self.attack, record, self.inferer) for record in records]
                d[self.record_key] = records if self.batched else records[0]
            adv = adv if self.batched else adv[0]
            d[key] = convert_to_dst_type(adv, img, dtype=adv.dtype)[0]
        return d
