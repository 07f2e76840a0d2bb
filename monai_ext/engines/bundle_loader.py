"""
A trained bundle in the model zoo's form, opened for evaluation the way MONAI's own bundle workflows meet it: a
:py:class:`monai.bundle.ConfigWorkflow` over the bundle's configs and its properties (``network_def``, the
evaluation's ``inferer``, ``preprocessing`` and data, ``dataset_dir``, ``device``, ``bundle_root``), the metadata's
``network_data_format`` for the classes, and labelled data for an attack. This project's ids (``num_classes``,
``data_root``) are shortcuts where a bundle defines them, never a requirement.

The config that describes the evaluation is the first of these in ``configs/`` (``.json``, ``.yaml`` or ``.yml``):

- ``train``, a training workflow with a validation section (``validate#inferer``, ``validate#preprocessing``,
  ``validate#dataset#data``): the zoo's JSON bundles (their ``evaluate.json`` overrides only its post-processing and
  handlers, which resample the prediction to the original image) and this project's bundles;
- ``evaluate`` or ``test``, an inference-type workflow (``inferer``, ``preprocessing``, ``dataset#data``) over
  labelled data: the zoo's YAML template (``test.yaml``);
- ``inference``, whose preprocessing loads the image alone: the label is then loaded and resampled onto the
  preprocessed image's grid with nearest-neighbour interpolation (MONAI's ``ResampleToMatchd``), which is what the
  same spatial transforms would do to it.

The bundle's own ``initialize`` is not run: it loads weights into the bundle's evaluator or prepares a training run.

Under a process group of several ranks (``torchrun``), each rank's data loader holds its part of the images (MONAI's
``DistributedSampler`` without padding: each image on one rank).
"""

from __future__ import annotations

import logging
import pickle
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import Any

import torch
from monai.bundle import ConfigParser, ConfigWorkflow, ReferenceResolver
from monai.bundle.properties import InferProperties, TrainProperties
from monai.bundle.utils import ID_SEP_KEY
from monai.data import DataLoader, Dataset, DistributedSampler
from monai.inferers import Inferer
from monai.transforms import Compose, EnsureChannelFirstd, EnsureTyped, LoadImaged, ResampleToMatchd
from monai.utils import BundlePropertyConfig, CommonKeys
from torch import nn

from monai_ext.data import load_datalist
from monai_ext.utils.distributed import get_world_size

__all__ = [
    "CONFIG_SUFFIXES",
    "EVALUATION_CONFIGS",
    "READ_IDS",
    "LoadedBundle",
    "configs_folder",
    "evaluation_workflow",
    "find_config",
    "load_bundle",
    "with_label",
]

logger = logging.getLogger(__name__)

IMAGE, LABEL = CommonKeys.IMAGE, CommonKeys.LABEL

#: the suffixes of a bundle's config files, in the order they are looked for
CONFIG_SUFFIXES = (".json", ".yaml", ".yml")

#: the configs that can describe a bundle's evaluation, in the order they are tried, with their workflow type
EVALUATION_CONFIGS = (("train", "train"), ("evaluate", "infer"), ("test", "infer"), ("inference", "infer"))

#: per workflow type, MONAI's names of the properties the evaluation reads: inferer, preprocessing, data
_PROPERTIES = {
    "train": ("val_inferer", "val_preprocessing", "val_dataset_data"),
    "infer": ("inferer", "preprocessing", "dataset_data"),
}

#: per workflow type, the id of the batch size of the evaluation's data loader (1 where the config has none)
_BATCH_SIZE = {"train": "validate#dataloader#batch_size", "infer": "dataloader#batch_size"}

#: MONAI's property tables of each workflow type
_PROPERTY_TABLES = {"train": TrainProperties, "infer": InferProperties}

#: the ``init_id`` of the workflow: an id no bundle defines, so that its own ``initialize`` does not run
_NO_INITIALIZE = "_monai_ext_no_initialize_"

#: the ids an override may give although the config does not define them: the ids that the loader reads
READ_IDS = ("bundle_root", "dataset_dir", "data_root", "device", "num_classes")


@dataclass
class LoadedBundle:
    """What an evaluation of a trained bundle needs, as :py:func:`load_bundle` found it."""

    name: str
    root: Path
    config_files: list[str]
    weights: Path
    network: nn.Module
    inferer: Inferer
    dataloader: DataLoader
    image_names: list[str]
    split: str
    data: str
    num_classes: int
    class_names: list[str] | None
    device: torch.device


