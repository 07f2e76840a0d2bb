"""ProtoSeg handlers, writer, loss, quality summaries, VoG and the noise sweep on a tiny BasicUNet."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.data import DataLoader, Dataset, MetaTensor
from monai.engines import SupervisedEvaluator
from monai.losses import DiceCELoss, DiceLoss
from monai.metrics import compute_dice
from monai.networks.nets import BasicUNet
from monai.networks.utils import one_hot
from monai.transforms import Activationsd, Compose

from monai_ext.engines import LevelSweep, UniformNoise
from monai_ext.handlers import (
    FeatureRecorderHandler,
    MeanSAScoreHandler,
    OutputDiceHandler,
    ProtoSegSaver,
    SAMPlotHandler,
    SAScoreHandler,
    VarianceOfGradientsHandler,
    layer_results,
    write_noise_study,
)
from monai_ext.losses import ProtoSegLoss
from monai_ext.metrics import (
    VarianceOfGradients,
    binarize_prediction,
    compute_sa_score,
    coverage_table,
    mean_sa_score,
    protoseg,
    score_correlation,
)
from monai_ext.networks.utils import BASIC_UNET_LAYERS, FeatureRecorder

SIZE = 32


def _net(seed: int = 0) -> BasicUNet:
    torch.manual_seed(seed)
    return BasicUNet(spatial_dims=2, in_channels=1, out_channels=2, features=(4, 4, 6, 6, 8, 4)).eval()


def _data(n: int = 5) -> list[dict]:
    gen = torch.Generator().manual_seed(0)
    items = []
    for i in range(n):
        label = torch.zeros(1, SIZE, SIZE)
        r, c = 6 + 2 * i, 8 + i
        label[0, r : r + 12, c : c + 10] = 1.0
        image = 0.6 * label + 0.3 * torch.rand(1, SIZE, SIZE, generator=gen)
        items.append(
            {
                "image": MetaTensor(image, meta={"filename_or_obj": f"img_{i}.png"}),
                "label": MetaTensor(label, meta={"filename_or_obj": f"mask_{i}.png"}),
            }
        )
    return items


def _evaluator(
    net: BasicUNet, handlers: list, metrics: dict, data: list[dict] | None = None, softmax: bool = True
) -> SupervisedEvaluator:
    """An evaluator with ``handlers`` and ``metrics`` (the first is the key metric)."""
    post = Compose([Activationsd(keys="pred", softmax=True)]) if softmax else None
    key = dict([next(iter(metrics.items()))])
    return SupervisedEvaluator(
        device="cpu",
        val_data_loader=DataLoader(Dataset(data or _data()), batch_size=2, shuffle=False),
        network=net,
        postprocessing=post,
        val_handlers=handlers,
        key_val_metric=key,
        additional_metrics={k: v for k, v in metrics.items() if k not in key},
    )


def test_recorder_hooks_the_18_basic_unet_convolutions() -> None:
    net = _net()
    with FeatureRecorder(net, ["input", *BASIC_UNET_LAYERS]) as recorder:
        x = torch.rand(2, 1, SIZE, SIZE)
        net(x)
        features = recorder.pop()
        assert list(features) == ["input", *BASIC_UNET_LAYERS]
        assert len(BASIC_UNET_LAYERS) == 18
        assert torch.equal(features["input"], x)
        sizes = [f.shape[-1] for f in list(features.values())[1:]]
        assert sizes == [32, 32, 16, 16, 8, 8, 4, 4, 2, 2, 4, 4, 8, 8, 16, 16, 32, 32]
        assert features["upcat_1.convs.conv_1"].shape[1] == 4
        with pytest.raises(RuntimeError, match="forward pass"):
            recorder.pop()
    net(x)  # hooks removed: nothing recorded, no error
    assert recorder.layers[0] == "input"


def test_recorder_hooks_a_wrapped_network_by_the_plain_names() -> None:
    """A ``DataParallel`` (or ``DistributedDataParallel``) network: the plain network's names, the same features."""
    net, x = _net(), torch.rand(2, 1, SIZE, SIZE)
    with FeatureRecorder(net, ["input", *BASIC_UNET_LAYERS[-2:]]) as recorder:
        net(x)
        expected = recorder.pop()
    wrapped = torch.nn.DataParallel(net)
    with FeatureRecorder(wrapped, ["input", *BASIC_UNET_LAYERS[-2:]]) as recorder:
        wrapped(x)
        features = recorder.pop()
    assert features.keys() == expected.keys() and all(torch.equal(features[k], expected[k]) for k in expected)


