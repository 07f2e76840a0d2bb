"""
A real MONAI Label server over a bundle: MONAI Label 0.8.5's ``monaibundle`` sample app (copied by ``monailabel apps
--download``, which copies it from the installed package: no network), started offline with ``--conf zoo_source ngc``
so the app takes the local ``model/<bundle>`` folder, on 127.0.0.1 and a free port, in the separate environment that
``scripts/monailabel_env.sh`` builds (``.venv-monailabel``; the test is skipped without it).

Checks: ``/info/`` lists the bundle and its labels; ``/infer/<bundle>`` on a study image returns the same mask, pixel
for pixel, as ``python -m monai.bundle run inference.json`` on that image; labels saved the way MONAI Label saves them
(``PUT /datastore/label``, class-index masks) train for one epoch through ``/train/<bundle>``. The server is stopped
by its process group id, always.

With ``monai_ext.monailabel`` added to the app (a ``main.py`` subclassing the sample app's), one server over every
served bundle: ProtoSeg's ``mu`` of each bundle through ``/scoring/`` (stored per image, equal to ``monai_ext.metrics``
on the same images) and each bundle's lowest-mu image through ``/activelearning/``.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import requests
from conftest import REPO, run_bundle_configs, tiny
from PIL import Image

from monai_ext.data import file_stem

pytestmark = pytest.mark.slow

VENV = REPO / ".venv-monailabel"
MONAILABEL = VENV / "bin" / "monailabel"
#: bundles served in the test (each costs a server start, an inference and a one-epoch training)
SERVED = ["nlcen", "protoseg", "sagan_seg", "robust_training"]
#: 3D bundles served in the test: NIfTI volumes in, NIfTI masks out (not in the 2D ProtoSeg scoring test)
SERVED_3D = ["robust3d"]
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


def _stop(process: subprocess.Popen) -> None:
    """Stop the server by its process group id (it was started in a new session)."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def _extension(name: str) -> str:
    """The image suffix of a file name: ``".png"``, ``".nii.gz"``."""
    return name[len(file_stem(name) or "") :]


def _read_mask(content: bytes, extension: str) -> np.ndarray:
    """The array of a mask file's bytes: a PNG image or a (gzipped) NIfTI volume."""
    if extension.startswith(".nii"):
        return np.asarray(
            nib.Nifti1Image.from_bytes(gzip.decompress(content) if extension.endswith(".gz") else content).dataobj
        )
    return np.asarray(Image.open(io.BytesIO(content)))


def _studies(data: Path, studies: Path) -> tuple[Path, list[dict]]:
    """The first 4 training images of ``data`` copied into a new studies folder: the folder and their datalist."""
    studies.mkdir()
    images = json.loads((data / "dataset.json").read_text())["training"][:4]
    for item in images:
        shutil.copy(data / item["image"], studies / Path(item["image"]).name)
    return studies, images


def _start_server(
    app: Path, studies: Path, models: str, env: dict[str, str], log: Path
) -> tuple[str, subprocess.Popen, Path]:
    """``monailabel start_server`` of the bundles ``models`` (comma-separated names) offline on 127.0.0.1 and a free
    port, in its own session (stopped by :func:`_stop`): its URL, process and log file."""
    port = _free_port()
    command = [str(MONAILABEL), "start_server", "--app", str(app), "--studies", str(studies)]
    command += ["--conf", "models", models, "--conf", "zoo_source", "ngc", "--conf", "sam2", "false"]
    command += ["--host", "127.0.0.1", "--port", str(port)]
    with open(log, "w") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    return f"http://127.0.0.1:{port}", process, log


