"""
Provenance that identifies the weights (issue 21, item 6): a results file records the digest of the weights an engine
evaluated, taken after the evaluator's ``CheckpointLoader`` ran (not of the freshly seeded network it was built with),
and a resume with other weights is refused in one line that names the file and both digests; the one resume check the
engines share (item 7).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from monai.engines import SupervisedEvaluator
from monai.handlers import CheckpointLoader, MeanDice, from_engine
from monai.transforms import AsDiscreted, Compose
from torch import nn
from torch.utils.data import DataLoader

from monai_ext.engines import AttackEvaluation, LevelSweep, UniformNoise
from monai_ext.engines.utils import state_digest
from monai_ext.utils import json_safe, write_json
from monai_ext.utils.resume import resume_results

pytestmark = pytest.mark.usefixtures("one_thread")


def _network(scale: float) -> nn.Module:
    """A one-pixel classifier of two classes whose weights are ``scale`` (the trained models) or seeded (``0``)."""
    torch.manual_seed(0)
    net = nn.Conv2d(1, 2, kernel_size=1)
    if scale:
        with torch.no_grad():
            net.weight.copy_(torch.tensor([[[[-scale]]], [[[scale]]]]))
            net.bias.copy_(torch.tensor([scale / 2, -scale / 2]))
    return net.eval()


def _checkpoint(folder: Path, scale: float) -> tuple[Path, str]:
    """A trained model saved as a bundle saves it, and the digest of its weights."""
    path = folder / f"model_{scale:g}.pt"
    trained = _network(scale)
    torch.save(trained.state_dict(), path)
    return path, state_digest(trained)


def _evaluator(checkpoint: Path) -> SupervisedEvaluator:
    """A freshly seeded network whose weights the evaluator's ``CheckpointLoader`` loads when it runs (as a bundle's
    ``evaluate.json`` wires it)."""
    network = _network(0)
    gen = torch.Generator().manual_seed(0)
    labels = [(torch.rand(1, 8, 8, generator=gen) > 0.5).float() for _ in range(4)]
    data = [{"image": 0.2 + 0.6 * label, "label": label} for label in labels]
    post = Compose([AsDiscreted(keys=["pred", "label"], argmax=[True, False], to_onehot=2)])
    dice = MeanDice(include_background=False, output_transform=from_engine(["pred", "label"]))
    loader = CheckpointLoader(load_path=str(checkpoint), load_dict={"model": network})
    return SupervisedEvaluator(torch.device("cpu"), DataLoader(data, batch_size=2), network, postprocessing=post,
                               key_val_metric={"mean_dice": dice}, val_handlers=[loader])  # fmt: skip


def _evaluation(checkpoint: Path, out: Path) -> tuple[Callable[[], Any], Path]:
    engine = AttackEvaluation(_evaluator(checkpoint), {"clean": None}, ["background", "fg"], output_dir=out)
    return engine.run, out / "attack_evaluation.json"


def _sweep(checkpoint: Path, out: Path) -> tuple[Callable[[], Any], Path]:
    engine = LevelSweep(_evaluator(checkpoint), UniformNoise, [0.0, 0.1], results_file=out / "noise.json")
    return engine.run, out / "noise.json"


@pytest.mark.parametrize("engine", [_evaluation, _sweep], ids=["AttackEvaluation", "LevelSweep"])
def test_results_name_the_loaded_weights_and_refuse_others(engine: Callable, tmp_path: Path) -> None:
    first, first_digest = _checkpoint(tmp_path, 20.0)
    other, other_digest = _checkpoint(tmp_path, 5.0)
    run, results_file = engine(first, tmp_path / "eval")
    run()
    assert json.loads(results_file.read_text())["settings"]["network"] == first_digest
    run()  # the same weights: resumed, nothing refused
    run, _ = engine(other, tmp_path / "eval")
    with pytest.raises(ValueError) as refused:
        run()
    message = str(refused.value)
    assert "\n" not in message and str(results_file) in message
    assert first_digest in message and other_digest in message and "overwrite" in message


def test_resume_results_returns_the_document_of_the_same_settings(tmp_path: Path) -> None:
    path = tmp_path / "results.json"
    settings = {"network": "a" * 20, "attacks": {"pgd": {"eps": 2.0, "steps": (10,)}}}
    assert resume_results(path, settings) is None and resume_results(None, settings) is None  # nothing to resume
    document = {"settings": settings, "results": [1, 2]}
    write_json(path, document)
    assert resume_results(path, settings) == json_safe(document)  # tuples compared as the file reads them back
    other = {"network": "b" * 20, "attacks": {"pgd": {"eps": 4.0, "steps": [10]}}}
    with pytest.raises(ValueError, match=r"\(attacks\.pgd, network differ; .*'a{20}' in the file, 'b{20}' now\)"):
        resume_results(path, other, what="the results of a sweep")
    assert resume_results(path, other, overwrite=True) is None  # start afresh
    assert resume_results(path, document, key=None) is not None  # the whole document as the settings
    path.write_text("{}")
    with pytest.raises(ValueError, match="is not a file of results .*KeyError"):
        resume_results(path, settings)
