# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#     http://www.apache.org/licenses/LICENSE-2.0
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS,
# WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
# See the License for the specific language governing permissions and
# limitations under the License.
"""A ``prepare_batch`` for MONAI's engines that perturbs each batch toward its labels: the GP oracle."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from monai_ext.attacks.gradient_perturbation import GradientPerturbation
from monai_ext.engines.utils.prepare_batch import ImagePrepareBatch
from monai_ext.utils.checks import check_callable

__all__ = ["GradientPerturbationPrepareBatch"]


class GradientPerturbationPrepareBatch(ImagePrepareBatch):
    """
    A ``prepare_batch`` for :py:class:`monai.engines.SupervisedEvaluator` that moves each batch to the device (with
    ``prepare_batch``, MONAI's default by default), then replaces its images by ``I + Delta``, the gradient
    perturbation of Taghanaki et al. (MICCAI 2019) of ``network`` toward the batch's own labels.

    Evaluating the segmenter on these is the paper's oracle ("we perturb the test images with their corresponding
    ground truths ... Dice ~ 1.0"): the labels of the images evaluated are used to make them, so it bounds what a
    translator could reach, and is no test result. The steps each image took and whether it converged are kept in
    :py:attr:`iterations` and :py:attr:`converged`, in the order of the batches; :py:meth:`summary` sums them up.

    Example (bundle config)::

        "validate#evaluator#prepare_batch": {
            "_target_": "monai_ext.engines.utils.GradientPerturbationPrepareBatch",
            "network": "@segmenter",
            "perturbation": {"_target_": "monai_ext.attacks.GradientPerturbation", "gamma": 1.0, "num_steps": 100}
        }

    Args:
        network: the segmenter to perturb for (the engine's network, or the segmenter inside it).
        perturbation: the GP settings; ``None`` is ``GradientPerturbation()`` (gamma 1, 100 steps).
        prepare_batch: the inner ``prepare_batch`` returning ``(images, labels)`` or ``(images, labels, args,
            kwargs)``; ``None`` is MONAI's :py:class:`~monai.engines.utils.PrepareBatchDefault`.
    """

    def __init__(
        self,
        network: nn.Module,
        perturbation: GradientPerturbation | None = None,
        prepare_batch: Callable | None = None,
    ) -> None:
        self.network = check_callable("network", network, "a torch.nn.Module (or a callable)")
        self.perturbation = GradientPerturbation() if perturbation is None else perturbation
        check_callable("perturbation.perturb", getattr(self.perturbation, "perturb", None), "a GradientPerturbation")
        super().__init__(prepare_batch)
        self.iterations: list[int] = []
        self.converged: list[bool] = []

    def images(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """``I + Delta`` of the batch, its steps and convergence kept."""
        result = self.perturbation.perturb(self.network, images, labels)
        self.iterations += result.iterations.tolist()
        self.converged += result.converged.tolist()
        return result.images

    def summary(self) -> dict[str, Any]:
        """``{"images", "converged", "mean_iterations", "max_iterations"}`` over the batches prepared so far."""
        count = len(self.iterations)
        return {
            "images": count,
            "converged": sum(self.converged),
            "mean_iterations": sum(self.iterations) / count if count else float("nan"),
            "max_iterations": max(self.iterations, default=0),
        }
