"""
On CUDA, per bundle: a training epoch, inference and a PGD attack run on the GPU (skipped where there is none).
No bundle enables AMP (``amp: false`` in every ``train.json``), so none is run with it.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import BUNDLES, input_size, read_bundle_config, run_bundle_configs, tiny

from monai_ext.attacks import PGD


def train_infer_and_attack(bundle: str, device: torch.device, root: Path) -> None:
    """One tiny training epoch, inference and a 3-step PGD of ``bundle`` on ``device``, into ``root``."""
    sizes = {**tiny(bundle), "device": device}
    run_bundle_configs(bundle, "train", bundle_root=str(root), epochs=1, batch_size=4, **sizes)
    assert (root / "models" / "model.pt").is_file()
    run_bundle_configs(bundle, "inference", bundle_root=str(root), **sizes)

    parser = read_bundle_config(bundle, "inference", bundle_root=str(root), **sizes)
    network = parser.get_parsed_content("network_def").to(device).eval()
    state = torch.load(root / "models" / "model.pt", map_location=device, weights_only=True)
    network.load_state_dict(state)
    size = input_size(parser)
    images = torch.rand(2, parser["in_channels"], *size, device=device)
    labels = torch.randint(parser["num_classes"], (2, 1, *size), device=device)
    adversarial = PGD(4, alpha=1, num_steps=3)(network, images, labels)
    assert adversarial.device.type == device.type
    assert (adversarial - images).abs().max().item() <= 4 / 255 + 1e-6


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
@pytest.mark.parametrize("bundle", BUNDLES)
def test_train_infer_and_attack_on_cuda(bundle: str, tmp_path: Path) -> None:
    train_infer_and_attack(bundle, torch.device("cuda"), tmp_path)
