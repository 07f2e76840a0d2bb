"""
Scaffolding shared by the tests: bundle paths and tiny sizes, running a bundle's config chain through ``monai.bundle``
as ``python -m monai.bundle run`` does, one session-wide tiny training per bundle, the one-thread fixture, a loader
for the command-line scripts under ``scripts/`` and the leaves of a checkpoint (to compare two runs tensor by tensor).
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch
from monai.bundle import ConfigParser, run

REPO = Path(__file__).resolve().parents[1]
BUNDLES_DIR = REPO / "bundles"
SCRIPTS_DIR = REPO / "scripts"

#: every bundle folder (a folder under ``bundles/`` with ``configs/train.json``)
BUNDLES = sorted(p.name for p in BUNDLES_DIR.iterdir() if (p / "configs" / "train.json").is_file())

#: overrides that make a bundle's networks and images tiny for smoke runs; a bundle not listed runs at 64 x 64
TINY: dict[str, dict[str, Any]] = {
    "gp_input_transfer": {
        "spatial_size": [64, 64],
        "channels": [4, 8, 16],
        "strides": [2, 2],
        "num_res_units": 1,
        "translator_layers": 56,
        "growth_rate": 4,
        "init_features": 8,
        "gp_num_steps": 10,
        "num_workers": 0,
    },
    "nlcen": {"spatial_size": [64, 64], "num_workers": 0},
    "protoseg": {"spatial_size": [64, 64], "features": [4, 4, 8, 8, 16, 4], "num_workers": 0},
    "robust3d": {"patch_size": [32, 32, 16], "channels": [4, 8, 16], "num_res_units": 1, "num_workers": 0},
    "robust_training": {"spatial_size": [32, 32], "channels": [4, 8, 16], "num_res_units": 1, "num_workers": 0},
    "sagan_seg": {
        "spatial_size": [32, 32],
        "channels": [4, 8, 8, 16, 16],
        "d_channels": [4, 8, 8, 16, 16],
        "num_workers": 0,
    },
}
DEFAULT_TINY: dict[str, Any] = {"spatial_size": [64, 64], "num_workers": 0}


def tiny(bundle: str) -> dict[str, Any]:
    """The tiny-size overrides of ``bundle`` (a new dict)."""
    return dict(TINY.get(bundle, DEFAULT_TINY))


def spatial_dims(bundle: str) -> int:
    """2 or 3: the number of spatial sizes of the network input in the bundle's ``metadata.json``."""
    meta = json.loads((BUNDLES_DIR / bundle / "configs" / "metadata.json").read_text())
    return len(meta["network_data_format"]["inputs"]["image"]["spatial_shape"])


def input_size(parser: ConfigParser) -> list[int]:
    """The spatial size of a network input of a bundle config: its ``spatial_size`` (the 2D bundles resize every image
    to it), else its ``patch_size`` (the 3D bundle's sliding-window patch: volumes keep their own size)."""
    return list(parser["spatial_size"] if "spatial_size" in parser else parser["patch_size"])