def test_recorder_rejects_unknown_module_names() -> None:
    with pytest.raises(ValueError, match=r"no module named 'encoder\.block9'; its modules include conv_0, .*down_1"):
        FeatureRecorder(_net(), ["conv_0.conv_0", "encoder.block9"])
    with pytest.raises(ValueError, match=r"'down_1\.conv\.conv_0' \(close: .*down_1\.convs\.conv_0"):
        FeatureRecorder(_net(), ["down_1.conv.conv_0"])
    with pytest.raises(ValueError, match="twice"):
        FeatureRecorder(_net(), ["conv_0.conv_0", "conv_0.conv_0"])


def test_layer_analysis_equals_offline_computation(tmp_path: Path) -> None:
    net = _net()
    sams = SAMPlotHandler(tmp_path / "sams.png", layers=[0, 17], num_images=2, title="test")
    handlers = [FeatureRecorderHandler(net), ProtoSegSaver(tmp_path, unit_layer=-1, title="test"), sams]
    metrics = {
        "output_dice": OutputDiceHandler(),
        "sa": SAScoreHandler(),
        "sa_units": SAScoreHandler(-1, per_unit=True),
    }
    evaluator = _evaluator(net, handlers, metrics)
    evaluator.run()
    details = evaluator.state.metric_details

    data = _data()
    images = torch.stack([d["image"].as_tensor() for d in data])
    labels = torch.stack([d["label"].as_tensor() for d in data])
    with FeatureRecorder(net) as recorder, torch.no_grad():
        logits = net(images)
        features = recorder.pop()
    mask = binarize_prediction(logits)
    expected = torch.stack([compute_sa_score(f, mask, labels)[:, 0] for f in features.values()], dim=1)
    expected_input = compute_sa_score(images, mask, labels)[:, 0]
    got = details["sa"].mean(-1)  # (N, 1 + 18): input first
    torch.testing.assert_close(got[:, 1:], expected, atol=1e-6, rtol=0)
    torch.testing.assert_close(got[:, 0], expected_input, atol=1e-6, rtol=0)
    dice = compute_dice(mask, one_hot(labels, 2), include_background=False, ignore_empty=False)[:, 0]
    torch.testing.assert_close(details["output_dice"][:, 0], dice, atol=1e-6, rtol=0)
    units = compute_sa_score(features[BASIC_UNET_LAYERS[-1]], mask, labels, per_unit=True)[..., 0].mean(0)

    summary = json.loads((tmp_path / "layers.json").read_text())
    assert summary["num_images"] == 5
    assert [row["label"] for row in summary["layers"]] == ["in", *map(str, range(1, 19))]
    assert summary["layers"][5]["feature_shape"] == [6, 8, 8]  # layer 5: down_2.convs.conv_0
    assert math.isclose(summary["last_layer"]["mean"], float(expected[:, -1].mean()), abs_tol=1e-6)
    assert math.isclose(summary["separability"]["m_d"]["mean"], float((dice - expected_input).mean()), abs_tol=1e-6)
    np.testing.assert_allclose(summary["units"]["mean_per_unit"], units.numpy(), atol=1e-6)
    assert summary["units"]["sorted_scores"] == sorted(summary["units"]["mean_per_unit"], reverse=True)
    with open(tmp_path / "per_image.csv") as f:
        rows = list(csv.reader(f))
    assert rows[0][:3] == ["filename", "output_dice", "sa_in"] and len(rows[0]) == 21
    assert [r[0] for r in rows[1:]] == [f"img_{i}.png" for i in range(5)]
    for name in ("layers.png", "units.png", "sams.png"):
        assert (tmp_path / name).stat().st_size > 1000
    assert len(sams.rows) == 2 and list(sams.rows[0]["sams"]) == ["1", "18"]


