"""
What every bundle must pass, written once and run for every folder under ``bundles/`` (a new bundle is covered by
adding its folder; its tiny sizes go in ``conftest.TINY``).

Config layout (the model zoo's): ``train.json`` holds the shared definitions; every other config except
``inference.json`` is an override that holds only its differences, run as ``--config_file "['train.json','x.json']"``.
An override named ``<parent>_<what>.json`` layers on ``<parent>.json`` in turn (``robustness_pgd.json``: train +
robustness + robustness_pgd). ``inference.json`` stays standalone because MONAI Label reads it alone; the drift
test below ties it to ``train.json``.
"""

from __future__ import annotations

import csv
import json
import math
import shlex
from collections.abc import Callable
from pathlib import Path
from typing import Any

import fire
import nibabel as nib
import numpy as np
import pytest
import torch
from conftest import BUNDLES, BUNDLES_DIR, config_files, input_size, read_bundle_config, spatial_dims, tiny
from monai.bundle import ConfigParser, ConfigWorkflow, ckpt_export, onnx_export, verify_metadata, verify_net_in_out
from monai.bundle.properties import InferProperties, TrainProperties
from monai.bundle.reference_resolver import ReferenceResolver
from monai.utils import BundleProperty, BundlePropertyConfig, ensure_tuple
from PIL import Image

from monai_ext.data import file_stem, load_datalist, make_synthetic_dataset

pytestmark = pytest.mark.usefixtures("one_thread")

STANDALONE = ("train", "inference")
MAX_EXPRESSION = 100
#: steps that relate the image to the label: with the label gone they check nothing, so inference has none
PAIR_CHECKS = {"monai_ext.transforms.CheckSpatialShaped"}
#: the size of the tiny synthetic items by spatial dimensions: 2D images (width, height), 3D volumes (x, y, z)
ITEM_SIZE = {2: (48, 40), 3: (40, 36, 24)}
#: metrics that are distances in mm, not scores in [0, 1] (nan where a prediction or a label is empty)
DISTANCES = {"hd95"}
#: bundles whose eval_metrics await their first real run (filled from it, with the docs' results)
UNMEASURED: set[str] = set()


def _config_names(bundle: str) -> list[str]:
    return sorted(p.stem for p in (BUNDLES_DIR / bundle / "configs").glob("*.json") if p.stem != "metadata")


def _chain(bundle: str, name: str) -> list[str]:
    """The config chain that runs ``name``: itself for train / inference, else train + its parents + itself."""
    if name in STANDALONE:
        return [name]
    names = _config_names(bundle)
    parents = sorted((p for p in names if p not in STANDALONE and name.startswith(p + "_")), key=len)
    return ["train", *parents, name]


CHAINS = [pytest.param(b, _chain(b, n), id=f"{b}-{'+'.join(_chain(b, n))}") for b in BUNDLES for n in _config_names(b)]
OVERRIDES = [pytest.param(b, n, id=f"{b}-{n}") for b in BUNDLES for n in _config_names(b) if n not in STANDALONE]
FILES = [pytest.param(b, n, id=f"{b}-{n}") for b in BUNDLES for n in _config_names(b)]


def _raw(bundle: str, name: str) -> dict[str, Any]:
    return json.loads((BUNDLES_DIR / bundle / "configs" / f"{name}.json").read_text())


def _strings(config: Any) -> list[str]:
    """Every string in a raw config (keys excluded)."""
    if isinstance(config, str):
        return [config]
    values = config.values() if isinstance(config, dict) else config if isinstance(config, list) else []
    return [s for v in values for s in _strings(v)]


def _refs(config: Any) -> set[str]:
    """The ids a raw config refers to with ``@``."""
    return {ref for s in _strings(config) for ref in ReferenceResolver.match_refs_pattern(s)}


@pytest.mark.parametrize("bundle, chain", CHAINS)
def test_config_chain_parses_and_resolves(bundle: str, chain: list[str], tmp_path: Path) -> None:
    """Every ``@`` reference of the merged chain names an id; imports, network and preprocessing instantiate."""
    parser = read_bundle_config(bundle, chain, bundle_root=str(tmp_path), **tiny(bundle))
    parser.parse()
    missing = sorted(ref for ref in _refs(parser.get()) if ref not in parser)
    assert not missing, f"{chain}: references to missing ids {missing}"
    parser.get_parsed_content("imports")
    assert isinstance(parser.get_parsed_content("network_def"), torch.nn.Module)
    assert callable(parser.get_parsed_content("preprocessing"))
    for key in ("initialize", "run"):
        assert isinstance(parser[key], list) and parser[key], f"{chain}: no {key} list"


