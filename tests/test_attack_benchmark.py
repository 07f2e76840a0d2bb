"""``python -m monai_ext robustness``: a trained bundle under every default attack of the benchmark, one table, the
curves, the per-image scores and the figure of an attacked image, written budget by budget and resumed after a kill;
the opt-in attacks; clear errors."""

from __future__ import annotations

import csv
import io
import json

import pytest
import torch
from conftest import BUNDLES_DIR, tiny

torch.set_num_threads(1)

from monai_ext.__main__ import main
from monai_ext.attacks import APGD, FGSM, VAFA
from monai_ext.engines.attack_benchmark import DEFAULT_ATTACKS, benchmark_attack


def test_every_attack_then_resume(trained_bundle, tmp_path, capsys):
    root, _ = trained_bundle("nlcen")
    out = tmp_path / "bench"
    args = ["robustness", "--bundle", str(BUNDLES_DIR / "nlcen"), "--bundle_root", str(root), "--output_dir", str(out),
            "--epsilons", "[0,4,8]", "--num_steps", "2", "--max_images", "1", "--batch_size", "1",
            "--spatial_size", json.dumps(tiny("nlcen")["spatial_size"])]  # fmt: skip
    main(args)
    table = json.loads((out / "attack_benchmark.json").read_text())
    assert [a["attack"] for a in table["attacks"]] == list(DEFAULT_ATTACKS) and table["num_images"] == 1
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
    per_image = (out / "per_image.csv").read_text()
    rows = list(csv.DictReader(io.StringIO(per_image)))
    assert len(rows) == len(DEFAULT_ATTACKS) * 3 and {r["epsilon"] for r in rows} == {"0", "4", "8"}
    assert all(r["hd95"] or r["dice"] == "0.000000" for r in rows)  # HD95 wherever the prediction is not empty
    assert (out / "attacked_slices.png").stat().st_size > 1000 and table["figure"]["epsilon"] == 8.0  # a 2D image
    clean = next(r for r in rows if r["attack"] == "PGD-2" and r["epsilon"] == "0")  # one image: its Dice is the mean
    pgd = next(a for a in table["attacks"] if a["attack"] == "pgd")
    assert float(clean["dice"]) == pytest.approx(pgd["results"][0]["mean_dice"], abs=1e-6)

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
    kept = [{k: v for k, v in r.items() if k != "per_image"} for r in stored["results"]]  # per image: in the CSV
    assert cospgd[:2] == kept and cospgd[2]["epsilon"] == 8.0 and json.loads(sweep_file.read_text())["complete"]
    assert (out / "per_image.csv").read_text() == per_image  # every attack, budget and image, again


def test_benchmark_attacks():
    ifgsm, pgd = benchmark_attack(8, "ifgsm"), benchmark_attack(8, "pgd")
    assert ifgsm.num_steps == 10 and ifgsm.target == "inverse"
    assert pgd.num_steps == 40 and pgd.alpha == pytest.approx(0.5) and pgd.random_start
    assert benchmark_attack(8, "segpgd").num_steps == 100 and len(benchmark_attack(8, "ensemble").attacks) == 5
    fgsm, apgd = benchmark_attack(8, "fgsm", num_steps=5), benchmark_attack(8, "apgd")
    assert type(fgsm) is FGSM and fgsm.eps == 8 and fgsm.target is None  # one step, whatever num_steps
    assert type(apgd) is APGD and apgd.num_steps == 100 and apgd.loss == "ce"
    assert benchmark_attack(8, "apgd", loss="jsd").loss == "jsd"  # settings take precedence
    vafa = benchmark_attack(10, "vafa", spatial_dims=2)
    assert type(vafa) is VAFA and vafa.q_max == 10 and vafa.num_steps == 20 and vafa.spatial_dims == 2
    with pytest.raises(ValueError, match="attack"):
        benchmark_attack(8, "fgsmx")
    with pytest.raises(ValueError, match="unexpected keyword argument 'alpha'"):  # FGSM takes one step of eps
        benchmark_attack(8, "fgsm", alpha=1)


def test_missing_bundle_or_weights_is_a_one_line_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["robustness", "--bundle", str(tmp_path)])
    assert exit_info.value.code == 1 and "not a bundle folder" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["robustness", "--bundle", str(BUNDLES_DIR / "nlcen"), "--bundle_root", str(tmp_path)])
    assert "no trained weights" in capsys.readouterr().err


def test_help_is_shown_whatever_the_options(tmp_path, capsys):
    """``--help`` shows the command's options and runs nothing, even beside other options (which fire would otherwise
    run first, or take for a config id)."""
    with pytest.raises(SystemExit) as exit_info:
        main(["robustness", "--bundle", str(tmp_path), "--epsilons", "[0,2]", "--help"])
    assert exit_info.value.code == 0 and "--attack_settings" in capsys.readouterr().err


def test_sea_presets_by_name():
    from monai_ext.attacks import dice_score, pixel_accuracy_score

    sea, by_dice = benchmark_attack(8, "sea"), benchmark_attack(8, "sea_dice", num_steps=10)
    assert [a.loss for a in sea.attacks] == ["balanced_masked_ce", "masked_ce", "jsd"]
    assert all(a.num_steps == 300 and a.radius_reduction for a in sea.attacks) and sea.score is pixel_accuracy_score
    assert all(a.num_steps == 10 for a in by_dice.attacks) and by_dice.score is dice_score


def test_sea_through_the_command(trained_bundle, tmp_path):
    """``--attacks "[sea,sea_dice]"``: SEA's worst by pixel accuracy and by Dice, side by side in one table."""
    root, _ = trained_bundle("nlcen")
    out = tmp_path / "sea"
    main(["robustness", "--bundle", str(BUNDLES_DIR / "nlcen"), "--bundle_root", str(root), "--output_dir", str(out),
          "--attacks", "[sea,sea_dice]", "--epsilons", "[0,8]", "--num_steps", "3", "--max_images", "2",
          "--batch_size", "2", "--spatial_size", json.dumps(tiny("nlcen")["spatial_size"])])  # fmt: skip
    table = json.loads((out / "attack_benchmark.json").read_text())
    by_accuracy, by_dice = (
        next(a for a in table["attacks"] if a["attack"] == n)["results"] for n in ("sea", "sea_dice")
    )
    # the same attacks, the worst kept by Dice is never better in Dice than the worst kept by pixel accuracy
    assert by_dice[1]["mean_dice"] <= by_accuracy[1]["mean_dice"] + 1e-6
    assert sum(by_accuracy[1]["wins"].values()) == 2 and len(by_accuracy[1]["wins"]) == 3
    assert "| SEA-3 |" in (out / "attack_benchmark.md").read_text()