@pytest.mark.parametrize("bundle", SERVED + SERVED_3D)
def test_monailabel_server(bundle: str, trained_bundle, tmp_path: Path) -> None:
    root, data = trained_bundle(bundle)
    env = {**os.environ, "PATH": f"{VENV / 'bin'}{os.pathsep}{os.environ['PATH']}", "OMP_NUM_THREADS": "1"}
    env.pop("VIRTUAL_ENV", None)  # monailabel runs the python first on PATH: its own environment's
    app = tmp_path / "apps"
    download = [str(MONAILABEL), "apps", "--download", "--name", "monaibundle", "--output", str(app)]
    subprocess.run(download, check=True, env=env)
    app = app / "monaibundle"
    _copy_bundle(bundle, root, app / "model" / bundle)
    studies, images = _studies(data, tmp_path / "studies")
    ext = _extension(Path(images[0]["image"]).name)  # .png, or .nii.gz for volumes
    ids = sorted(file_stem(Path(item["image"]).name) for item in images)

    # the reference: monai.bundle run inference.json on the first image, as a user runs it
    expected_dir = tmp_path / "expected"
    run_bundle_configs(
        bundle,
        "inference",
        bundle_root=str(app / "model" / bundle),
        image=str(studies / f"{ids[0]}{ext}"),
        output_dir=str(expected_dir),
        **tiny(bundle),
    )
    expected = _read_mask((expected_dir / f"{ids[0]}_seg{ext}").read_bytes(), ext)

    url, process, log = _start_server(app, studies, bundle, env, tmp_path / "server.log")
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
        mask = _read_mask(reply.content, ext)
        assert mask.shape == expected.shape and np.array_equal(mask, expected)

        # labels as MONAI Label saves them: class-index masks through its datastore
        for image_id in ids:
            reply = requests.post(f"{url}/infer/{bundle}", params={"image": image_id, "output": "image"}, timeout=120)
            assert reply.status_code == 200, reply.text[-2000:]
            files = {"label": (f"{image_id}{ext}", reply.content)}
            reply = requests.put(f"{url}/datastore/label", params={"image": image_id}, files=files, timeout=30)
            assert reply.status_code == 200, reply.text[-2000:]
        saved = sorted((studies / "labels" / "final").glob(f"*{ext}"))
        # class-index masks, as MONAI Label saves them (0 .. C-1)
        assert len(saved) == len(ids) and max(_read_mask(p.read_bytes(), ext).max() for p in saved) < len(channel_def)

        before = (app / "model" / bundle / "models" / "model.pt").stat().st_mtime_ns
        body = {"max_epochs": 1, "val_split": 0.5, "device": "cpu", "multi_gpu": False}
        reply = requests.post(f"{url}/train/{bundle}", params={"run_sync": True}, json=body, timeout=TRAIN_TIMEOUT)
        assert reply.status_code == 200, reply.text[-2000:]
        assert "Training Finished" in log.read_text(), log.read_text()[-4000:]  # run_sync: done when it replies
        assert (app / "model" / bundle / "models" / "model.pt").stat().st_mtime_ns != before
    finally:
        _stop(process)


#: the app's main.py: the sample app (moved to ``bundle_app.py``) plus ProtoSeg's mu scoring and lowest-mu strategy
PROTOSEG_MAIN = """
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bundle_app  # noqa: E402

from monai_ext.monailabel import protoseg_tasks  # noqa: E402
from monailabel.interfaces.app import MONAILabelApp  # noqa: E402


# MONAILabelApp named as a direct base too: MONAI Label takes the class of main.py that has it among its __bases__
class ProtoSegApp(bundle_app.MyApp, MONAILabelApp):
    def init_scoring_methods(self):
        return {**super().init_scoring_methods(), **protoseg_tasks(self.models)[0]}

    def init_strategies(self):
        return {**super().init_strategies(), **protoseg_tasks(self.models)[1]}
"""


def _direct_mu(bundle_path: Path, image: Path) -> float:
    """mu of one image with monai_ext directly: the bundle's network and preprocessing, its ``quality_layers`` (ProtoSeg's
    last two BasicUNet convolutions) or else its last two convolution modules."""
    import torch
    from monai.bundle import ConfigParser

    from monai_ext.metrics import MeanSAScoreMetric
    from monai_ext.networks.utils import FeatureRecorder

    parser = ConfigParser()
    parser.read_config(str(bundle_path / "configs" / "inference.json"))
    parser["bundle_root"] = str(bundle_path)
    network = parser.get_parsed_content("network_def")
    state = torch.load(bundle_path / "models" / "model.pt", map_location="cpu", weights_only=True)
    network.load_state_dict(state["model"] if set(state) == {"model"} else state)
    network.eval()
    convs = [n for n, m in network.named_modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d))]
    layers = parser.get_parsed_content("quality_layers") if "quality_layers" in parser else convs[-2:]
    data = parser.get_parsed_content("preprocessing")({"image": str(image)})
    metric = MeanSAScoreMetric()
    with FeatureRecorder(network, layers) as recorder, torch.no_grad():
        pred = network(data["image"].as_tensor()[None])
        metric(recorder.pop(), pred)
    return float(metric.aggregate())