@pytest.mark.parametrize("bundle, name", OVERRIDES)
def test_override_does_not_restate_network_or_preprocessing(bundle: str, name: str) -> None:
    """
    Only train.json and inference.json define ``network_def`` and ``preprocessing``. An override may swap in another
    network (a baseline such as a plain U-Net, another ``_target_``), never restate train.json's.
    """
    raw = _raw(bundle, name)
    assert "preprocessing" not in raw, f"{name}.json restates preprocessing instead of layering on train.json"
    if "network_def" in raw:
        target = _raw(bundle, "train")["network_def"]["_target_"]
        assert raw["network_def"].get("_target_") != target, f"{name}.json restates train.json's network_def"


@pytest.mark.parametrize("bundle, name", OVERRIDES)
def test_override_holds_only_differences(bundle: str, name: str) -> None:
    """No top-level id of an override repeats its parents' value, and ``imports`` extend (``+imports``)."""
    raw = _raw(bundle, name)
    assert "imports" not in raw, f"{name}.json replaces train.json's imports: use '+imports' to add some"
    parent = read_bundle_config(bundle, _chain(bundle, name)[:-1])
    restated = sorted(k for k, v in raw.items() if not k.startswith("+") and k in parent and parent[k] == v)
    assert not restated, f"{name}.json restates {restated} with the same value"


@pytest.mark.parametrize("bundle, name", FILES)
def test_expressions_are_one_liners(bundle: str, name: str) -> None:
    """``$`` expressions stay short; longer logic belongs in a named, tested ``monai_ext`` function."""
    long = [s for s in _strings(_raw(bundle, name)) if s.startswith("$") and len(s) > MAX_EXPRESSION]
    assert not long, f"{name}.json: expressions over {MAX_EXPRESSION} characters: {long}"


def _image_steps(parser: ConfigParser) -> list[dict[str, Any]]:
    """The raw preprocessing steps that apply to ``image``, each restricted to that key."""
    steps = []
    for step in parser["preprocessing"]["transforms"]:
        while isinstance(step, str) and step.startswith("@"):
            step = parser[step[1:]]
        if not isinstance(step, dict) or "image" not in ensure_tuple(step.get("keys")):
            continue
        if step.get("_target_") not in PAIR_CHECKS:
            steps.append({**step, "keys": ["image"]})
    return steps


@pytest.mark.parametrize("bundle", BUNDLES)
def test_inference_matches_train(bundle: str) -> None:
    """
    inference.json restates train.json's network and image preprocessing (MONAI Label reads it alone, where a ``%``
    macro to train.json would not resolve); here they must be the same config, and so must the options they use.
    """
    train = read_bundle_config(bundle, "train")
    infer = read_bundle_config(bundle, "inference")
    assert infer["network_def"] == train["network_def"]
    assert _image_steps(infer) == _image_steps(train)
    for ref in sorted(_refs(infer["network_def"]) | _refs(_image_steps(infer))):
        assert infer[ref] == train[ref], f"inference.json's {ref} is {infer[ref]!r}, train.json's {train[ref]!r}"


@pytest.mark.parametrize("bundle", BUNDLES)
def test_zoo_property_ids(bundle: str) -> None:
    """The ids MONAI's ``check_properties()`` requires of a train and of an inference workflow."""
    for name, properties in (("train", TrainProperties), ("inference", InferProperties)):
        parser = read_bundle_config(bundle, name)
        required = [p[BundlePropertyConfig.ID] for p in properties.values() if p.get(BundleProperty.REQUIRED)]
        missing = [i for i in required if i is not None and i not in parser]
        assert not missing, f"{name}.json lacks {missing}"


@pytest.mark.parametrize("bundle", BUNDLES)
def test_verify_net_in_out(bundle: str) -> None:
    configs = BUNDLES_DIR / bundle / "configs"
    verify_net_in_out(
        net_id="network_def",
        meta_file=str(configs / "metadata.json"),
        config_file=str(configs / "inference.json"),
        n=1,
        any=8,
        **tiny(bundle),
    )


def _tiny_datasets(tmp_path_factory: pytest.TempPathFactory, seed: int) -> Callable[[str], str]:
    """``make(bundle)``: a tiny synthetic dataset (2 / 1 / 1) of the bundle's dimensions (:data:`ITEM_SIZE`), once
    per dimension."""
    made: dict[int, str] = {}

    def make(bundle: str) -> str:
        dims = spatial_dims(bundle)
        if dims not in made:
            folder = tmp_path_factory.mktemp(f"tiny{dims}d_{seed}")
            made[dims] = make_synthetic_dataset(folder, 2, 1, 1, spatial_size=ITEM_SIZE[dims], seed=seed)
        return made[dims]

    return make