def test_layer_analysis_without_postprocessing_and_on_other_layers() -> None:
    net = _net()
    recorder = FeatureRecorderHandler(net, ["down_4.convs.conv_1", "final_conv"])
    evaluator = _evaluator(net, [recorder], {"output_dice": OutputDiceHandler(), "sa": SAScoreHandler()}, softmax=False)
    evaluator.run()
    summary = layer_results(evaluator)
    assert [row["name"] for row in summary["layers"]] == ["down_4.convs.conv_1", "final_conv"]
    assert "separability" not in summary and "units" not in summary
    # the logits are separable along their own argmax: ProtoSeg on final_conv reproduces the output
    assert summary["layers"][1]["mean"] == pytest.approx(summary["output_dice"]["mean"], abs=0.05)
    recorder.recorder.remove()
    units = SAScoreHandler("down_1", per_unit=True)
    with pytest.raises(ValueError, match="not one of the analysed layers"):
        _evaluator(net, [FeatureRecorderHandler(net, ["final_conv"])], {"units": units}).run()


def test_quality_handler_mu_and_tables(tmp_path: Path) -> None:
    net = _net()
    handlers = [FeatureRecorderHandler(net, BASIC_UNET_LAYERS[-2:]), ProtoSegSaver(tmp_path)]
    evaluator = _evaluator(net, handlers, {"mu": MeanSAScoreHandler(), "output_dice": OutputDiceHandler()})
    evaluator.run()
    data = _data()
    images = torch.stack([d["image"].as_tensor() for d in data])
    with FeatureRecorder(net, BASIC_UNET_LAYERS[-2:]) as recorder, torch.no_grad():
        logits = net(images)
        features = list(recorder.pop().values())
    mu = evaluator.state.metric_details["mu"][:, 0]
    torch.testing.assert_close(mu, mean_sa_score(features, logits), atol=1e-6, rtol=0)
    with open(tmp_path / "quality.csv") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["filename", "mu", "dice"] and len(rows) == 6
    summary = json.loads((tmp_path / "quality.json").read_text())
    assert [row["coverage"] for row in summary["mu"]["coverage"]] == [1.0, 0.9, 0.7, 0.5]
    assert [row["num_images"] for row in summary["mu"]["coverage"]] == [5, 5, 4, 3]
    assert (tmp_path / "mu_dice.png").stat().st_size > 1000


def test_quality_handler_at_inference_needs_no_label(tmp_path: Path) -> None:
    net = _net()
    handlers = [FeatureRecorderHandler(net, BASIC_UNET_LAYERS[-2:]), ProtoSegSaver(tmp_path, quality_filename="mu.csv")]
    data = [{"image": d["image"]} for d in _data(3)]
    _evaluator(net, handlers, {"mu": MeanSAScoreHandler()}, data=data).run()
    with open(tmp_path / "mu.csv") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["filename", "mu"] and [r[0] for r in rows[1:]] == ["img_0.png", "img_1.png", "img_2.png"]
    assert all(0.0 <= float(r[1]) <= 1.0 for r in rows[1:])
    assert not (tmp_path / "quality.json").exists()


