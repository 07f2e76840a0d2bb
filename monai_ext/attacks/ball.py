# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#     http://www.apache.org/licenses/LICENSE-2.0
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS,
# WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
# See the License for the specific language governing permissions and
# limitations under the License.
"""
The ball an attack stays in: budgets given in intensity levels of an 8-bit scale (``unit="levels"``: ``8`` means
``8 / 255`` of the data range) or as a fraction of the data range (``unit="fraction"``), turned into the units of the
data by :py:func:`to_data_units`, and :py:func:`project`, onto the L-inf or L2 ball around the clean images and into
the data range.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from monai_ext.utils.checks import check_choice, check_interval, check_non_negative

__all__ = ["LEVELS", "NORMS", "UNITS", "project", "to_data_units"]

#: number of intensity steps of an 8-bit scale: ``unit="levels"`` measures a budget in ``1 / LEVELS`` of the range.
LEVELS = 255
UNITS = ("levels", "fraction")
NORMS = ("linf", "l2")


def to_data_units(value: float, unit: str = "levels", data_range: Sequence[float] = (0.0, 1.0)) -> float:
    """
    Turn a budget (epsilon, step size) into the units of the data.

    Args:
        value: the budget, ``>= 0``.
        unit: ``"levels"``: intensity levels of an 8-bit scale, ``value / 255`` of the data range (the convention of
            the FGSM and I-FGSM papers: ``eps=8`` on images in ``[0, 1]`` is ``8 / 255``); ``"fraction"``: a fraction
            of the data range (``0.01`` is 1% of it).
        data_range: ``(min, max)`` intensity range of the images.

    Returns:
        the budget in data units: ``value / 255 * (max - min)`` or ``value * (max - min)``.
    """
    unit = check_choice("unit", unit, UNITS)
    low, high = check_interval("data_range", data_range)
    scale = (high - low) / LEVELS if unit == "levels" else high - low
    return float(value) * scale


def project(
    adv: torch.Tensor,
    clean: torch.Tensor,
    eps: float,
    norm: str = "linf",
    data_range: Sequence[float] | None = (0.0, 1.0),
) -> torch.Tensor:
    """
    Project adversarial images onto the epsilon ball around the clean images, then clip them to the data range.

    Clipping after projecting keeps the images in the ball: the clean images lie in the data range, so clipping only
    moves a value towards its clean value.

    Args:
        adv: adversarial images ``(B, C, *spatial)``.
        clean: clean images, same shape.
        eps: radius of the ball in data units, ``>= 0``. For ``"linf"`` the largest change of any value; for
            ``"l2"`` the Euclidean norm of the change over all values of one sample (all channels and voxels).
        norm: ``"linf"`` or ``"l2"``.
        data_range: ``(min, max)`` to clip to, or ``None`` not to clip.

    Returns:
        the projected images, same shape as ``adv``.
    """
    norm = check_choice("norm", norm, NORMS)
    eps = check_non_negative("eps", eps)
    if norm == "linf":
        # the difference is clamped, as in torchattacks and most reference code, so that iterated attacks match
        # them bit for bit: sign() turns any rounding difference of a near-zero gradient into a whole step
        adv = clean + torch.clamp(adv - clean, min=-eps, max=eps)
    else:
        delta = adv - clean
        norms = delta.flatten(1).norm(p=2, dim=1).view(-1, *([1] * (delta.ndim - 1)))
        factor = torch.clamp(eps / norms.clamp_min(1e-12), max=1.0)
        adv = clean + delta * factor
    if data_range is not None:
        low, high = check_interval("data_range", data_range)
        adv = adv.clamp(low, high)
    return adv
