"""The bundle report (``python -m monai_ext report``): a page built from a small fake results folder, opened in headless
Chromium (Debian's ``chromium`` package, driven by playwright) to check that every image on it loaded."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from monai_ext.__main__ import main
from monai_ext.report import build_report
from monai_ext.visualize import plot_training_curves

BUNDLES = Path(__file__).resolve().parents[1] / "bundles"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
STEMS = ["case_a", "case_b", "case_c"]


def _write_csv(path: Path, rows: list[list[object]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows(rows)


def _fake_results(root: Path) -> Path:
    """A bundle_root-like folder holding every kind of result the report reads, and a dataset of 3 images."""
    bundle = root / "bundle"
    (bundle / "configs").mkdir(parents=True)
    shutil.copy(BUNDLES / "sagan_seg" / "configs" / "metadata.json", bundle / "configs" / "metadata.json")
    eval_dir = bundle / "eval"
    _write_csv(eval_dir / "metrics.csv", [["mean_dice", 0.91], ["iou", 0.84]])
    header = ["class", "mean", "median", "max", "min", "90percentile", "std", "notnans"]
    _write_csv(eval_dir / "mean_dice_summary.csv", [header, ["class0", 0.9, 0.91, 0.95, 0.8, 0.94, 0.03, 3]])
    classes = {"background": 0.99, "right lung": 0.9, "mean": 0.95}
    (eval_dir / "gen").mkdir()
    (eval_dir / "gen" / "class_metrics.json").write_text(json.dumps({"f1_score": classes, "iou": classes}))
    results = [{"epsilon": e, "mean_dice": 0.9 - 0.1 * e, "mean_jaccard": 0.8 - 0.1 * e} for e in (0.0, 1.0, 2.0)]
    (eval_dir / "robustness.json").write_text(json.dumps({"label": "net", "results": results}))
    (eval_dir / "robustness_study.json").write_text(json.dumps({"clean": {}}))  # another layout, with its PNG
    plot_training_curves({"x": [(0, 1.0), (1, 2.0)]}, eval_dir / "robustness_study.png")
    _write_csv(eval_dir / "interpret" / "layers.csv", [["index", "label", "mean_sa"], [0, "in", 0.4], [1, "1", 0.5]])
    plot_training_curves({"sa": [(0, 0.4), (1, 0.5)]}, eval_dir / "interpret" / "layers.png")

    from torch.utils.tensorboard import SummaryWriter

    for run in ("", "online"):
        with SummaryWriter(str(bundle / "runs" / run)) as writer:
            for step in range(1, 4):
                writer.add_scalar("train_loss", 1.0 / step, step)
            writer.add_scalar("val_mean_dice", 0.8, 3)

    rng = np.random.default_rng(0)
    data = root / "dataset"
    for name in ("images", "masks"):
        (data / name).mkdir(parents=True)
    (bundle / "predictions").mkdir()
    for stem in STEMS:
        mask = np.zeros((32, 40), np.uint8)
        mask[8:20, 5:15], mask[10:25, 22:35] = 150, 200  # raw SCR-like values: right lung 150, left lung 200
        Image.fromarray(rng.integers(0, 255, (32, 40), dtype=np.uint8)).save(data / "images" / f"{stem}.png")
        Image.fromarray(mask).save(data / "masks" / f"{stem}.png")
        prediction = ((mask == 150) + 2 * (mask == 200)).astype(np.uint8)
        Image.fromarray(prediction).save(bundle / "predictions" / f"{stem}_seg.png")
    return bundle


def _loaded_images(page_path: Path) -> list[tuple[str, int]]:
    """Open the page in headless Chromium and return each ``<img>``'s source and ``naturalWidth`` (0: not loaded)."""
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="playwright is not installed (pip install -e '.[test]')"
    )
    if not Path(CHROMIUM).is_file():
        pytest.skip(f"no Chromium at {CHROMIUM}: apt-get install -y chromium (.ci/run installs it)")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page()
            page.goto(page_path.resolve().as_uri(), wait_until="load")
            images = page.locator("img")
            return [
                (images.nth(i).get_attribute("src"), images.nth(i).evaluate("img => img.complete && img.naturalWidth"))
                for i in range(images.count())
            ]
        finally:
            browser.close()


def test_report_of_every_result_loads_in_chromium(tmp_path: Path) -> None:
    bundle = _fake_results(tmp_path)
    page = build_report(bundle, output_dir=tmp_path / "report", dataset_dir=tmp_path / "dataset", num_overlays=2)
    html = page.read_text()
    assert page == tmp_path / "report" / "index.html" and 'class="missing"' not in html, html
    for text in ("SAGAN segmentation", "mean_dice", "0.9100", "right lung", "gen", "train_loss", "runs/online"):
        assert text in html
    figures = sorted(p.name for p in (tmp_path / "report" / "figures").iterdir())
    assert figures == [
        "interpret__layers.png",
        "overlays.png",
        "robustness__robustness.png",
        "robustness__robustness_study.png",
        "training__runs.png",
        "training__runs__online.png",
    ]
    assert not list((tmp_path / "report").rglob(".*.tmp"))  # atomic writes left no temporary file
    loaded = _loaded_images(page)
    assert len(loaded) == len(figures)
    assert all(width and width > 0 for _, width in loaded), loaded


def test_report_says_what_is_missing(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    html = build_report(tmp_path / "empty").read_text()
    assert html.count('class="missing"') == 4  # metrics, training, robustness, predictions; no ProtoSeg section
    assert "No training runs" in html and "No robustness sweep" in html and "inference.json" in html
    assert (tmp_path / "empty" / "report" / "index.html").is_file()


def test_command_line_missing_bundle_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as raised:
        main(["report", str(tmp_path / "nope")])
    assert raised.value.code == 1
    assert "does not exist" in capsys.readouterr().err