def attack_case(
    batch: int, in_channels: int, out_channels: int, spatial: Sequence[int], data_range: Sequence[float]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random images ``(batch, in_channels, *spatial)`` in ``data_range``, a tenth of the values on each bound of it,
    and random labels ``(batch, 1, *spatial)`` of ``max(out_channels, 2)`` classes (torch's global generator)."""
    low, high = data_range
    images = torch.rand(batch, in_channels, *spatial) * (high - low) + low
    images[torch.rand_like(images) < 0.1] = low
    images[torch.rand_like(images) < 0.1] = high
    return images, torch.randint(0, max(out_channels, 2), (batch, 1, *spatial))


def assert_in_ball_and_range(
    adv: torch.Tensor, images: torch.Tensor, eps_data: float, norm: str, data_range: Sequence[float]
) -> None:
    """``adv`` has the shape of ``images``, lies in ``data_range`` and in the ``norm`` (``"linf"`` or ``"l2"``, per
    sample) ball of radius ``eps_data`` around ``images``."""
    assert adv.shape == images.shape and adv.min() >= data_range[0] and adv.max() <= data_range[1]
    if norm == "linf":
        assert (adv - images).abs().max() <= eps_data + 1e-6
    else:
        assert (adv - images).flatten(1).norm(dim=1).max() <= eps_data + 1e-5


def config_files(bundle: str, configs: str | Sequence[str]) -> list[str]:
    """
    Paths of a config chain: ``"train"`` or ``["train", "evaluate"]`` (names under ``bundles/<bundle>/configs/``, with
    or without ``.json``) -> file paths, later files overriding earlier ones as in ``--config_file "['a','b']"``.
    """
    names = [configs] if isinstance(configs, str) else list(configs)
    folder = BUNDLES_DIR / bundle / "configs"
    return [str(folder / (name if name.endswith(".json") else f"{name}.json")) for name in names]


def read_bundle_config(bundle: str, configs: str | Sequence[str], **overrides: Any) -> ConfigParser:
    """A ``ConfigParser`` over a bundle's config chain (see :func:`config_files`) with ``overrides`` applied."""
    parser = ConfigParser()
    parser.read_config(config_files(bundle, configs))
    parser.update(overrides)
    return parser


def run_bundle_configs(bundle: str, configs: str | Sequence[str], **overrides: Any) -> None:
    """Run a bundle's config chain with ``monai.bundle.run``, as ``python -m monai.bundle run`` from the repo root."""
    files = config_files(bundle, configs)
    run(config_file=files[0] if len(files) == 1 else files, **overrides)


def state_leaves(state: Any, prefix: str = "") -> dict[str, Any]:
    """The leaves of a nested state dict (a checkpoint), by dotted key: ``{"network.conv.weight": tensor, ...}``."""
    if isinstance(state, dict):
        return {k: v for key, value in state.items() for k, v in state_leaves(value, f"{prefix}{key}.").items()}
    if isinstance(state, (list, tuple)):
        return {k: v for i, value in enumerate(state) for k, v in state_leaves(value, f"{prefix}{i}.").items()}
    return {prefix.rstrip("."): state}


@contextmanager
def torch_threads(num: int) -> Iterator[None]:
    """Set torch's intra-op threads for the block (tiny tensors: one thread beats two on a busy 2-core machine)."""
    before = torch.get_num_threads()
    torch.set_num_threads(num)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """One intra-op torch thread for a module's tests (``pytestmark = pytest.mark.usefixtures("one_thread")``)."""
    with torch_threads(1):
        yield


@pytest.fixture(scope="session")
def run_bundle() -> Callable[..., None]:
    """``run_bundle(bundle, configs, **overrides)``: run a config chain (see :func:`run_bundle_configs`)."""
    return run_bundle_configs


@pytest.fixture(scope="session")
def bundle_config() -> Callable[..., ConfigParser]:
    """``bundle_config(bundle, configs, **overrides)``: the parsed config chain (see :func:`read_bundle_config`)."""
    return read_bundle_config


@pytest.fixture(scope="session")
def trained_bundle(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], tuple[Path, Path]]:
    """
    ``trained_bundle(bundle) -> (bundle_root, dataset_dir)``: ``train.json`` run once per bundle and session, one
    epoch at the bundle's tiny sizes into a temporary ``bundle_root``, on the synthetic default data the bundle
    generates itself (no ``dataset_dir``: its ``data_root`` sizes, e.g. 16 training, 8 validation, 8 test images of
    128 x 128, or the 3D bundle's 6 / 2 / 2 volumes of 64 x 64 x 48, in ``bundle_root/synthetic_data``, which is
    ``dataset_dir``). Tests that write to the bundle root's ``eval/`` or
    ``predictions/`` share it.
    """
    done: dict[str, tuple[Path, Path]] = {}

    def train(bundle: str) -> tuple[Path, Path]:
        if bundle not in done:
            root = tmp_path_factory.mktemp(bundle)
            with torch_threads(1):
                run_bundle_configs(bundle, "train", bundle_root=str(root), epochs=1, batch_size=4, **tiny(bundle))
            done[bundle] = (root, root / "synthetic_data")
        return done[bundle]

    return train


@pytest.fixture(scope="session")
def load_script() -> Callable[[str], ModuleType]:
    """``load_script("sagan_report")``: ``scripts/sagan_report.py`` imported as a module (once per session)."""
    loaded: dict[str, ModuleType] = {}

    def load(name: str) -> ModuleType:
        if name not in loaded:
            spec = importlib.util.spec_from_file_location(name, SCRIPTS_DIR / f"{name}.py")
            assert spec is not None and spec.loader is not None, name
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            loaded[name] = module
        return loaded[name]

    return load