@pytest.fixture(scope="module")
def tiny_items(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], dict[str, list[dict[str, str]]]]:
    """``tiny_items(bundle)``: the datalists of a tiny synthetic dataset of the bundle's dimensions, by split."""
    make = _tiny_datasets(tmp_path_factory, seed=3)
    return lambda bundle: {split: load_datalist(make(bundle), split) for split in ("training", "validation", "test")}


@pytest.mark.parametrize("bundle", BUNDLES)
def test_monai_label_inference_ids(bundle: str, tmp_path: Path, tiny_items: Callable) -> None:
    """As MONAI Label's ``BundleInferTask``: inference.json alone, its ids, one image through them."""
    parser = ConfigParser()
    parser.read_config(config_files(bundle, "inference")[0])
    parser.update({"bundle_root": str(tmp_path), "output_dir": str(tmp_path / "out"), **tiny(bundle)})
    network = parser.get_parsed_content("network_def").eval()
    preprocessing = parser.get_parsed_content("preprocessing")
    inferer = parser.get_parsed_content("inferer")
    postprocessing = parser.get_parsed_content("postprocessing")
    data = preprocessing({"image": tiny_items(bundle)["test"][0]["image"]})
    size = ITEM_SIZE[spatial_dims(bundle)]  # a 3D bundle keeps the volume's size, a 2D bundle resizes the image
    assert tuple(data["image"].shape) == (parser["in_channels"], *(input_size(parser) if len(size) == 2 else size))
    with torch.no_grad():
        data["pred"] = inferer(data["image"][None], network)[0]
    assert data["pred"].shape[0] == parser["num_classes"]
    out = postprocessing(data)
    assert tuple(out["pred"].shape[-len(size) :]) == size  # back at the image's own size
    assert not (tmp_path / "synthetic_data").exists()


@pytest.mark.parametrize("bundle", BUNDLES)
def test_monai_label_train_ids(bundle: str, tmp_path: Path, tiny_items: Callable) -> None:
    """As MONAI Label's ``BundleTrainTask``: train.json alone, its data, epochs and handlers set through its ids."""
    parser = ConfigParser()
    parser.read_config(config_files(bundle, "train")[0])
    parser.update(
        {
            "bundle_root": str(tmp_path),
            "device": "$torch.device('cpu')",
            "train#trainer#max_epochs": 1,
            "train#dataset#data": tiny_items(bundle)["training"],
            "validate#dataset#data": tiny_items(bundle)["validation"],
            **tiny(bundle),
        }
    )
    assert isinstance(parser["train#handlers"], list)
    assert parser.get_parsed_content("device") == torch.device("cpu")
    assert isinstance(parser.get_parsed_content("network_def"), torch.nn.Module)
    assert isinstance(parser.get_parsed_content("network"), torch.nn.Module)
    trainer = parser.get_parsed_content("train#trainer")
    assert trainer.state.max_epochs == 1 and len(trainer.data_loader.dataset) == 2
    assert not (tmp_path / "synthetic_data").exists(), "MONAI Label's data did not replace the bundle's datalist"


@pytest.mark.slow
@pytest.mark.parametrize("bundle", BUNDLES)
def test_smoke_train(bundle: str, trained_bundle) -> None:
    """One epoch on the synthetic default data; its best model loads into inference.json's network."""
    root, data = trained_bundle(bundle)
    assert (data / "dataset.json").is_file()
    parser = read_bundle_config(bundle, "inference", bundle_root=str(root), **tiny(bundle))
    state = torch.load(parser.get_parsed_content("ckpt_path"), map_location="cpu", weights_only=True)
    parser.get_parsed_content("network_def").load_state_dict(state, strict=True)


@pytest.mark.slow
@pytest.mark.parametrize("bundle", BUNDLES)
def test_smoke_evaluate(bundle: str, trained_bundle, run_bundle) -> None:
    root, _ = trained_bundle(bundle)
    run_bundle(bundle, ["train", "evaluate"], bundle_root=str(root), **tiny(bundle))
    parser = read_bundle_config(bundle, ["train", "evaluate"], bundle_root=str(root))
    with open(Path(parser.get_parsed_content("eval_dir")) / "metrics.csv") as f:
        metrics = {row[0]: float(row[1]) for row in csv.reader(f) if row}
    assert metrics.keys() - DISTANCES, metrics
    assert all(0.0 <= v <= 1.0 for k, v in metrics.items() if k not in DISTANCES), metrics
    assert all(v >= 0.0 or math.isnan(v) for k, v in metrics.items() if k in DISTANCES), metrics