def test_coverage_table_by_hand() -> None:
    mu = [0.9, 0.2, 0.5, 0.7]
    dice = [0.95, 0.10, 0.60, 0.80]
    rows = coverage_table(mu, dice, coverages=(1.0, 0.75, 0.5, 0.1))
    assert [r["num_images"] for r in rows] == [4, 3, 2, 1]
    assert rows[1]["mean"] == pytest.approx((0.95 + 0.6 + 0.8) / 3)
    assert rows[2]["mean"] == pytest.approx((0.95 + 0.8) / 2) and rows[2]["threshold"] == 0.7
    assert rows[3]["mean"] == pytest.approx(0.95)
    low_first = coverage_table(mu, dice, coverages=(0.5,), higher_is_better=False)
    assert low_first[0]["mean"] == pytest.approx((0.10 + 0.60) / 2)
    corr = score_correlation(mu, dice)
    assert corr["pearson_r"] == pytest.approx(np.corrcoef(mu, dice)[0, 1]) and corr["spearman_rho"] == pytest.approx(
        1.0
    )
    assert math.isnan(score_correlation([1, 1, 1], [0.1, 0.2, 0.3])["pearson_r"])
    with pytest.raises(ValueError, match="coverages"):
        coverage_table(mu, dice, coverages=(0.0,))
    with pytest.raises(ValueError, match="one length"):
        coverage_table(mu, dice[:3])


def test_variance_of_gradients() -> None:
    net = _net(0)
    other = _net(1)
    images = torch.rand(2, 1, SIZE, SIZE)
    target = binarize_prediction(net(images)).argmax(1, keepdim=True)
    same = VarianceOfGradients(net, [net.state_dict(), net.state_dict()])
    torch.testing.assert_close(same(images, target), torch.zeros(2))
    before = {k: v.clone() for k, v in net.state_dict().items()}
    with FeatureRecorder(net) as recorder:
        vog = VarianceOfGradients(net, [net.state_dict(), other.state_dict()])(images, target)
        with pytest.raises(RuntimeError):
            recorder.pop()  # the VoG copy did not feed the original's hooks
    assert vog.shape == (2,) and bool((vog > 0).all())
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    with pytest.raises(ValueError, match="at least 2"):
        VarianceOfGradients(net, [net.state_dict()])


def test_quality_handler_with_vog(tmp_path: Path) -> None:
    net = _net(0)
    ckpts = []
    for seed in (1, 2):
        path = tmp_path / f"model_epoch={seed}.pt"
        torch.save({"model": _net(seed).state_dict()}, path)
        ckpts.append(str(path))
    handlers = [FeatureRecorderHandler(net, BASIC_UNET_LAYERS[-2:]), ProtoSegSaver(tmp_path, vog_checkpoints=ckpts)]
    metrics = {
        "mu": MeanSAScoreHandler(),
        "output_dice": OutputDiceHandler(),
        "vog": VarianceOfGradientsHandler(net, ckpts),
    }
    evaluator = _evaluator(net, handlers, metrics, data=_data(3))
    evaluator.run()
    summary = json.loads((tmp_path / "quality.json").read_text())
    assert len(evaluator.state.metric_details["vog"]) == 3 and summary["vog"]["num_checkpoints"] == 2
    assert (tmp_path / "vog_dice.png").exists()
    with open(tmp_path / "quality.csv") as f:
        assert next(csv.reader(f)) == ["filename", "mu", "dice", "vog"]
    # one checkpoint: the VoG baseline is skipped with a warning, the rest runs
    single = VarianceOfGradientsHandler(net, ckpts[:1])
    evaluator = _evaluator(
        net, [FeatureRecorderHandler(net, BASIC_UNET_LAYERS[-2:])], {"mu": MeanSAScoreHandler(), "vog": single}
    )
    evaluator.run()
    assert "vog" not in evaluator.state.metric_details and len(evaluator.state.metric_details["mu"]) == 5


