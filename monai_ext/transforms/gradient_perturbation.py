# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#     http://www.apache.org/licenses/LICENSE-2.0
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS,
# WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
# See the License for the specific language governing permissions and
# limitations under the License.
"""Dictionary transform over :py:class:`monai_ext.attacks.GradientPerturbation`, for building GP training sets."""

from __future__ import annotations

from collections.abc import Hashable, Mapping

import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform
from monai.utils import convert_to_dst_type, convert_to_tensor, ensure_tuple
from torch import nn

from monai_ext.attacks.gradient_perturbation import GradientPerturbation
from monai_ext.transforms.attacks import _network_device
from monai_ext.utils.checks import check_callable

__all__ = ["GradientPerturbationd"]


class GradientPerturbationd(MapTransform):
    """
    Gradient perturbation of Taghanaki et al. (MICCAI 2019) toward each image's own label, as a dictionary
    transform: ``I + Delta`` goes to the output key (the image itself by default), and the steps taken and whether
    the prediction reached the label to ``<output key>_gp_iterations`` and ``<output key>_gp_converged`` (0-d long
    and bool tensors), optionally ``Delta`` to a key of its own.

    One sample by default (``(C, *spatial)``; the batch dimension is added and removed here), or, with
    ``batched=True``, a collated batch (``(B, C, *spatial)``; the records are then ``(B,)``), which lets GP stop
    each image early inside a batch: :py:class:`monai_ext.data.DatasetWriter` runs it that way over a dataset::

        gp = GradientPerturbationd("image", "label", network=segmenter, perturbation=GradientPerturbation(1.0),
                                   output_keys="perturbed", batched=True)
        DatasetWriter("gp_data", transform=preprocessing, batch_transform=gp,
                      save_keys={"image": "float32", "perturbed": "float32", "label": "uint8"},
                      record_keys=["perturbed_gp_iterations", "perturbed_gp_converged"]).run(datalist)

    The result is on the device and of the type of the input (a ``MetaTensor`` keeps its meta data). Run it in the
    main process (a network on a GPU does not go into ``DataLoader`` workers).

    Args:
        keys: keys of the images to perturb, each with the label at ``label_key``.
        label_key: key of the true class indices ``(1, *spatial)`` (batched: ``(B, 1, *spatial)``).
        network: the trained segmenter; its modes, parameters and gradients are left as they were.
        perturbation: the GP settings; ``None`` is ``GradientPerturbation()`` (gamma 1, 100 steps).
        output_keys: where ``I + Delta`` goes, one per key; ``None`` replaces the images.
        delta_keys: where ``Delta`` goes, one per key (a plain tensor of the image's shape); ``None`` for nowhere.
        batched: the data are a collated batch.
        device: where GP runs; ``None`` is the device of the network's parameters.
        allow_missing_keys: don't raise an exception if a key is missing.
    """

    def __init__(
        self,
        keys: KeysCollection = "image",
        label_key: str = "label",
        network: nn.Module | None = None,
        perturbation: GradientPerturbation | None = None,
        output_keys: KeysCollection | None = None,
        delta_keys: KeysCollection | None = None,
        batched: bool = False,
        device: str | torch.device | None = None,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.label_key = label_key
        self.network = check_callable("network", network, "a torch.nn.Module (or a callable)")
        self.perturbation = GradientPerturbation() if perturbation is None else perturbation
        check_callable("perturbation.perturb", getattr(self.perturbation, "perturb", None), "a GradientPerturbation")
        self.output_keys = self._per_key("output_keys", output_keys) or self.keys
        self.delta_keys = self._per_key("delta_keys", delta_keys)
        if not isinstance(batched, bool):
            raise TypeError(f"batched must be True or False, got {batched!r}.")
        self.batched = batched
        self.device = torch.device(device) if device is not None else None

    def _per_key(self, name: str, keys: KeysCollection | None) -> tuple[Hashable, ...]:
        if keys is None:
            return ()
        keys = ensure_tuple(keys)
        if len(keys) != len(self.keys):
            raise ValueError(f"{name} must give one key per key of keys {list(self.keys)}, got {list(keys)}.")
        return keys

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        if self.label_key not in d:
            raise KeyError(f"label key {self.label_key!r} is not in the data (keys: {list(d)}).")
        device = self.device
        if device is None:
            device = _network_device(self.network) if isinstance(self.network, nn.Module) else torch.device("cpu")
        label = convert_to_tensor(d[self.label_key], track_meta=False, device=device)
        label = label if self.batched else label[None]
        for key in self.key_iterator(d):
            index = self.keys.index(key)
            img = d[key]
            batch = convert_to_tensor(img, track_meta=False, device=device)
            batch = batch if self.batched else batch[None]
            if batch.ndim < 3:
                raise ValueError(f"{key!r} must be channel-first (C, *spatial), got shape {tuple(img.shape)}.")
            result = self.perturbation.perturb(self.network, batch.float(), label)
            out = self.output_keys[index]
            d[out] = convert_to_dst_type(self._unbatch(result.images), img, dtype=result.images.dtype)[0]
            d[f"{out}_gp_iterations"] = self._unbatch(result.iterations).cpu()
            d[f"{out}_gp_converged"] = self._unbatch(result.converged).cpu()
            if self.delta_keys:
                d[self.delta_keys[index]] = self._unbatch(result.delta)
        return d

    def _unbatch(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.batched else x[0]
