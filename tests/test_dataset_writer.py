"""``DatasetWriter``: exact NIfTI files and a decathlon dataset.json, resumed after a kill with every item exactly once,
refusing other settings, and ranks' shares merged into the file one process writes; ``write_image``'s formats read back
exactly."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.transforms import EnsureChannelFirst, LoadImage

from monai_ext.data import DatasetWriter, ImageFileReader, load_datalist, write_image

pytestmark = pytest.mark.usefixtures("one_thread")


class Killed(Exception):
    pass


def _datalist(n: int = 7) -> list[dict]:
    return [{"image": f"/data/case{i}.png", "label": f"/data/case{i}_mask.png"} for i in range(n)]


class _Transform:
    """Makes each item's arrays from its index (float values that 8 or 16 bits would round), counting its calls."""

    def __init__(self, kill_at: int | None = None) -> None:
        self.calls: list[str] = []
        self.kill_at = kill_at

    def __call__(self, item: dict) -> dict:
        index = int(Path(item["image"]).stem[4:])
        if index == self.kill_at:
            raise Killed(f"killed at item {index}")
        self.calls.append(item["image"])
        gen = torch.Generator().manual_seed(index)
        return {
            **item,
            "image": torch.randn(2, 6, 5, generator=gen) * 1e3,
            "label": (torch.rand(1, 6, 5, generator=gen) > 0.5).float(),
            "steps": torch.tensor(index * 3),
        }


def _shift(batch: dict) -> dict:
    """A batch transform: adds each item's index / 10 to its image (shows it ran on the collated batch)."""
    return {**batch, "image": batch["image"] + batch["steps"].view(-1, 1, 1, 1) / 30.0}


def _writer(out: Path, **kwargs) -> DatasetWriter:
    args = {"save_keys": {"image": "float32", "label": "uint8"}, "record_keys": ["steps"], "progress": False}
    args |= {"batch_transform": _shift, "batch_size": 3, "settings": {"gamma": 1.0}}
    return DatasetWriter(out, **{**args, **kwargs})


def _read(path: str) -> np.ndarray:
    return np.asarray(EnsureChannelFirst(channel_dim=-1)(LoadImage(reader="NibabelReader", image_only=True)(path)))


def test_exact_files_and_datalist(tmp_path: Path) -> None:
    transform = _Transform()
    root = _writer(tmp_path, transform=transform).run(_datalist(), "training")
    content = json.loads((root / "dataset.json").read_text())
    assert content["complete"] == {"training": True} and content["settings"] == {"gamma": 1.0}
    items = load_datalist(root, "training")
    assert [Path(i["image"]).name for i in items] == [f"case{i}.nii.gz" for i in range(7)]
    for i, item in enumerate(items):
        expected = _Transform()({"image": f"/data/case{i}.png"})
        image = _read(item["image"])
        assert image.dtype == np.float32 and np.array_equal(image, (expected["image"] + i * 3 / 30.0).numpy())
        assert np.array_equal(_read(item["label"]), expected["label"].numpy().astype(np.uint8))
        assert item["steps"] == 3 * i and item["source"]["image"] == f"/data/case{i}.png"


def test_killed_run_resumes_with_every_item_once(tmp_path: Path) -> None:
    whole = _writer(tmp_path / "whole", transform=_Transform()).run(_datalist(), "training")
    killed = _Transform(kill_at=4)
    with pytest.raises(Killed):
        _writer(tmp_path / "killed", transform=killed).run(_datalist(), "training")
    assert len(killed.calls) == 4  # items 0-2 written, item 3 transformed in the batch that item 4 killed
    assert not (tmp_path / "killed" / "dataset.json").exists()
    leftovers = [p for p in (tmp_path / "killed").rglob("*") if p.name.startswith(".")]
    assert not leftovers  # no half-written file
    again = _Transform()
    _writer(tmp_path / "killed", transform=again).run(_datalist(), "training")
    assert again.calls == [f"/data/case{i}.png" for i in range(3, 7)]  # only what was missing
    assert not [p for p in (tmp_path / "killed").rglob("*") if p.name.startswith(".")]
    assert (tmp_path / "killed" / "dataset.json").read_text() == (whole / "dataset.json").read_text().replace(
        str(tmp_path / "whole"), str(tmp_path / "killed")
    )
    for name in ("image", "label"):
        for i in range(7):
            path = f"{name}/case{i}.nii.gz"
            assert (tmp_path / "killed" / path).read_bytes() == (whole / path).read_bytes()
    again.calls.clear()
    _writer(tmp_path / "killed", transform=again).run(_datalist(), "training")
    assert again.calls == []  # complete: nothing to do
    _writer(tmp_path / "killed", transform=again).run(_datalist(), "validation")
    content = json.loads((tmp_path / "killed" / "dataset.json").read_text())
    assert len(content["training"]) == 7 and len(content["validation"]) == 7  # splits kept side by side


