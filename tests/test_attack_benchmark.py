"""``python -m monai_ext robustness``: a trained bundle under every attack of the benchmark, one table and one figure,
written budget by budget and resumed after a kill; clear errors."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import BUNDLES_DIR, tiny

torch.set_num_threads(1)

from monai_ext.__main__ import main
from monai_ext.engines.attack_benchmark import ATTACKS, benchmark_attack


def test_every_attack_then_resume(trained_bundle, tmp_path, capsys):
    root, _ = trained_bundle("nlcen")
    out = tmp_path / "bench"
    args = ["robustness", "--bundle", str(BUNDLES_DIR / "nlcen"), "--bundle_root", str(root), "--output_dir", str(out),
            "--epsilons", "[0,4,8]", "--num_steps", "2", "--max_images", "1", "--batch_size", "1",
            "--spatial_size", json.dumps(tiny("nlcen")["spatial_size"])]  # fmt: skip
    main(args)
    table = json.loads((out / "attack_benchmark.json").read_text())
    assert [a["attack"] for a in table["attacks"]] == list(ATTACKS) and table["num_images"] == 1
    for attack in table["attacks"]:
        results = attack["results"]
        assert [r["epsilon"] for r in results] == [0.0, 4.0, 8.0]
        assert all(0 <= r["mean_dice"] <= 1 for r in results)
        assert results[1]["mean_dice"] <= results[0]["mean_dice"] + 1e-6  # an attack does not help
    assert len({a["results"][0]["mean_dice"] for a in table["attacks"]}) == 1  # one clean score
    ensemble = next(a for a in table["attacks"] if a["attack"] == "ensemble")["results"]
    assert "wins" not in ensemble[0]  # the clean point has no attack
    for result in ensemble[1:]:  # each image won by exactly one of the five attacks
        assert sum(result["wins"].values()) == 1 and len(result["wins"]) == 5
    markdown = (out / "attack_benchmark.md").read_text()
    assert markdown.strip() in capsys.readouterr().out  # the command prints the table, not the raw dict
    assert "| targeted I-FGSM-2 |" in markdown and "| ensemble-2 |" in markdown and "eps 8" in markdown
    assert (out / "attack_benchmark.png").stat().st_size > 1000

    # a run killed after the first budget of CosPGD: the rerun computes only the budget it lacks (the others keep
    # their stored results, run times included)
    sweep_file = out / "sweeps" / "robustness_cospgd.json"
    stored = json.loads(sweep_file.read_text())
    stored["results"], stored["complete"] = stored["results"][:2], False
    sweep_file.write_text(json.dumps(stored))
    main(args)
    rerun = json.loads((out / "attack_benchmark.json").read_text())["attacks"]
    assert [a for a in rerun if a["attack"] != "cospgd"] == [a for a in table["attacks"] if a["attack"] != "cospgd"]
    cospgd = next(a for a in rerun if a["attack"] == "cospgd")["results"]
    assert (
        cospgd[:2] == stored["results"]
        and cospgd[2]["epsilon"] == 8.0
        and json.loads(sweep_file.read_text())["complete"]
    )


def test_benchmark_attacks():
    ifgsm, pgd = benchmark_attack(8, "ifgsm"), benchmark_attack(8, "pgd")
    assert ifgsm.num_steps == 10 and ifgsm.target == "inverse"
    assert pgd.num_steps == 40 and pgd.alpha == pytest.approx(0.5) and pgd.random_start
    assert benchmark_attack(8, "segpgd").num_steps == 100 and len(benchmark_attack(8, "ensemble").attacks) == 5
    with pytest.raises(ValueError, match="attack"):
        benchmark_attack(8, "fgsm")


def test_missing_bundle_or_weights_is_a_one_line_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["robustness", "--bundle", str(tmp_path)])
    assert exit_info.value.code == 1 and "not a bundle folder" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["robustness", "--bundle", str(BUNDLES_DIR / "nlcen"), "--bundle_root", str(tmp_path)])
    assert "no trained weights" in capsys.readouterr().err
