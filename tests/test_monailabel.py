"""
A real MONAI Label server over a bundle: MONAI Label 0.8.5's ``monaibundle`` sample app (copied by ``monailabel apps
--download``, which copies it from the installed package: no network), started offline with ``--conf zoo_source ngc``
so the app takes the local ``model/<bundle>`` folder, on 127.0.0.1 and a free port, in the separate environment that
``scripts/monailabel_env.sh`` builds (``.venv-monailabel``; the test is skipped without it).

Checks: ``/info/`` lists the bundle and its labels; ``/infer/<bundle>`` on a study image returns the same mask, pixel
for pixel, as ``python -m monai.bundle run inference.json`` on that image; labels saved the way MONAI Label saves them
(``PUT /datastore/label``, class-index masks) train for one epoch through ``/train/<bundle>``. The server is stopped
by its process group id, always.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import requests
from conftest import REPO, run_bundle_configs, tiny
from PIL import Image

pytestmark = pytest.mark.slow

VENV = REPO / ".venv-monailabel"
MONAILABEL = VENV / "bin" / "monailabel"
#: bundles served in the test (each costs a server start, an inference and a one-epoch training)
SERVED = ["nlcen", "protoseg", "sagan_seg"]
START_TIMEOUT = 180.0
TRAIN_TIMEOUT = 300

if not MONAILABEL.is_file():
    pytest.skip(
        "MONAI Label environment .venv-monailabel is absent: build it with bash scripts/monailabel_env.sh",
        allow_module_level=True,
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _copy_bundle(bundle: str, trained_root: Path, target: Path) -> None:
    """The bundle folder as a user drops it into ``model/``: configs at tiny sizes, docs, the trained model."""
    shutil.copytree(REPO / "bundles" / bundle / "configs", target / "configs")
    for name in ("train.json", "inference.json"):
        path = target / "configs" / name
        config = json.loads(path.read_text())
        config.update(tiny(bundle))
        path.write_text(json.dumps(config, indent=4))
    (target / "models").mkdir()
    shutil.copy(trained_root / "models" / "model.pt", target / "models" / "model.pt")


def _wait_info(url: str, process: subprocess.Popen, log: Path) -> dict:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"monailabel exited with {process.returncode}:\n{log.read_text()[-4000:]}")
        try:
            reply = requests.get(f"{url}/info/", timeout=5)
            if reply.status_code == 200:
                return reply.json()
        except requests.ConnectionError:
            pass
        time.sleep(1.0)
    raise AssertionError(f"no /info/ within {START_TIMEOUT} s:\n{log.read_text()[-4000:]}")


@pytest.mark.parametrize("bundle", SERVED)
def test_monailabel_server(bundle: str, trained_bundle, tmp_path: Path) -> None:
    root, data = trained_bundle(bundle)
    env = {**os.environ, "PATH": f"{VENV / 'bin'}{os.pathsep}{os.environ['PATH']}", "OMP_NUM_THREADS": "1"}
    env.pop("VIRTUAL_ENV", None)  # monailabel runs the python first on PATH: its own environment's
    app = tmp_path / "apps"
    download = [str(MONAILABEL), "apps", "--download", "--name", "monaibundle", "--output", str(app)]
    subprocess.run(download, check=True, env=env)
    app = app / "monaibundle"
    _copy_bundle(bundle, root, app / "model" / bundle)
    studies = tmp_path / "studies"
    studies.mkdir()
    images = json.loads((data / "dataset.json").read_text())["training"][:4]
    for item in images:
        shutil.copy(data / item["image"], studies / Path(item["image"]).name)
    ids = sorted(Path(item["image"]).name.removesuffix(".png") for item in images)

    # the reference: monai.bundle run inference.json on the first image, as a user runs it
    expected_dir = tmp_path / "expected"
    run_bundle_configs(
        bundle,
        "inference",
        bundle_root=str(app / "model" / bundle),
        image=str(studies / f"{ids[0]}.png"),
        output_dir=str(expected_dir),
        **tiny(bundle),
    )
    expected = np.asarray(Image.open(expected_dir / f"{ids[0]}_seg.png"))

    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "server.log"
    command = [str(MONAILABEL), "start_server", "--app", str(app), "--studies", str(studies)]
    command += ["--conf", "models", bundle, "--conf", "zoo_source", "ngc", "--conf", "sam2", "false"]
    command += ["--host", "127.0.0.1", "--port", str(port)]
    with open(log, "w") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        info = _wait_info(url, process, log)
        assert bundle in info["models"], info["models"].keys()
        labels = info["models"][bundle]["labels"]
        channel_def = json.loads((REPO / "bundles" / bundle / "configs" / "metadata.json").read_text())
        channel_def = channel_def["network_data_format"]["outputs"]["pred"]["channel_def"]
        assert labels == {v.lower(): int(k) for k, v in channel_def.items() if v.lower() != "background"}
        assert bundle in info["trainers"]

        reply = requests.post(f"{url}/infer/{bundle}", params={"image": ids[0], "output": "image"}, timeout=120)
        assert reply.status_code == 200, reply.text[-2000:]
        mask = np.asarray(Image.open(io.BytesIO(reply.content)))
        assert mask.shape == expected.shape and np.array_equal(mask, expected)

        # labels as MONAI Label saves them: class-index masks through its datastore
        for image_id in ids:
            reply = requests.post(f"{url}/infer/{bundle}", params={"image": image_id, "output": "image"}, timeout=120)
            assert reply.status_code == 200, reply.text[-2000:]
            files = {"label": (f"{image_id}.png", reply.content)}
            reply = requests.put(f"{url}/datastore/label", params={"image": image_id}, files=files, timeout=30)
            assert reply.status_code == 200, reply.text[-2000:]
        saved = sorted((studies / "labels" / "final").glob("*.png"))
        # class-index masks, as MONAI Label saves them (0 .. C-1)
        assert len(saved) == len(ids) and max(np.asarray(Image.open(p)).max() for p in saved) < len(channel_def)

        before = (app / "model" / bundle / "models" / "model.pt").stat().st_mtime_ns
        body = {"max_epochs": 1, "val_split": 0.5, "device": "cpu", "multi_gpu": False}
        reply = requests.post(f"{url}/train/{bundle}", params={"run_sync": True}, json=body, timeout=TRAIN_TIMEOUT)
        assert reply.status_code == 200, reply.text[-2000:]
        assert "Training Finished" in log.read_text(), log.read_text()[-4000:]  # run_sync: done when it replies
        assert (app / "model" / bundle / "models" / "model.pt").stat().st_mtime_ns != before
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