def test_monailabel_protoseg_scoring(trained_bundle, tmp_path: Path) -> None:
    """
    One server over every served bundle (``--conf models nlcen,protoseg,sagan_seg``): ``/scoring/protoseg_mu_<bundle>``
    stores mu per unlabelled image in the datastore, equal (1e-5) to mu computed directly with ``monai_ext.metrics`` on
    the same images; ``/activelearning/lowest_mu_<bundle>`` returns the image with the lowest mu of that bundle, and
    after one image is labelled, the lowest of the others.
    """
    env = {**os.environ, "PATH": f"{VENV / 'bin'}{os.pathsep}{os.environ['PATH']}", "OMP_NUM_THREADS": "1"}
    env.pop("VIRTUAL_ENV", None)
    env["MONAI_LABEL_AUTO_UPDATE_SCORING"] = "false"  # scored only when the test asks
    app = tmp_path / "apps"
    download = [str(MONAILABEL), "apps", "--download", "--name", "monaibundle", "--output", str(app)]
    subprocess.run(download, check=True, env=env)
    app = app / "monaibundle"
    (app / "main.py").rename(app / "bundle_app.py")
    (app / "main.py").write_text(PROTOSEG_MAIN)
    for bundle in SERVED:
        _copy_bundle(bundle, trained_bundle(bundle)[0], app / "model" / bundle)
    studies, _ = _studies(trained_bundle(SERVED[0])[1], tmp_path / "studies")
    expected = {
        bundle: {p.name.removesuffix(".png"): _direct_mu(app / "model" / bundle, p) for p in studies.glob("*.png")}
        for bundle in SERVED
    }

    url, process, log = _start_server(app, studies, ",".join(SERVED), env, tmp_path / "server.log")
    try:
        info = _wait_info(url, process, log)
        assert {f"protoseg_mu_{bundle}" for bundle in SERVED} <= info["scoring"].keys(), info["scoring"]
        assert {f"lowest_mu_{bundle}" for bundle in SERVED} <= info["strategies"].keys(), info["strategies"]

        chosen = {}
        for bundle, mus in expected.items():
            reply = requests.post(
                f"{url}/scoring/protoseg_mu_{bundle}", params={"run_sync": True}, json={"device": "cpu"}, timeout=120
            )
            assert reply.status_code == 200, reply.text[-2000:]
            stored = {}
            for image_id in mus:
                reply = requests.get(f"{url}/datastore/image/info", params={"image": image_id}, timeout=30)
                assert reply.status_code == 200, reply.text[-2000:]
                stored[image_id] = reply.json()[f"protoseg_mu_{bundle}"]
            assert stored == pytest.approx(mus, abs=1e-5), (bundle, stored, mus)

            reply = requests.post(f"{url}/activelearning/lowest_mu_{bundle}", json={}, timeout=30)
            assert reply.status_code == 200, reply.text[-2000:]
            chosen[bundle] = reply.json()["id"]
            assert mus[chosen[bundle]] == pytest.approx(min(mus.values()), abs=1e-5), (bundle, chosen, mus)

        # once labelled, an image leaves every bundle's pool: each strategy proposes the lowest of the others
        labelled = chosen[SERVED[0]]
        mask = io.BytesIO()
        Image.fromarray(np.zeros(Image.open(studies / f"{labelled}.png").size[::-1], np.uint8)).save(mask, "PNG")
        files = {"label": (f"{labelled}.png", mask.getvalue())}
        reply = requests.put(f"{url}/datastore/label", params={"image": labelled}, files=files, timeout=30)
        assert reply.status_code == 200, reply.text[-2000:]
        for bundle, mus in expected.items():
            reply = requests.post(f"{url}/activelearning/lowest_mu_{bundle}", json={}, timeout=30)
            assert reply.status_code == 200, reply.text[-2000:]
            rest = {k: v for k, v in mus.items() if k != labelled}
            assert rest[reply.json()["id"]] == pytest.approx(min(rest.values()), abs=1e-5), (bundle, reply.json(), rest)
    finally:
        _stop(process)