def configs_folder(bundle: str | PathLike) -> Path:
    """The ``configs/`` folder of a bundle folder (raises ``FileNotFoundError`` where there is none)."""
    folder = Path(bundle) / "configs"
    if not folder.is_dir():
        raise FileNotFoundError(f"{bundle} is not a bundle folder: {folder} does not exist.")
    return folder


def find_config(configs_dir: Path, stem: str) -> Path | None:
    """``configs_dir/<stem>.json`` (or ``.yaml``, ``.yml``), the first that exists, else ``None``."""
    return next((p for p in (configs_dir / f"{stem}{s}" for s in CONFIG_SUFFIXES) if p.is_file()), None)


def evaluation_workflow(
    bundle: str | PathLike, config_file: str | Sequence[str] | None = None, **overrides: Any
) -> tuple[ConfigWorkflow, list[str]]:
    """
    The bundle's workflow that describes its evaluation (see the module docstring), initialised without the bundle's
    own ``initialize``, and its config files; ``workflow.workflow_type`` says which properties hold the evaluation.

    Args:
        bundle: the bundle folder, with ``configs/``.
        config_file: the config file or chain (later files override earlier ones, as ``monai.bundle run``'s
            ``--config_file``) instead of the first of :py:data:`EVALUATION_CONFIGS` in ``configs/``; its workflow
            type is ``"train"`` when it has a validation section, else ``"infer"``.
        overrides: config ids to values, as on ``monai.bundle run``'s command line: ids the config defines, ids inside
            them (``validate#inferer#sw_batch_size``), or the ids the loader reads (:py:data:`READ_IDS`).

    Raises:
        FileNotFoundError: no ``configs/`` folder, a ``config_file`` that does not exist, or no config of the bundle
            that describes an evaluation.
        ValueError: an override of an id that the config does not define (a mistyped option), or of an id inside one.
    """
    configs_dir = configs_folder(bundle)
    if config_file is not None:
        files = [str(f) for f in ([config_file] if isinstance(config_file, (str, PathLike)) else config_file)]
        missing = [f for f in files if not Path(f).is_file()]
        if missing:
            raise FileNotFoundError(f"config file {', '.join(missing)} does not exist.")
        candidates = [(files, t) for t in _PROPERTIES]
    else:
        found = [(find_config(configs_dir, stem), t) for stem, t in EVALUATION_CONFIGS]
        candidates = [([str(path)], t) for path, t in found if path is not None]
    for files, workflow_type in candidates:
        parser = ConfigParser()
        parser.read_config(files)
        table = _PROPERTY_TABLES[workflow_type]
        if all(table[name][BundlePropertyConfig.ID] in parser for name in _PROPERTIES[workflow_type][:2]):
            break
    else:
        raise FileNotFoundError(
            f"no config of {configs_dir} describes an evaluation: looked for a train config with validate#inferer and "
            "validate#preprocessing, or an evaluate, test or inference config with inferer and preprocessing "
            f"({'/'.join(CONFIG_SUFFIXES)})."
        )
    top_level = [key for key in overrides if ID_SEP_KEY not in ReferenceResolver.normalize_id(key)]
    unknown = [f"--{key}" for key in top_level if key not in READ_IDS and key not in parser]
    if unknown:
        raise ValueError(
            f"unknown option {', '.join(unknown)}: neither an option of the command nor an id of {', '.join(files)}."
        )
    try:
        workflow = ConfigWorkflow(config_file=files, logging_file=False, init_id=_NO_INITIALIZE,
                                  workflow_type=workflow_type, **overrides)  # fmt: skip
    except KeyError as error:
        raise ValueError(
            f"an override names an id inside one that {', '.join(files)} does not define: {error}"
        ) from error
    workflow.initialize()
    return workflow, files


