"""
Adversarial datasets on disk: the images written are the attack's (floats kept), the recorded signs rebuild them, a
folder of other settings is refused, two processes under torchrun write the dataset one process writes; and
``Attackd``'s record (per sample and batched), the datalist reader. Resuming after a kill and the image files are
``DatasetWriter``'s, which the builds run on: tests/test_dataset_writer.py.
"""

from __future__ import annotations

import json
import os
import runpy
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import REPO
from monai.transforms import EnsureChannelFirst, LoadImage

from monai_ext.attacks import LayeredPGD, SignSelectionFGSM
from monai_ext.data import ImageFileReader, load_adversarial_datalist, load_datalist, make_synthetic_dataset
from monai_ext.transforms import Attackd

pytestmark = pytest.mark.usefixtures("one_thread")

#: the build both the tests and the torchrun processes run: ``build(data, out)``
BUILD_SCRIPT = """
import sys
import torch
from monai.networks.nets import UNet
from monai.transforms import Compose, EnsureChannelFirstd, LoadImaged, Resized
from monai_ext.attacks import SignSelectionFGSM
from monai_ext.data import ImageFileReader, load_datalist
from monai_ext.engines import AdversarialDatasetWriter
from monai_ext.transforms import LabelToIndexd, ScaleIntensityToUnitd
from monai_ext.utils import destroy_distributed, init_distributed


def network():
    torch.manual_seed(0)
    return UNet(2, 1, 4, channels=(4, 8), strides=(2,), num_res_units=0)


def preprocessing():
    return Compose([
        LoadImaged(["image", "label"], image_only=True, reader=ImageFileReader),
        EnsureChannelFirstd(["image", "label"]),
        LabelToIndexd("label", label_values=[[0], [150], [200], [250]], accept_class_indices=True),
        ScaleIntensityToUnitd("image", intensity_range=(0, 255)),
        Resized("image", (24, 24), mode="area"),
        Resized("label", (24, 24), mode="nearest"),
    ])


def writer(data, out, attack=None, **kwargs):
    attack = attack or SignSelectionFGSM(0.05, unit="fraction")
    return AdversarialDatasetWriter(network(), attack, load_datalist(data, "training"), preprocessing(), out,
                                    progress=False, **kwargs)


if __name__ == "__main__":
    torch.set_num_threads(1)
    init_distributed("cpu")
    try:
        writer(sys.argv[1], sys.argv[2]).run()
    finally:
        destroy_distributed()
"""


@pytest.fixture(scope="module")
def build(tmp_path_factory: pytest.TempPathFactory) -> dict:
    folder = tmp_path_factory.mktemp("build")
    (folder / "build.py").write_text(BUILD_SCRIPT)
    data = make_synthetic_dataset(folder / "data", num_training=5, num_validation=1, num_test=1, spatial_size=(32, 32))
    return {"script": folder / "build.py", "data": data, **runpy.run_path(str(folder / "build.py"))}


def _read(path: Path) -> torch.Tensor:
    return EnsureChannelFirst()(LoadImage(reader=ImageFileReader, image_only=True)(str(path))).as_tensor()


def _content(root: Path) -> tuple[dict, dict[str, bytes]]:
    files = {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}
    return json.loads((root / "dataset.json").read_text()), files


