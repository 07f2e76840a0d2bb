"""ProtoSeg core: prototypes, probability map, SAM (monai_ext.metrics.protoseg_map), SA score and the mean SA score
(monai_ext.metrics.protoseg_score)."""

from __future__ import annotations

import math

import pytest
import torch
from monai.metrics import compute_dice
from monai.networks.utils import one_hot

from monai_ext.metrics import (
    MeanSAScoreMetric,
    SAScoreMetric,
    binarize_prediction,
    compute_layer_sa_scores,
    compute_prototypes,
    compute_sa_score,
    mean_sa_score,
    protoseg,
    protoseg_maps,
    segmentation_ability_map,
)


def _blob(shape: tuple[int, ...]) -> torch.Tensor:
    """A (1, 1, *shape) binary mask: a box in the middle."""
    mask = torch.zeros(1, 1, *shape)
    mask[(0, 0, *(slice(s // 4, 3 * s // 4 + 1) for s in shape))] = 1.0
    return mask


def test_prototypes_equal_hand_computation() -> None:
    # one sample, 2 channels, 2 x 3 pixels; the object is the right column pair
    f = torch.tensor([[[[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], [[0.0, 0.0, 10.0], [0.0, 2.0, 10.0]]]])
    m = torch.tensor([[[[0.0, 1.0, 1.0], [0.0, 0.0, 1.0]]]])
    protos, sums = compute_prototypes(f, m)
    # background pixels: (0,0), (1,0), (1,1); object pixels: (0,1), (0,2), (1,2)
    expected = torch.tensor([[[(1 + 4 + 5) / 3, (0 + 0 + 2) / 3], [(2 + 3 + 6) / 3, (0 + 10 + 10) / 3]]])
    torch.testing.assert_close(protos, expected)
    torch.testing.assert_close(sums, torch.tensor([[3.0, 3.0]]))


def test_soft_mask_prototypes_are_weighted_means() -> None:
    f = torch.tensor([[[[2.0, 4.0]]]])  # (1, 1, 1, 2)
    m = torch.tensor([[[[0.25, 1.0]]]])
    protos, sums = compute_prototypes(f, m)
    torch.testing.assert_close(protos[0, :, 0], torch.tensor([(0.75 * 2 + 0) / 0.75, (0.25 * 2 + 4) / 1.25]))
    torch.testing.assert_close(sums, torch.tensor([[0.75, 1.25]]))


def test_probability_map_equals_hand_computation() -> None:
    # eq. 5 on one channel: c_b = 0.5, c_o = 3.5
    f = torch.tensor([[[0.0, 1.0, 3.0, 4.0]]])  # (1, 1, 4): 1 spatial dim
    m = torch.tensor([[[0.0, 0.0, 1.0, 1.0]]])
    prob = protoseg(f, m)
    d_b = (f[0, 0] - 0.5) ** 2
    d_o = (f[0, 0] - 3.5) ** 2
    p_o = torch.exp(-d_o) / (torch.exp(-d_o) + torch.exp(-d_b))
    torch.testing.assert_close(prob[0, 1], p_o)
    torch.testing.assert_close(prob.sum(1), torch.ones(1, 4))


def test_mask_at_another_resolution_is_area_averaged() -> None:
    f = torch.arange(4.0).reshape(1, 1, 2, 2)
    m = torch.zeros(1, 1, 4, 4)
    m[0, 0, :2, :3] = 1.0  # covers all of feature pixel (0, 0) and half of (0, 1)
    protos, sums = compute_prototypes(f, m)
    torch.testing.assert_close(sums, torch.tensor([[2.5, 1.5]]))
    torch.testing.assert_close(protos[0, 1, 0], torch.tensor((1.0 * 0 + 0.5 * 1) / 1.5))


@pytest.mark.parametrize("shape", [(16, 12), (8, 10, 6)])
@pytest.mark.parametrize("coarse", [False, True])
def test_scaled_copy_of_the_mask_has_sa_score_one(shape: tuple[int, ...], coarse: bool) -> None:
    gt = _blob(shape)
    # channels: scaled, negated and shifted copies of the ground truth
    features = torch.cat([3.0 * gt, -0.5 * gt + 2.0, 7.0 * gt - 1.0], dim=1)
    # the initial mask need not be the ground truth: a shifted box still separates the two feature values
    mask = torch.roll(gt, shifts=1, dims=2) if coarse else gt
    torch.testing.assert_close(compute_sa_score(features, mask, gt), torch.ones(1, 1))
    torch.testing.assert_close(compute_sa_score(features, mask, gt, per_unit=True), torch.ones(1, 3, 1))


@pytest.mark.parametrize("shape", [(12, 9), (6, 7, 5)])
def test_sam_is_invariant_to_affine_rescaling_of_one_channel_features(shape: tuple[int, ...]) -> None:
    gen = torch.Generator().manual_seed(0)
    f = torch.randn(3, 1, *shape, generator=gen)
    mask = (torch.rand(3, 1, *shape, generator=gen) > 0.6).float()
    sam = protoseg(f, mask).argmax(1)
    for scale, shift in ((2.5, 1.0), (-0.3, 4.0), (10.0, -7.0)):
        torch.testing.assert_close(protoseg(scale * f + shift, mask).argmax(1), sam)


def test_gradcheck_probability_map_double() -> None:
    gen = torch.Generator().manual_seed(1)
    f = (0.5 * torch.randn(2, 3, 4, 3, generator=gen, dtype=torch.float64)).requires_grad_()
    m = (0.1 + 0.8 * torch.rand(2, 1, 8, 6, generator=gen, dtype=torch.float64)).requires_grad_()
    tissue = 0.2 + 0.8 * torch.rand(2, 1, 4, 3, generator=gen, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda a, b: protoseg(a, b), (f, m))
    assert torch.autograd.gradcheck(lambda a, b: protoseg(a, b, tissue_mask=tissue, spatial_size=(7, 6)), (f, m))
    assert torch.autograd.gradcheck(lambda a: protoseg(a, m.detach(), per_unit=True), (f,))
    f3 = torch.randn(1, 2, 3, 4, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    m3 = 0.1 + 0.8 * torch.rand(1, 3, 3, 4, 3, generator=gen, dtype=torch.float64)  # 3 classes, 3D
    assert torch.autograd.gradcheck(lambda a: protoseg(a, m3), (f3,))


def test_gradcheck_with_an_empty_class_double() -> None:
    f = torch.randn(1, 2, 4, 4, dtype=torch.float64, requires_grad=True)
    m = torch.zeros(1, 1, 4, 4, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda a: protoseg(a, m), (f,))


@pytest.mark.parametrize("shape", [(8, 8), (4, 6, 5)])
def test_empty_and_all_object_masks(shape: tuple[int, ...]) -> None:
    f = torch.randn(2, 4, *shape, requires_grad=True)
    empty = torch.zeros(2, 1, *shape)
    full = torch.ones(2, 1, *shape)
    for mask, cls in ((empty, 0), (full, 1)):
        prob = protoseg(f, mask)
        assert torch.isfinite(prob).all()
        assert bool((prob.argmax(1) == cls).all())
        torch.testing.assert_close(prob[:, cls], torch.ones(2, *shape))
        prob[:, 1].sum().backward()
        assert torch.isfinite(f.grad).all()
        f.grad = None
    gt_empty = torch.zeros(2, 1, *shape)
    # empty SAM against an empty ground truth is a perfect score, against a non-empty one zero
    torch.testing.assert_close(compute_sa_score(f.detach(), empty, gt_empty), torch.ones(2, 1))
    torch.testing.assert_close(compute_sa_score(f.detach(), empty, full), torch.zeros(2, 1))
    torch.testing.assert_close(compute_sa_score(f.detach(), full, full), torch.ones(2, 1))


def test_all_classes_empty_gives_uniform_map() -> None:
    f = torch.randn(1, 2, 5, 5)
    prob = protoseg(f, torch.zeros(1, 3, 5, 5))  # a 3-channel mask with no weight anywhere
    torch.testing.assert_close(prob, torch.full((1, 3, 5, 5), 1 / 3))
    prob = protoseg(f, _blob((5, 5)), tissue_mask=torch.zeros(1, 1, 5, 5))  # no tissue: all background
    torch.testing.assert_close(prob[:, 0], torch.ones(1, 5, 5))


def test_multiclass_one_prototype_per_class() -> None:
    labels = torch.zeros(1, 1, 9, 9)
    labels[0, 0, :4, :4] = 1
    labels[0, 0, 5:, 5:] = 2
    onehot = one_hot(labels, 3)
    features = torch.cat([2.0 * onehot[:, 1:2], -3.0 * onehot[:, 2:3]], dim=1)
    protos, _ = compute_prototypes(features, onehot)
    torch.testing.assert_close(protos[0], torch.tensor([[0.0, 0.0], [2.0, 0.0], [0.0, -3.0]]))
    torch.testing.assert_close(compute_sa_score(features, onehot, labels), torch.ones(1, 2))
    torch.testing.assert_close(compute_sa_score(features, onehot, onehot, include_background=True), torch.ones(1, 3))


def test_tissue_mask_limits_prototypes_and_map() -> None:
    gt = _blob((8, 8))
    tissue = torch.zeros(1, 1, 8, 8)
    tissue[..., 1:7, 1:7] = 1.0
    f = 2.0 * gt
    f_outlier = f.clone()
    f_outlier[..., 0, :] = 1000.0  # outside the tissue: must not move the prototypes
    torch.testing.assert_close(
        compute_prototypes(f_outlier, gt, tissue)[0], compute_prototypes(f, gt * tissue, None)[0]
    )
    prob = protoseg(f_outlier, gt, tissue)
    assert bool((prob[0, 0][tissue[0, 0] == 0] == 1).all())


def test_sa_score_is_monai_compute_dice_of_the_sam() -> None:
    gen = torch.Generator().manual_seed(2)
    f = torch.randn(4, 3, 5, 5, generator=gen)
    mask = one_hot(torch.randint(0, 3, (4, 1, 10, 10), generator=gen), 3)
    labels = torch.randint(0, 3, (4, 1, 10, 10), generator=gen).float()
    labels[1] = 0  # an empty ground truth for classes 1 and 2
    sam = segmentation_ability_map(f, mask, spatial_size=(10, 10))
    torch.testing.assert_close(sam, protoseg(f, mask, spatial_size=(10, 10)).argmax(1, keepdim=True))
    for include_background in (False, True):
        ours = compute_sa_score(f, mask, labels, include_background=include_background)
        ref = compute_dice(
            one_hot(sam, 3), one_hot(labels, 3), include_background=include_background, ignore_empty=False
        )
        torch.testing.assert_close(ours, ref)


def test_mean_sa_score_of_copies_of_the_output_is_one() -> None:
    pred_logits = torch.cat([-_blob((12, 12)), _blob((12, 12))], dim=1) * 5.0
    reference = binarize_prediction(pred_logits)
    layer_a = torch.cat([reference[:, 1:], 4.0 * reference[:, 1:]], dim=1)
    layer_b = 1.0 - 2.0 * layer_a
    torch.testing.assert_close(mean_sa_score([layer_a, layer_b], pred_logits), torch.ones(1))
    noise = torch.randn(1, 8, 12, 12, generator=torch.Generator().manual_seed(3))
    assert float(mean_sa_score([noise], pred_logits)) < 0.9


def test_binarize_prediction() -> None:
    prob = torch.tensor([[[[0.2, 0.7]]]])
    torch.testing.assert_close(binarize_prediction(prob), torch.tensor([[[[1.0, 0.0]], [[0.0, 1.0]]]]))
    logits = torch.tensor([[[[1.0, -1.0]], [[0.0, 3.0]], [[2.0, 0.0]]]])
    assert binarize_prediction(logits).argmax(1).tolist() == [[[2, 1]]]


def test_sa_score_metric_accumulates_and_aggregates() -> None:
    gen = torch.Generator().manual_seed(4)
    metric = SAScoreMetric()
    scores = []
    for _ in range(3):
        f = torch.randn(2, 3, 8, 8, generator=gen)
        gt = (torch.rand(2, 1, 8, 8, generator=gen) > 0.5).float()
        mask = (torch.rand(2, 1, 8, 8, generator=gen) > 0.5).float()
        metric(y_pred=f, y=gt, mask=mask)
        scores.append(compute_sa_score(f, mask, gt))
    per_sample = torch.cat(scores)
    torch.testing.assert_close(metric.get_buffer(), per_sample)
    torch.testing.assert_close(metric.aggregate().item(), per_sample.mean().item())
    torch.testing.assert_close(metric.aggregate("none"), per_sample)
    metric.reset()
    with pytest.raises(ValueError, match="mask"):
        metric(y_pred=torch.randn(1, 2, 4, 4), y=torch.zeros(1, 1, 4, 4))


def test_bad_inputs_raise_clear_errors() -> None:
    f = torch.randn(1, 2, 4, 4)
    m = torch.zeros(1, 1, 4, 4)
    bad = f.clone()
    bad[0, 0, 0, 0] = math.nan
    with pytest.raises(ValueError, match="features holds 1 NaN"):
        protoseg(bad, m)
    with pytest.raises(ValueError, match=r"in \[0, 1\], got values in \[2, 2\]"):
        protoseg(f, 2 * torch.ones(1, 1, 4, 4))
    with pytest.raises(ValueError, match="batch size"):
        protoseg(f, torch.zeros(2, 1, 4, 4))
    with pytest.raises(ValueError, match="spatial dims"):
        protoseg(torch.randn(1, 2, 3, 3, 3, 3), m)
    with pytest.raises(ValueError, match=r"class indices in \[0, 1\] for 2 classes, got values in \[3"):
        compute_sa_score(f, m, torch.full((1, 1, 4, 4), 3.0))
    with pytest.raises(ValueError, match="3 channels"):
        compute_sa_score(f, m, torch.zeros(1, 3, 4, 4))
    with pytest.raises(ValueError, match="tissue_mask"):
        protoseg(f, m, tissue_mask=torch.ones(1, 2, 4, 4))


def test_probability_map_equals_the_direct_distance_formula() -> None:
    # protoseg expands the distance around the channel means: compare with softmax(-|f - c|^2) in float64, per unit,
    # and in float32 on features far from 0 (without the shift, |c|^2 ~ 1e6 would put errors of ~0.05 in the map)
    gen = torch.Generator().manual_seed(5)
    f = 1000.0 + torch.randn(2, 3, 6, 5, generator=gen, dtype=torch.float64)
    m = (torch.rand(2, 1, 6, 5, generator=gen) > 0.5).double()
    weights = torch.cat([1 - m, m], 1)
    protos = torch.einsum("bkhw,bchw->bkc", weights, f) / weights.sum((2, 3))[..., None]
    sq = (f[:, None] - protos[..., None, None]) ** 2  # (B, K, C, H, W)
    torch.testing.assert_close(protoseg(f, m), torch.softmax(-sq.sum(2), dim=1))
    torch.testing.assert_close(protoseg(f, m, per_unit=True), torch.softmax(-sq.transpose(1, 2), dim=2))
    torch.testing.assert_close(
        protoseg(f.float(), m.float()), torch.softmax(-sq.sum(2), dim=1).float(), atol=1e-3, rtol=0
    )


def test_several_layers_at_once_equal_one_by_one() -> None:
    gen = torch.Generator().manual_seed(6)
    layers = [torch.randn(2, c, s, s, generator=gen) for c, s in ((3, 16), (5, 8), (4, 4), (2, 8))]
    mask = (torch.rand(2, 1, 16, 16, generator=gen) > 0.5).float()
    gt = (torch.rand(2, 1, 16, 16, generator=gen) > 0.4).float()
    tissue = (torch.rand(2, 1, 16, 16, generator=gen) > 0.1).float()
    maps = protoseg_maps(layers, mask, tissue, spatial_size=(16, 16))
    for f, prob in zip(layers, maps):
        torch.testing.assert_close(prob, protoseg(f, mask, tissue, spatial_size=(16, 16)))
    scores = compute_layer_sa_scores(layers, mask, gt, tissue)
    torch.testing.assert_close(scores, torch.stack([compute_sa_score(f, mask, gt, tissue) for f in layers], dim=1))


def test_metrics_take_a_mapping_of_layers() -> None:
    gen = torch.Generator().manual_seed(7)
    layers = {"a": torch.randn(2, 3, 8, 8, generator=gen), "b": torch.randn(2, 5, 4, 4, generator=gen)}
    pred = torch.randn(2, 2, 8, 8, generator=gen)
    gt = (torch.rand(2, 1, 8, 8, generator=gen) > 0.5).float()
    mask = binarize_prediction(pred)
    metric = SAScoreMetric(reduction="mean_batch")
    metric(y_pred=layers, y=gt, mask=mask)
    expected = compute_layer_sa_scores(list(layers.values()), mask, gt)
    torch.testing.assert_close(metric.get_buffer(), expected)  # (N, L, K')
    torch.testing.assert_close(metric.aggregate(), expected.mean(0))
    units = SAScoreMetric(per_unit=True)
    units(y_pred=layers["b"], y=gt, mask=mask)
    torch.testing.assert_close(units.get_buffer(), compute_sa_score(layers["b"], mask, gt, per_unit=True))
    with pytest.raises(ValueError, match="per_unit"):
        units(y_pred=layers, y=gt, mask=mask)
    mu = MeanSAScoreMetric()
    mu(y_pred=layers, y=pred)
    torch.testing.assert_close(mu.get_buffer(), mean_sa_score(list(layers.values()), pred)[:, None])
    torch.testing.assert_close(mu.aggregate(), mean_sa_score(list(layers.values()), pred).mean().reshape(1))