def load_bundle(
    bundle: str | PathLike,
    ckpt_path: str | PathLike | None = None,
    split: str = "test",
    max_images: int | None = None,
    config_file: str | Sequence[str] | None = None,
    **overrides: Any,
) -> LoadedBundle:
    """
    Open a trained bundle for evaluation: its network with the trained weights, its evaluation inferer, and labelled
    data through its evaluation preprocessing, batched as its evaluation data loader batches them (one volume a batch
    in the zoo's 3D bundles); under a process group of several ranks, each rank's data loader holds its part of the
    images (MONAI's ``DistributedSampler`` with ``even_divisible=False``, in order: rank ``r`` of ``n`` the images
    ``r, r + n, ...``).

    The data, first found:

    - ``dataset_dir`` (``--dataset_dir``, or the bundle's default) holds a ``dataset.json``, or the bundle defines
      this project's ``data_root``: split ``split`` of it (``monai_ext.data.load_datalist``), or its ``validation``
      split where ``split`` is missing or has no labels;
    - else the evaluation's own data (``validate#dataset#data`` or ``dataset#data``), which must have labels.

    The number of classes is the config's ``num_classes`` where it defines one (it follows the overrides), else the
    metadata's ``network_data_format.outputs.pred.num_channels``; the class names come from its ``channel_def``.

    Args:
        bundle: the bundle folder.
        ckpt_path: the trained weights, a state dict or ``{"model": state dict}`` (how the zoo's ``CheckpointSaver``
            and MONAI Label store them); ``<bundle_root>/models/model.pt`` by default.
        split: the split of a dataset folder to evaluate.
        max_images: evaluate only the first images.
        config_file: see :py:func:`evaluation_workflow`.
        overrides: config ids to values (``bundle_root`` is ``bundle`` unless given), as
            :py:func:`evaluation_workflow` takes them.

    Raises:
        FileNotFoundError: no bundle folder, evaluation config or weights.
        ValueError: an unknown override, weights that do not load into the network, no labelled data, fewer images
            than ranks, or no number of classes.
    """
    overrides = {"bundle_root": str(bundle), **overrides}
    root = Path(overrides["bundle_root"])
    weights = Path(ckpt_path) if ckpt_path is not None else root / "models" / "model.pt"
    configs_folder(bundle)
    if not weights.is_file():
        raise FileNotFoundError(f"no trained weights at {weights}: train the bundle first, or pass --ckpt_path.")
    workflow, files = evaluation_workflow(bundle, config_file, **overrides)
    inferer_name, preprocessing_name, data_name = _PROPERTIES[workflow.workflow_type]
    network, device = _built(workflow, "network_def", files), torch.device(_built(workflow, "device", files))
    if network is None:
        raise ValueError(f"{', '.join(files)} defines no network_def.")
    network = network.to(device)
    try:
        network.load_state_dict(_state_dict(weights, device))
    except RuntimeError as error:  # a line per missing, unexpected or mis-shaped entry: the first two named
        lines = [line.strip() for line in str(error).splitlines()[1:] if line.strip()]
        raise ValueError(
            f"the weights at {weights} do not fit the network_def of {', '.join(files)} (overrides of the network "
            f"must be those of the training run): {'; '.join(lines[:2])}{' ...' if len(lines) > 2 else ''}"
        ) from error
    datalist, split, data = _datalist(workflow, data_name, split, files)
    datalist = datalist[:max_images] if max_images is not None else datalist
    preprocessing = _built(workflow, preprocessing_name, files)
    if not _loads_label(preprocessing):
        logger.info("%s loads the image alone: the label is resampled onto the preprocessed image", preprocessing_name)
        preprocessing = with_label(preprocessing)
    num_classes, class_names = _classes(workflow)
    dataset = Dataset(datalist, preprocessing)
    sampler = None
    if get_world_size() > 1:
        if len(dataset) < get_world_size():
            raise ValueError(f"{len(dataset)} images for {get_world_size()} processes: run at most {len(dataset)}.")
        sampler = DistributedSampler(dataset, even_divisible=False, shuffle=False)
    return LoadedBundle(
        name=Path(bundle).resolve().name,
        root=root,
        config_files=files,
        weights=weights,
        network=network,
        inferer=_built(workflow, inferer_name, files),
        dataloader=DataLoader(dataset, batch_size=_batch_size(workflow), shuffle=False, sampler=sampler),
        image_names=[_image_name(entry) for entry in datalist],
        split=split,
        data=data,
        num_classes=num_classes,
        class_names=class_names,
        device=device,
    )