def test_written_images_are_the_attack_output_and_the_signs_rebuild_them(build: dict, tmp_path: Path) -> None:
    out = build["writer"](build["data"], tmp_path / "signs", batch_size=2).run()  # batches of 2, 2 and 1 items
    document = json.loads(out.read_text())
    entries = document["training"]
    assert len(entries) == 5 and document["settings"]["attack"] == "SignSelectionFGSM"
    assert document["complete"] == {"training": True}
    attack_settings = document["settings"]["settings"]
    network, preprocessing = build["network"]().eval(), build["preprocessing"]()
    attack = SignSelectionFGSM(0.05, unit="fraction")
    for entry, source in zip(entries, load_datalist(build["data"], "training"), strict=True):
        adversarial = entry["adversarial"]
        assert adversarial["attack"] == "SignSelectionFGSM" and adversarial["settings"] == attack_settings
        assert entry["source"] == source and len(adversarial["record"]["signs"]) == 4
        item = preprocessing(dict(entry["source"]))
        clean = item["image"].as_tensor()[None]
        rebuilt = attack.apply(network, clean, [adversarial["record"]["signs"]])[0]
        stored = _read(tmp_path / "signs" / entry["image"])
        assert stored.dtype == torch.float32 and stored.shape == (1, 24, 24)
        torch.testing.assert_close(stored, rebuilt * 255.0, rtol=0, atol=0)  # in the source's units, exactly
        assert torch.equal(_read(tmp_path / "signs" / entry["label"]).float(), item["label"].as_tensor())
    assert load_adversarial_datalist(tmp_path / "signs") == [
        {"image": str(tmp_path / "signs" / e["image"]), "label": str(tmp_path / "signs" / e["label"])} for e in entries
    ]


def test_other_settings_are_refused_unless_overwrite(build: dict, tmp_path: Path) -> None:
    build["writer"](build["data"], tmp_path).run()
    before = _content(tmp_path)
    other = LayeredPGD(0.05, 0.02, num_steps=1, unit="fraction")
    with pytest.raises(ValueError, match=r"settings \(settings\.attack, settings\.settings differ.*--overwrite True"):
        build["writer"](build["data"], tmp_path, attack=other).run()
    assert _content(tmp_path) == before
    build["writer"](build["data"], tmp_path, attack=other, overwrite=True).run()
    entries = json.loads((tmp_path / "dataset.json").read_text())["training"]
    assert [e["adversarial"]["record"] for e in entries] == [{"classes": [0, 1, 2, 3]}] * 5


@pytest.mark.slow
def test_torchrun_writes_the_dataset_of_one_process(build: dict, tmp_path: Path) -> None:
    """Two CPU processes (gloo) build disjoint halves; rank 0 merges: the same files as one process writes."""
    build["writer"](build["data"], tmp_path / "single").run()
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    command += [str(build["script"]), str(build["data"]), str(tmp_path / "ranks")]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": str(REPO)}
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert _content(tmp_path / "ranks") == _content(tmp_path / "single")


def test_attackd_records_what_the_attack_chose(build: dict) -> None:
    network = build["network"]().eval()
    item = build["preprocessing"]()(load_datalist(build["data"])[0])
    attack = SignSelectionFGSM(0.05, unit="fraction")
    out = Attackd("image", attack=attack, network=network, record_key="adversarial")(item)
    record = out["adversarial"]
    assert record["attack"] == "SignSelectionFGSM" and record["settings"]["eps"] == 0.05
    rebuilt = attack.apply(network, item["image"].as_tensor()[None], [record["record"]["signs"]])[0]
    assert torch.equal(out["image"].as_tensor(), rebuilt)
    json.dumps(record)  # JSON-able
    items = [build["preprocessing"]()(d) for d in load_datalist(build["data"])[:3]]
    batch = {k: torch.stack([i[k].as_tensor() for i in items]) for k in ("image", "label")}
    batched = Attackd("image", attack=attack, network=network, record_key="adversarial", batched=True)(batch)
    alone = [Attackd("image", attack=attack, network=network, record_key="adversarial")(i) for i in items]
    for record, one in zip(batched["adversarial"], alone, strict=True):  # one record per image, the image's own
        assert record["record"]["signs"] == one["adversarial"]["record"]["signs"]
        assert record["record"]["loss"] == pytest.approx(one["adversarial"]["record"]["loss"], rel=1e-5)
    with pytest.raises(ValueError, match="with_record"):
        Attackd("image", attack=lambda n, x, y: x, network=network, record_key="adversarial")


def test_writer_and_datalist_errors(build: dict, tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="min-max scaling cannot be inverted"):
        build["writer"](build["data"], tmp_path, intensity_range="minmax")
    with pytest.raises(FileNotFoundError, match="holds no dataset.json: build the adversarial dataset first"):
        load_adversarial_datalist([tmp_path])