@pytest.mark.slow
@pytest.mark.parametrize("bundle", BUNDLES)
def test_smoke_infer(bundle: str, trained_bundle, run_bundle) -> None:
    """One class-index mask per test image, at the image's own size (a volume's mask also with its affine)."""
    root, data = trained_bundle(bundle)
    run_bundle(bundle, "inference", bundle_root=str(root), **tiny(bundle))
    parser = read_bundle_config(bundle, "inference", bundle_root=str(root))
    out = Path(parser.get_parsed_content("output_dir"))
    images = [Path(item["image"]) for item in load_datalist(str(data), "test")]
    for image in images:
        path = out / f"{file_stem(image.name)}_seg{parser['output_ext']}"
        if spatial_dims(bundle) == 3:
            mask, volume = nib.load(path), nib.load(image)
            assert mask.shape == volume.shape and np.allclose(mask.affine, volume.affine), image.name
            mask = np.asarray(mask.dataobj)
        else:
            mask = np.asarray(Image.open(path))
            assert mask.shape == np.asarray(Image.open(image)).shape[:2], image.name
        assert mask.max() < parser["num_classes"], image.name


@pytest.mark.parametrize(
    "bundle",
    [
        pytest.param(b, marks=pytest.mark.xfail(strict=True, reason="not measured yet")) if b in UNMEASURED else b
        for b in BUNDLES
    ],
)
def test_metadata_eval_metrics_are_the_documented_result(bundle: str) -> None:
    """``eval_metrics`` hold a real result: every value is in (0, 1] and written in the bundle's docs, to 4 places."""
    metrics = json.loads((BUNDLES_DIR / bundle / "configs" / "metadata.json").read_text())["eval_metrics"]
    docs = (BUNDLES_DIR / bundle / "docs" / "README.md").read_text()
    assert metrics and "eval_metrics" in docs
    for name, value in metrics.items():
        assert 0.0 < value <= 1.0, (name, value)
        assert f"{value:.4f}" in docs, f"{bundle}: eval_metrics {name} = {value} is not in docs/README.md"


# --- the model zoo's checks: metadata schema, check_properties, TorchScript and ONNX export --------------------------

#: the metadata schema every metadata.json names (its URL is unreachable offline): an unchanged copy, see tests/data
SCHEMA = Path(__file__).parent / "data" / "meta_schema_20240725.json"
SCHEMA_SHA256 = "cd64aa8a5904426f6fc6855dabe46af8c742d5bad644b4e9cfb78ebad09ad678"
#: the largest |exported - eager| output allowed (TorchScript and onnxruntime against the eager network)
EXPORT_ATOL = 1e-5


@pytest.mark.parametrize("bundle", BUNDLES)
def test_verify_metadata(bundle: str) -> None:
    """MONAI's ``verify_metadata`` against the local schema copy (present with the right hash: nothing is downloaded)."""
    meta = BUNDLES_DIR / bundle / "configs" / "metadata.json"
    assert json.loads(meta.read_text())["schema"].endswith("/" + SCHEMA.name)
    verify_metadata(meta_file=str(meta), filepath=str(SCHEMA), hash_val=SCHEMA_SHA256, hash_type="sha256")


def _workflow_types(name: str) -> tuple[str, ...]:
    """
    The MONAI workflow types a config chain is checked as: every chain layered on train.json is a train workflow
    (as the model zoo runs ``train.json`` + ``evaluate.json``); the evaluation also an ``eval`` workflow, whose
    top-level ``dataset``, ``evaluator`` and ``inferer`` evaluate.json names; inference.json an ``infer`` workflow.
    """
    return {"inference": ("infer",), "evaluate": ("train", "eval")}.get(name, ("train",))


WORKFLOWS = [
    pytest.param(b, _chain(b, n), t, id=f"{b}-{'+'.join(_chain(b, n))}-{t}")
    for b in BUNDLES
    for n in _config_names(b)
    for t in _workflow_types(n)
]


@pytest.fixture(scope="module")
def zoo_dataset(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], str]:
    """``zoo_dataset(bundle)``: the folder of a tiny synthetic dataset of the bundle's dimensions."""
    return _tiny_datasets(tmp_path_factory, seed=4)