def with_label(preprocessing: Compose) -> Compose:
    """``preprocessing`` of the image, then the label loaded and resampled onto the preprocessed image's grid (its
    affine and shape) with nearest-neighbour interpolation: the label as the same spatial transforms would make it."""
    return Compose([
        preprocessing,
        LoadImaged(LABEL, image_only=True),
        EnsureChannelFirstd(LABEL),
        ResampleToMatchd(LABEL, key_dst=IMAGE, mode="nearest"),
        EnsureTyped(LABEL),
    ])  # fmt: skip


def _built(workflow: ConfigWorkflow, name: str, files: list[str]) -> Any:
    """The workflow's property ``name``, built from its config (``files``, with the overrides)."""
    try:
        return getattr(workflow, name)
    except RuntimeError as error:  # MONAI's "Failed to instantiate / evaluate ...", with the component's error as cause
        raise ValueError(
            f"{name} of {', '.join(files)} fails to build: {str(error).splitlines()[0]} ({error.__cause__})"
        ) from error


def _batch_size(workflow: ConfigWorkflow) -> int:
    """The batch size of the bundle's evaluation data loader, 1 where it has none."""
    key = _BATCH_SIZE[workflow.workflow_type]
    return int(workflow.parser.get_parsed_content(key)) if key in workflow.parser else 1


def _loads_label(preprocessing: Any) -> bool:
    """Whether one of the (dictionary) transforms of ``preprocessing`` works on the label."""
    transforms = preprocessing.flatten().transforms if isinstance(preprocessing, Compose) else [preprocessing]
    return any(LABEL in getattr(t, "keys", ()) for t in transforms)


def _state_dict(path: Path, device: torch.device) -> Mapping[str, torch.Tensor]:
    """The network's state dict in ``path``: saved as it is, or under ``"model"``."""
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError) as error:  # not a file of torch.save, or not weights
        raise ValueError(
            f"{path} holds no weights that torch.load(..., weights_only=True) reads ({type(error).__name__})."
        ) from error
    return state["model"] if isinstance(state, Mapping) and isinstance(state.get("model"), Mapping) else state


def _datalist(
    workflow: ConfigWorkflow, data_name: str, split: str, files: list[str]
) -> tuple[list[dict[str, Any]], str, str]:
    """The labelled entries to evaluate, their split and where they come from, in words (see :py:func:`load_bundle`)."""
    parser = workflow.parser
    folder = next((parser.get_parsed_content(k) for k in ("data_root", "dataset_dir") if k in parser), None)
    if folder is not None and ("data_root" in parser or Path(folder, "dataset.json").is_file()):
        try:
            datalist = load_datalist(folder, split)
        except ValueError as error:
            if split == "validation":
                raise
            logger.warning("%s; evaluating the 'validation' split instead", error)
            split, datalist = "validation", load_datalist(folder, "validation")
        given = parser.get("dataset_dir")  # as the user wrote it: a relative path stays relative in the tables
        shown = given if isinstance(given, str) and given.strip() and given[0] not in "$@%" else folder
        return datalist, split, f"the {split} split of {shown}"
    data = list(_built(workflow, data_name, files) or [])
    data_id = workflow.properties[data_name][BundlePropertyConfig.ID].replace(ID_SEP_KEY, "#")  # as overrides write it
    if not data or not all(isinstance(entry, Mapping) and LABEL in entry for entry in data):
        raise ValueError(
            f"{data_id} of {', '.join(files)} lists no labelled images: pass --dataset_dir, a folder with a "
            "dataset.json whose entries have an image and a label."
        )
    return data, "evaluation", f"{data_id} of {', '.join(files)}"


def _classes(workflow: ConfigWorkflow) -> tuple[int, list[str] | None]:
    """The number of classes and their names (see :py:func:`load_bundle`)."""
    parser = workflow.parser
    pred = parser.get("_meta_#network_data_format#outputs#pred", {}) or {}
    channels = pred.get("channel_def") or {}
    names = [str(channels[k]) for k in sorted(channels, key=int)] or None
    if "num_classes" in parser:
        return int(parser.get_parsed_content("num_classes")), names
    if pred.get("num_channels"):
        return int(pred["num_channels"]), names
    raise ValueError(
        "the number of classes is unknown: the bundle's metadata has no network_data_format.outputs.pred.num_channels "
        "and its config no num_classes (pass --num_classes N)."
    )


def _image_name(entry: Mapping[str, Any]) -> str:
    """The file name of an entry's image (the first, for several)."""
    image = entry[IMAGE]
    return Path(image[0] if isinstance(image, (list, tuple)) else image).name
