"""
Any optimiser given on the command line works with a bundle's other optimiser settings (issue 21, item 6): for every
bundle and every optimiser of its ``train.json`` (``optimizer``, SAGAN's ``d_optimizer``), ``--<id>#_target_ <class>``
builds an optimiser that takes a step. The arguments the configs pass are ones every torch optimiser takes (``params``,
``lr``, ``weight_decay``); an optimiser's own (SAGAN's Adam ``betas``) go with its class in ``_target_``.
"""

from __future__ import annotations

import json

import pytest
import torch
from conftest import BUNDLES, BUNDLES_DIR, read_bundle_config, tiny

pytestmark = pytest.mark.usefixtures("one_thread")

OPTIMIZERS = ["torch.optim.Adadelta", "torch.optim.SGD", "torch.optim.Adam", "monai.optimizers.Novograd"]


def _optimizer_ids(bundle: str) -> list[str]:
    """The ids of ``train.json`` that define an optimiser (``optimizer``, ``d_optimizer``)."""
    config = json.loads((BUNDLES_DIR / bundle / "configs" / "train.json").read_text())
    return [key for key, value in config.items() if key.endswith("optimizer") and isinstance(value, dict)]


@pytest.mark.parametrize("target", OPTIMIZERS, ids=lambda t: t.rsplit(".", 1)[-1])
@pytest.mark.parametrize("bundle", BUNDLES)
def test_optimizer_override_builds_and_steps(bundle: str, target: str) -> None:
    ids = _optimizer_ids(bundle)
    assert "optimizer" in ids
    parser = read_bundle_config(bundle, "train", **tiny(bundle), **{f"{i}#_target_": target for i in ids})
    for optimizer_id in ids:
        optimizer = parser.get_parsed_content(optimizer_id)
        assert f"{type(optimizer).__module__}.{type(optimizer).__name__}".endswith(target.rsplit(".", 1)[-1])
        params = [p for group in optimizer.param_groups for p in group["params"]]
        before = [p.detach().clone() for p in params]
        optimizer.zero_grad()
        sum((p.float() ** 2).sum() for p in params).backward()
        optimizer.step()
        assert any(not torch.equal(b, p) for b, p in zip(before, params, strict=True)), f"{optimizer_id} took no step"


def test_defaults_keep_each_methods_settings() -> None:
    """Swapping is the override's business: without one, each bundle trains with its method's optimiser settings."""
    for bundle in BUNDLES:
        parser = read_bundle_config(bundle, "train", **tiny(bundle))
        for optimizer_id in _optimizer_ids(bundle):
            optimizer = parser.get_parsed_content(optimizer_id)
            assert isinstance(optimizer, torch.optim.Adam), (bundle, optimizer_id)
            betas = (0.0, 0.9) if bundle == "sagan_seg" else (0.9, 0.999)  # SAGAN's TTUR Adam; Adam's own default
            assert tuple(optimizer.defaults["betas"]) == betas, (bundle, optimizer_id)
            weight_decay = 1e-4 if bundle in ("nlcen", "gp_input_transfer") else 0.0
            assert optimizer.defaults["weight_decay"] == weight_decay, (bundle, optimizer_id)
