"""
``python -m monai_ext robustness`` under ``torchrun --nproc_per_node 2`` (gloo, CPU): each rank attacks its part of
the images (3 images: 2 on rank 0, 1 on rank 1), rank 0 alone writes, and the one table, ``per_image.csv``, the sweep
files and the figure are those of a one-process run, run times aside (the ensemble's random starts aside too: its
wins count every image once, over both ranks); the two ranks resume a one-process run's sweep files (one sweep killed
after its clean budget, two never run).
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO
from test_zoo_bundle_robustness import _yaml_bundle

from monai_ext.__main__ import main

pytestmark = pytest.mark.usefixtures("one_thread")

#: FGSM, I-FGSM and PGD without its random start: an image's result does not depend on the images attacked before it;
#: the ensemble, whose members start at random
OPTIONS = ["--attacks", "[fgsm,ifgsm,pgd,ensemble]", "--attack_settings", "{pgd: {random_start: False}}",
           "--epsilons", "[0,2,4]", "--num_steps", "2", "--figure_attack", "ifgsm"]  # fmt: skip
ENSEMBLE = "ensemble-2"


def _untimed(value: Any) -> Any:
    """A results document without its run times (every ``seconds``)."""
    if isinstance(value, dict):
        return {k: _untimed(v) for k, v in value.items() if k != "seconds"}
    if isinstance(value, list):
        return [_untimed(v) for v in value]
    return value


def _untimed_markdown(text: str) -> str:
    """The Markdown table without its run times (the ``seconds`` column and the figure's) and the ensemble's rows."""
    text = re.sub(r"took [\d.]+ s", "took - s", re.sub(r" [\d.]+ \|$", " - |", text, flags=re.MULTILINE))
    return "\n".join(line for line in text.splitlines() if not line.startswith(f"| {ENSEMBLE} |"))


def _rank_logs(logs: Path) -> dict[int, str]:
    """Each rank's stdout and stderr, as torchrun's ``--log-dir`` keeps them (``<run>/attempt_0/<rank>/``)."""
    folders = sorted(p for p in logs.rglob("*") if p.is_dir() and p.name.isdigit())
    return {int(f.name): "".join(log.read_text() for log in sorted(f.glob("*.log"))) for f in folders}


def test_two_ranks_write_the_table_of_one_process(tmp_path: Path) -> None:
    bundle = _yaml_bundle(tmp_path / "tiny_template", num_volumes=3)
    one, two = tmp_path / "one", tmp_path / "two"
    main(["robustness", "--bundle", str(bundle), "--output_dir", str(one), *OPTIONS])

    # the two ranks take over the sweep files of a one-process run killed after I-FGSM's clean budget
    shutil.copytree(one / "sweeps", two / "sweeps")
    for name in ("fgsm", "ensemble"):
        (two / "sweeps" / f"robustness_{name}.json").unlink()
    killed = two / "sweeps" / "robustness_ifgsm.json"
    stored = json.loads(killed.read_text())
    killed.write_text(json.dumps({**stored, "results": stored["results"][:1], "complete": False}))
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "--log-dir",
               str(tmp_path / "logs"), "--redirects", "3", "-m", "monai_ext", "robustness", "--bundle", str(bundle),
               "--output_dir", str(two), *OPTIONS]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    run = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=False)
    logs = _rank_logs(tmp_path / "logs")
    assert run.returncode == 0, (run.stderr[-3000:], {rank: text[-3000:] for rank, text in logs.items()})
    assert sorted(logs) == [0, 1]

    # the same files, the same numbers
    files = sorted(p.relative_to(one) for p in one.rglob("*"))
    assert files == sorted(p.relative_to(two) for p in two.rglob("*"))  # nothing of rank 1's
    tables = [json.loads((out / "attack_benchmark.json").read_text()) for out in (one, two)]
    ensembles = [table["attacks"].pop() for table in tables]
    assert tables[1]["num_images"] == 3 and _untimed(tables[1]) == _untimed(tables[0])
    for name in ("fgsm", "ifgsm", "pgd"):
        sweeps = [json.loads((out / "sweeps" / f"robustness_{name}.json").read_text()) for out in (one, two)]
        assert sweeps[1]["complete"] and _untimed(sweeps[1]) == _untimed(sweeps[0]), name
    assert _untimed(ensembles[1]["results"][0]) == _untimed(ensembles[0]["results"][0])  # its clean budget
    assert [sum(r["wins"].values()) for r in ensembles[1]["results"][1:]] == [3, 3]  # every image won once
    rows = [list(csv.DictReader((out / "per_image.csv").open())) for out in (one, two)]
    assert len(rows[1]) == 4 * 3 * 3  # attacks x budgets x images, every image once
    assert [r for r in rows[1] if r["attack"] != ENSEMBLE or r["epsilon"] == "0"] == [
        r for r in rows[0] if r["attack"] != ENSEMBLE or r["epsilon"] == "0"
    ]
    markdown = [_untimed_markdown((out / "attack_benchmark.md").read_text()) for out in (one, two)]
    assert markdown[1] == markdown[0]

    # rank 0 wrote and printed the table; rank 1 computed its images, took I-FGSM's clean budget from rank 0's file
    assert "wrote" in logs[0] and "wrote" not in logs[1]
    assert markdown[1].splitlines()[0] in logs[0] and markdown[1].splitlines()[0] not in logs[1]
    assert all("epsilon 0: taken from" in text for text in logs.values())

    # a rerun with other settings: rank 0 reads the sweep file and refuses it, and every rank ends with its error
    other = [str(tmp_path / "logs_other") if arg == str(tmp_path / "logs") else arg for arg in command]
    other[other.index("--num_steps") + 1] = "3"
    rerun = subprocess.run(other, cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=False)
    logs = _rank_logs(tmp_path / "logs_other")
    assert rerun.returncode != 0 and sorted(logs) == [0, 1]
    assert all("robustness_ifgsm.json holds the results of a sweep with other settings" in t for t in logs.values())