def test_other_settings_refused_unless_overwrite(tmp_path: Path) -> None:
    _writer(tmp_path, transform=_Transform()).run(_datalist(3), "training")
    with pytest.raises(ValueError, match=r"settings \(settings\.gamma differ; settings\.gamma: 1\.0 in the file, 0\.1"):
        _writer(tmp_path, transform=_Transform(), settings={"gamma": 0.1}).run(_datalist(3), "training")
    again = _Transform()
    _writer(tmp_path, transform=again, settings={"gamma": 0.1}, overwrite=True).run(_datalist(3), "training")
    assert len(again.calls) == 3 and json.loads((tmp_path / "dataset.json").read_text())["settings"] == {"gamma": 0.1}
    with pytest.raises(ValueError, match="items 0 and 2 .*share the name 'case0'"):
        _writer(tmp_path / "dup", transform=_Transform()).run(_datalist(2) * 2, "training")


def test_ranks_share_the_items(tmp_path: Path) -> None:
    whole = _writer(tmp_path / "whole", transform=_Transform()).run(_datalist(), "training")
    ranks = [_Transform(), _Transform()]
    for rank in (0, 1):
        _writer(tmp_path / "ranks", transform=ranks[rank]).run(_datalist(), "training", rank=rank, world_size=2)
    assert [len(r.calls) for r in ranks] == [4, 3] and not set(ranks[0].calls) & set(ranks[1].calls)
    merged = _writer(tmp_path / "ranks", transform=_Transform()).merge(_datalist(), "training")
    expected = json.loads((whole / "dataset.json").read_text())
    assert json.dumps(merged).replace("ranks", "whole") == json.dumps(expected)


def test_write_image_round_trips(tmp_path: Path) -> None:
    gen = torch.Generator().manual_seed(0)
    for ext, channels in ((".nii.gz", 1), (".nii", 1), (".tif", 1), (".tif", 3)):
        image = torch.rand(channels, 7, 5, generator=gen) * 1000 - 3
        path = write_image(tmp_path / f"x{channels}{ext}", image, channel_dim=None)
        read = EnsureChannelFirst()(LoadImage(reader=ImageFileReader, image_only=True)(str(path))).as_tensor()
        assert torch.equal(read, image), (ext, channels)  # as a PNG of the same image reads
    image = torch.rand(3, 7, 5, generator=gen)
    assert np.array_equal(_read(str(write_image(tmp_path / "c.nii.gz", image))), image.numpy())  # channels last
    labels = torch.randint(0, 4, (1, 7, 5)).float()
    assert np.array_equal(_read(str(write_image(tmp_path / "y.nii.gz", labels, np.uint8))), labels.numpy())
    with pytest.raises(ValueError, match="do not fit uint8"):
        write_image(tmp_path / "y.nii.gz", labels + 255, np.uint8)
    with pytest.raises(ValueError, match="one channel.*\\.tif"):
        write_image(tmp_path / "z.nii.gz", torch.rand(3, 4, 4), channel_dim=None)
    with pytest.raises(ValueError, match="unknown image extension"):
        write_image(tmp_path / "z.png", torch.rand(1, 4, 4))