@pytest.mark.parametrize("bundle, chain, workflow_type", WORKFLOWS)
def test_check_properties(
    bundle: str, chain: list[str], workflow_type: str, tmp_path: Path, zoo_dataset: Callable
) -> None:
    """MONAI's ``ConfigWorkflow(...).check_properties()`` after ``initialize()``: no property missing or misnamed."""
    overrides = {"bundle_root": str(tmp_path), "dataset_dir": zoo_dataset(bundle), **tiny(bundle)}
    parser = read_bundle_config(bundle, chain, **overrides)
    for key in ("ckpt_path", "source_ckpt_path"):  # chains that load weights as they initialise
        if any(f"@{key}" in str(expr) for expr in parser["initialize"]):
            ckpt = Path(parser.get_parsed_content(key))
            ckpt.parent.mkdir(parents=True, exist_ok=True)
            torch.save(parser.get_parsed_content("network_def").state_dict(), ckpt)
    workflow = ConfigWorkflow(
        config_file=config_files(bundle, chain),
        meta_file=str(BUNDLES_DIR / bundle / "configs" / "metadata.json"),
        logging_file=False,
        workflow_type=workflow_type,
        **overrides,
    )
    workflow.initialize()
    try:
        assert workflow.check_properties() == []
    finally:
        workflow.finalize()  # multi_gpu_train.json: ends the one-process group its initialize made


def _doc_commands(bundle: str) -> dict[str, list[str]]:
    """The ``python -m monai.bundle ckpt_export|onnx_export ...`` commands of a bundle's docs/README.md, as argv."""
    text = (BUNDLES_DIR / bundle / "docs" / "README.md").read_text().replace("\\\n", " ")
    commands = {}
    for line in text.splitlines():
        words = shlex.split(line) if line.startswith("python -m monai.bundle ") else []
        if words[3:4] in (["ckpt_export"], ["onnx_export"]):
            commands[words[3]] = words[3:]
    return commands


def _run_doc_command(bundle: str, argv: list[str], ckpt: Path, out_dir: Path, *extra: str) -> None:
    """Run a documented command as ``python -m monai.bundle`` would (fire), on ``ckpt``, writing into ``out_dir``."""
    models = f"bundles/{bundle}/models/"
    argv = [a.replace(models + "model.pt", str(ckpt)).replace(models, f"{out_dir}/") for a in argv]
    argv = [a.replace("bundles/", f"{BUNDLES_DIR}/") if a.startswith("bundles/") else a for a in argv]
    sizes = {k: v for k, v in tiny(bundle).items() if k != "num_workers"}
    argv += [w for k, v in sizes.items() for w in (f"--{k}", json.dumps(v))] + list(extra)
    fire.Fire({"ckpt_export": ckpt_export, "onnx_export": onnx_export}, command=argv)


@pytest.mark.slow
@pytest.mark.parametrize("bundle", BUNDLES)
def test_export_commands(bundle: str, trained_bundle, tmp_path: Path) -> None:
    """
    The export commands of the bundle's docs, run on its trained model at tiny sizes: ``ckpt_export`` scripts the
    network (TorchScript, any input size) and ``onnx_export`` writes an ONNX model at the export shape; both give the
    eager network's logits within ``EXPORT_ATOL``, the ONNX model under onnxruntime.
    """
    ort = pytest.importorskip("onnxruntime")
    commands = _doc_commands(bundle)
    assert sorted(commands) == ["ckpt_export", "onnx_export"], f"{bundle}: docs/README.md lacks an export command"
    root, _ = trained_bundle(bundle)
    ckpt = root / "models" / "model.pt"
    parser = read_bundle_config(bundle, "inference", **tiny(bundle))
    network = parser.get_parsed_content("network_def")
    network.load_state_dict(torch.load(ckpt, map_location="cpu", weights_only=True))
    network.eval()
    shape = [1, parser["in_channels"], *input_size(parser)]
    generator = torch.Generator().manual_seed(0)

    _run_doc_command(bundle, commands["ckpt_export"], ckpt, tmp_path)
    scripted = torch.jit.load(str(tmp_path / "model.ts"))
    larger = [2, shape[1], *(2 * s for s in shape[2:])]  # scripted, not traced: another batch and image size work
    for x in (torch.rand(shape, generator=generator), torch.rand(larger, generator=generator)):
        with torch.no_grad():
            torch.testing.assert_close(scripted(x), network(x), rtol=0.0, atol=EXPORT_ATOL)

    _run_doc_command(bundle, commands["onnx_export"], ckpt, tmp_path, "--input_shape", json.dumps(shape))
    session = ort.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    x = torch.rand(shape, generator=generator)
    (onnx_out,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    with torch.no_grad():
        eager = network(x).numpy()
    assert onnx_out.shape == eager.shape
    assert np.abs(onnx_out - eager).max() <= EXPORT_ATOL, np.abs(onnx_out - eager).max()