@pytest.mark.parametrize("initial_mask", ["pred", "label"])
def test_protoseg_loss_equals_its_definition(initial_mask: str) -> None:
    net = _net().train()
    layers = ["down_1.convs.conv_1", "upcat_1.convs.conv_1"]
    loss_fn = ProtoSegLoss(net, layers=layers, lambda_protoseg=0.5, initial_mask=initial_mask)
    data = _data(2)
    images = torch.stack([d["image"].as_tensor() for d in data])
    labels = torch.stack([d["label"].as_tensor() for d in data])
    with FeatureRecorder(net, layers) as recorder:
        logits = net(images)
        features = recorder.pop()
    total = loss_fn(logits, labels)
    mask = binarize_prediction(logits.detach()) if initial_mask == "pred" else one_hot(labels, 2)
    dice = DiceLoss(to_onehot_y=True, include_background=False)  # the index target, one-hot encoded by MONAI
    terms = [dice(protoseg(f, mask, spatial_size=(SIZE, SIZE)), labels) for f in features.values()]
    expected = (
        DiceCELoss(to_onehot_y=True, softmax=True, lambda_dice=0.0)(logits, labels) + 0.5 * torch.stack(terms).mean()
    )
    torch.testing.assert_close(total, expected)
    total.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters() if p.requires_grad)


def test_protoseg_loss_trains_the_hooked_features() -> None:
    data = _data(2)
    images = torch.stack([d["image"].as_tensor() for d in data])
    labels = torch.stack([d["label"].as_tensor() for d in data])
    grads = []
    for lam in (0.0, 1.0):
        net = _net().train()
        loss_fn = ProtoSegLoss(net, layers=["down_1.convs.conv_0"], lambda_protoseg=lam, initial_mask="label")
        loss_fn(net(images), labels).backward()
        grads.append(net.down_1.convs.conv_0.conv.weight.grad.clone())
    assert not torch.allclose(grads[0], grads[1])
    with pytest.raises(ValueError, match="initial_mask"):
        ProtoSegLoss(_net(), initial_mask="output")
    with pytest.raises(ValueError, match="class indices"):
        ProtoSegLoss(_net())(torch.zeros(1, 2, 4, 4), torch.zeros(1, 2, 4, 4))


def test_uniform_noise_is_bounded_and_reproducible() -> None:
    x = torch.zeros(2, 1, 16, 16)
    a = UniformNoise(0.3, seed=5)(None, x)
    b = UniformNoise(0.3, seed=5)(None, x)
    assert torch.equal(a, b) and float(a.abs().max()) <= 0.3 and float(a.abs().max()) > 0.25
    with pytest.raises(ValueError, match="level"):
        UniformNoise(-1.0)


def test_noise_sweep_writes_differences(tmp_path: Path) -> None:
    net = _net()
    recorder = FeatureRecorderHandler(net)
    evaluator = _evaluator(
        net, [recorder], {"output_dice": OutputDiceHandler(), "sa": SAScoreHandler()}, _data(2), False
    )
    clean_batch = evaluator.prepare_batch
    results = LevelSweep(evaluator, UniformNoise, levels=[0, 0.2, 1.0], summary=layer_results).run()
    assert evaluator.prepare_batch is clean_batch and [r["level"] for r in results] == [0.0, 0.2, 1.0]
    result = write_noise_study(results, tmp_path)
    assert result["layer_labels"] == ["in", *map(str, range(1, 19))]
    assert len(result["difference"]) == 2 and len(result["difference"][0]) == 19
    recorder.recorder.remove()
    clean = _evaluator(
        net, [FeatureRecorderHandler(net)], {"sa": SAScoreHandler(), "output_dice": OutputDiceHandler()}, _data(2)
    )
    clean.run()
    np.testing.assert_allclose(result["clean"], [row["mean"] for row in layer_results(clean)["layers"]], atol=1e-6)
    assert (tmp_path / "noise.png").stat().st_size > 1000
    with open(tmp_path / "noise.csv") as f:
        assert len(list(csv.reader(f))) == 4
