"""monai_ext.utils.bundle: the helpers bundle configs call instead of long ``$`` expressions."""

from __future__ import annotations

import ast
import logging
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn

import monai_ext.utils.bundle as bundle_utils
from monai_ext.utils import load_weights, log_summary, mask_cleanup


def _net(extra: bool = False) -> nn.Module:
    torch.manual_seed(0)
    layers = [nn.Conv2d(1, 2, 3), nn.Conv2d(2, 2, 1)] if extra else [nn.Conv2d(1, 2, 3)]
    return nn.Sequential(*layers)


def test_load_weights_without_a_path_leaves_the_network() -> None:
    net = _net()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    for path in (None, "", "  "):
        assert load_weights(net, path) is net
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())


def test_load_weights_strict(tmp_path: Path) -> None:
    source = _net()
    with torch.no_grad():
        source[0].weight.fill_(0.5)
    torch.save(source.state_dict(), tmp_path / "m.pt")
    target = _net()
    assert load_weights(target, tmp_path / "m.pt", device="cpu") is target
    assert torch.equal(target[0].weight, torch.full_like(target[0].weight, 0.5))
    with pytest.raises(RuntimeError, match="Missing key"):
        load_weights(_net(extra=True), tmp_path / "m.pt")


def test_load_weights_not_strict_copies_the_matching_names_and_shapes(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    source = _net(extra=True)
    with torch.no_grad():
        source[0].bias.fill_(3.0)
    torch.save(source.state_dict(), tmp_path / "m.pt")
    target = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Conv2d(2, 4, 1), nn.Conv2d(4, 1, 1))  # [1]: other shapes, [2]: new
    kept = {k: v.clone() for k, v in target.state_dict().items() if not k.startswith("0.")}
    with caplog.at_level(logging.INFO, logger="monai_ext.utils.bundle"):
        load_weights(target, str(tmp_path / "m.pt"), torch.device("cpu"), strict=False, min_fraction=0.3)
    assert torch.equal(target[0].bias, torch.full_like(target[0].bias, 3.0))
    assert all(torch.equal(target.state_dict()[k], v) for k, v in kept.items())  # not loadable: kept as they were
    assert "Loaded 2 of the 6 entries of Sequential" in caplog.text


def _mask() -> torch.Tensor:
    mask = torch.zeros(1, 12, 12)
    mask[0, 1:6, 1:6] = 1  # the larger blob, with a hole
    mask[0, 3, 3] = 0
    mask[0, 8:10, 8:10] = 1  # a small blob
    return mask


def test_mask_cleanup_steps() -> None:
    mask = _mask()
    assert torch.equal(torch.as_tensor(mask_cleanup("pred", 2)({"pred": mask.clone()})["pred"]), mask)
    kept = torch.as_tensor(mask_cleanup("pred", 2, keep_components=1)({"pred": mask.clone()})["pred"])
    assert kept[0, 8:10, 8:10].sum() == 0 and kept[0, 3, 3] == 0 and kept.sum() == mask[0, 1:6, 1:6].sum()
    filled = torch.as_tensor(mask_cleanup("pred", 2, fill_holes=True)({"pred": mask.clone()})["pred"])
    assert filled[0, 3, 3] == 1 and filled.sum() == mask.sum() + 1
    both = torch.as_tensor(mask_cleanup(["pred"], 2, 1, True)({"pred": mask.clone()})["pred"])
    expected = torch.zeros(1, 12, 12)
    expected[0, 1:6, 1:6] = 1
    assert torch.equal(both, expected)
    assert len(mask_cleanup("pred", 3, keep_components=0, fill_holes=False).transforms) == 0


def test_mask_cleanup_applies_to_every_foreground_class() -> None:
    mask = torch.zeros(1, 10, 10)
    mask[0, 0:4, 0:4] = 1
    mask[0, 8, 8] = 1
    mask[0, 5:9, 0:4] = 2
    mask[0, 0, 9] = 2
    out = torch.as_tensor(mask_cleanup("pred", 3, keep_components=1)({"pred": mask})["pred"])
    assert out[0, 8, 8] == 0 and out[0, 0, 9] == 0
    assert (out == 1).sum() == 16 and (out == 2).sum() == 16


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"num_classes": 1}, ValueError, "num_classes"),
        ({"num_classes": True}, ValueError, "num_classes"),
        ({"keep_components": -1}, ValueError, "keep_components"),
        ({"keep_components": True}, ValueError, "keep_components"),
        ({"keep_components": 1.5}, ValueError, "keep_components"),
        ({"fill_holes": "false"}, TypeError, "fill_holes"),
        ({"fill_holes": 1}, TypeError, "fill_holes"),
    ],
)
def test_mask_cleanup_refuses_bad_arguments(kwargs: dict, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        mask_cleanup("pred", **{"num_classes": 2, **kwargs})


def test_log_summary_formats_state_and_fields(caplog: pytest.LogCaptureFixture) -> None:
    engine = SimpleNamespace(state=SimpleNamespace(best_metric=0.97412, best_metric_epoch=57, metrics={"dice": 0.5}))
    template = (
        "best {state.best_metric:.4f} at epoch {state.best_metric_epoch}, dice {state.metrics[dice]:.2f} in {path}"
    )
    with caplog.at_level(logging.INFO, logger="monai_ext.test"):
        message = log_summary(engine, logger="monai_ext.test", template=template, path="models/model.pt")
    assert message == "best 0.9741 at epoch 57, dice 0.50 in models/model.pt"
    assert [(r.name, r.levelno, r.getMessage()) for r in caplog.records] == [("monai_ext.test", logging.INFO, message)]
    assert log_summary(None, template="{n} images, {state}", n=3) == "3 images, None"
    with pytest.raises(KeyError, match="path"):
        log_summary(engine, template="{path}")


def test_bundle_helpers_import_no_other_monai_ext_package() -> None:
    tree = ast.parse(Path(bundle_utils.__file__).read_text())
    modules = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    modules += [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    assert not [m for m in modules if m.startswith("monai_ext")], modules
