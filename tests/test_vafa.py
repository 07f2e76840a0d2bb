"""VAFA and its blockwise DCT: the round trip and scipy's DCT, the quantisation error within half a step, the block
error within the orthonormal bound, the SSIM bound checked by MONAI's SSIMMetric (hypothesis), a loss above the clean
one and above random quantisation, 2D, the sliding window and the batch, refused inputs."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import scipy.fft
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from monai.data import MetaTensor
from monai.inferers import SlidingWindowInferer
from monai.metrics import SSIMMetric
from torch import nn

from monai_ext.attacks import VAFA, attack_loss, block_dct, block_idct
from monai_ext.attacks.block_dct import dct_matrix, to_blocks
from monai_ext.attacks.vafa import quantise, smooth_round
from monai_ext.transforms import Attackd

torch.set_num_threads(1)

LEVEL = 1 / 255  # one quantisation level in the units of images in [0, 1]


def _volumes(batch: int, spatial: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    """Smooth random images in [0, 1] around 0.5: a box filter of uniform noise."""
    noise = torch.rand(batch, 1, *spatial, generator=torch.Generator().manual_seed(seed))
    pool = F.avg_pool3d if len(spatial) == 3 else F.avg_pool2d
    return pool(noise, 5, 1, 2, count_include_pad=False)


def _threshold_net(spatial_dims: int = 3) -> nn.Module:
    """A local mean (3 voxels wide) then a threshold at 0.5: two-class logits ``(-20, 20) * (mean - 0.5)``."""
    conv = nn.Conv3d if spatial_dims == 3 else nn.Conv2d
    net = nn.Sequential(conv(1, 1, 3, padding=1, bias=False), conv(1, 2, 1))
    with torch.no_grad():
        net[0].weight.fill_(1 / 3**spatial_dims)
        net[1].weight.copy_(torch.tensor([-20.0, 20.0]).view(2, 1, *[1] * spatial_dims))
        net[1].bias.copy_(torch.tensor([10.0, -10.0]))
    return net.eval()


def _case(spatial: tuple[int, ...] = (16, 16, 12), batch: int = 2, seed: int = 0):
    images = _volumes(batch, spatial, seed)
    net = _threshold_net(len(spatial))
    with torch.no_grad():
        labels = net(images).argmax(1, keepdim=True)
    return net, images, labels


def _losses(net: nn.Module, images: torch.Tensor, labels: torch.Tensor, loss: str = "ce") -> torch.Tensor:
    with torch.no_grad():
        return attack_loss(net(images), labels, loss, reduction="none")


# the blockwise DCT


def test_dct_matrix_is_orthonormal_and_scipys():
    for n in (1, 3, 8):
        m = dct_matrix(n, torch.float64)
        torch.testing.assert_close(m @ m.T, torch.eye(n, dtype=torch.float64))
        v = np.random.default_rng(n).random(n)
        np.testing.assert_allclose((m @ torch.from_numpy(v)).numpy(), scipy.fft.dct(v, norm="ortho"), atol=1e-12)


@settings(max_examples=30, deadline=None)
@given(
    spatial=st.lists(st.integers(1, 13), min_size=2, max_size=3),
    block=st.integers(1, 8),
    channels=st.integers(1, 2),
    seed=st.integers(0, 2**16),
)
def test_block_dct_round_trip_and_scipy(spatial, block, channels, seed):
    """The inverse gives the images back to 1e-5 (float32), padding included; each block's coefficients are
    ``scipy.fft.dctn(block, norm="ortho")`` of the block padded by edge replication."""
    images = torch.rand(2, channels, *spatial, generator=torch.Generator().manual_seed(seed))
    sizes = [block] * len(spatial)
    coefficients = block_dct(images, sizes)
    num_blocks = [math.ceil(s / block) for s in spatial]
    assert coefficients.shape == (2, channels, *num_blocks, *sizes)
    torch.testing.assert_close(block_idct(coefficients, spatial), images, atol=1e-5, rtol=0)
    padded = np.pad(images.numpy(), [(0, 0), (0, 0)] + [(0, -s % block) for s in spatial], mode="edge")
    last = tuple(slice((n - 1) * block, n * block) for n in num_blocks)  # the last block holds the padding
    expected = scipy.fft.dctn(padded[(1, channels - 1, *last)], norm="ortho")
    np.testing.assert_allclose(coefficients[(1, channels - 1, *[n - 1 for n in num_blocks])], expected, atol=1e-5)


# the quantisation error


@settings(max_examples=200, deadline=None)
@given(
    c=st.floats(-2000, 2000, allow_nan=False),
    q=st.floats(1, 80),
    alpha=st.floats(1e-6, 0.999),
)
def test_quantisation_error_is_at_most_half_a_step(c, q, alpha):
    """``|quantise(c, q) - c| <= q / 2``: the smooth rounding lies between ``z`` and ``round(z)``, never farther
    from ``z`` than the hard rounding, which is at most 1/2 away."""
    z = torch.tensor(c / q, dtype=torch.float64)
    soft = smooth_round(z, alpha)
    assert abs(soft - z) <= abs(torch.round(z) - z) + 1e-9
    error = quantise(torch.tensor(c, dtype=torch.float64), torch.tensor(q, dtype=torch.float64), alpha) - c
    assert abs(error.item()) <= q / 2 + 1e-9


def test_smooth_rounding_tends_to_rounding():
    # at least 0.2 from a half-integer: the sharpness log(2 / alpha - 1) grows only as the log of 1 / alpha
    z = (torch.arange(-3, 4)[:, None] + torch.tensor([-0.3, -0.1, 0.0, 0.1, 0.3])).flatten().double()
    torch.testing.assert_close(smooth_round(z, 1e-9), torch.round(z), atol=1e-3, rtol=0)
    assert (smooth_round(z, 0.1) - z).abs().max() < 0.5


@settings(max_examples=25, deadline=None)
@given(spatial_dims=st.sampled_from([2, 3]), q_max=st.floats(1, 60), block=st.integers(2, 5), seed=st.integers(0, 999))
def test_block_error_within_the_orthonormal_bound(spatial_dims, q_max, block, seed):
    """Per block, ``||x' - x||_2 <= sqrt(sum_i (q_i / 2) ** 2)`` (levels turned into data units) for any table in
    ``[1, q_max]``: the DCT keeps the L2 norm, and clipping to the data range only moves values towards the clean."""
    spatial = (11, 9, 7)[:spatial_dims]
    generator = torch.Generator().manual_seed(seed)
    images = torch.rand(2, 1, *spatial, generator=generator)
    attack = VAFA(q_max=q_max, block_size=block, spatial_dims=spatial_dims)
    coefficients = block_dct(images - 0.5, attack.block_size)
    q = 1 + torch.rand(coefficients.shape, generator=generator) * (q_max - 1)
    adv = attack.compress(coefficients, q, alpha=0.05, spatial=spatial)
    assert adv.min() >= 0 and adv.max() <= 1
    diff = F.pad(adv - images, [p for s in reversed(spatial) for p in (0, -s % block)])  # zeros add no norm
    error = to_blocks(diff, attack.block_size).flatten(2 + spatial_dims).norm(dim=-1)
    bound = (q * LEVEL / 2).pow(2).flatten(2 + spatial_dims).sum(-1).sqrt()
    assert (error <= bound * (1 + 1e-5)).all()


# the attack


@settings(max_examples=10, deadline=None)
@given(
    threshold=st.floats(0.9, 0.999),
    q_max=st.floats(5, 80),
    optimizer=st.sampled_from(["sign", "adam"]),
    seed=st.integers(0, 999),
)
def test_results_keep_the_ssim_bound(threshold, q_max, optimizer, seed):
    """Every returned image has MONAI's SSIM (computed here on its own) >= the threshold, lies in the data range and
    keeps the input's shape and dtype; its record says which iterate it is, or that it is the clean image."""
    images = _volumes(3, (12, 12, 10), seed).view(3, 1, 12, 12, 10).repeat(1, 2, 1, 1, 1)
    images[:, 1] = 1 - images[:, 1] ** 2
    labels = (images[:, :1] > 0.5).long()
    torch.manual_seed(seed)
    net = nn.Conv3d(2, 2, 3, padding=1).eval()
    attack = VAFA(
        q_max=q_max, block_size=4, num_steps=4, optimizer=optimizer, ssim_threshold=threshold, ssim_win_size=5
    )
    adv, records = attack.with_record(net, images, labels)
    assert adv.shape == images.shape and adv.dtype == images.dtype
    assert adv.min() >= 0 and adv.max() <= 1
    ssim = SSIMMetric(3, data_range=1.0, win_size=5)(adv, images).view(-1)
    assert (ssim >= threshold - 1e-6).all(), (ssim, threshold)
    for image, record, value in zip(range(3), records, ssim.tolist()):
        if record["step"] is None:
            assert torch.equal(adv[image], images[image])
        else:
            assert record["ssim"] == pytest.approx(value, abs=1e-5) and 0 <= record["step"] < 4


def test_no_iterate_within_the_bound_gives_the_clean_images():
    net, images, labels = _case()
    adv, records = VAFA(block_size=4, num_steps=3, ssim_threshold=1.0, ssim_win_size=7).with_record(net, images, labels)
    assert torch.equal(adv, images)
    assert records == [{"step": None, "ssim": 1.0, "objective": None}] * 2


@pytest.mark.parametrize("loss", ["ce", "dice"])
def test_raises_the_loss_more_than_random_quantisation(loss):
    """On a 3D network (local mean, threshold), VAFA's loss is above the clean one and above that of random tables in
    ``[1, q_max]``, and above its start, the table at ``q_max`` (the authors' code)."""
    net, images, labels = _case()
    q_max, block = 20, [4, 4, 4]
    attack = VAFA(q_max=q_max, block_size=block, num_steps=10, ssim_threshold=0.9, ssim_win_size=7, loss=loss)
    clean, adv = _losses(net, images, labels, loss), _losses(net, attack(net, images, labels), labels, loss)
    coefficients = block_dct(images - 0.5, block)
    generator = torch.Generator().manual_seed(0)
    for _ in range(5):
        q = 1 + torch.rand(coefficients.shape, generator=generator) * (q_max - 1)
        random = _losses(net, attack.compress(coefficients, q, 1e-3, images.shape[2:]), labels, loss)
        assert (adv > random).all() and (random - clean).abs().max() < (adv - clean).min()
    start = attack.compress(coefficients, torch.full_like(coefficients, q_max), 0.1, images.shape[2:])
    assert (adv > _losses(net, start, labels, loss)).all()


def test_paper_start_is_a_table_of_ones():
    """``q_init=1`` (Algorithm 1): the first iterate quantises with steps of one level, so each block moves by at
    most half a level per coefficient in L2 norm."""
    net, images, labels = _case()
    adv, records = VAFA(q_init=1, block_size=4, num_steps=1, ssim_win_size=7).with_record(net, images, labels)
    assert [r["step"] for r in records] == [0, 0]
    error = to_blocks(adv - images, [4, 4, 4]).flatten(5).norm(dim=-1)
    assert 0 < error.max() <= LEVEL / 2 * math.sqrt(4**3)


def test_2d_images():
    net, images, labels = _case((24, 20), batch=3)
    attack = VAFA(q_max=30, block_size=[4, 8], num_steps=6, ssim_threshold=0.95, spatial_dims=2, ssim_win_size=7)
    adv = attack(net, images, labels)
    assert adv.shape == images.shape and adv.min() >= 0 and adv.max() <= 1
    assert (SSIMMetric(2, win_size=7)(adv, images).view(-1) >= 0.95 - 1e-6).all()
    assert (_losses(net, adv, labels, "dice") > _losses(net, images, labels, "dice")).all()


def test_targeted_lowers_the_loss_on_the_target():
    net, images, labels = _case()
    target = torch.ones_like(labels)
    attack = VAFA(q_max=40, block_size=4, num_steps=6, ssim_threshold=0.9, ssim_win_size=7, loss="ce", target=1)
    adv = attack(net, images, labels)
    assert (_losses(net, adv, target) < _losses(net, images, target)).all()


def test_sliding_window_and_batch_give_the_same_result():
    """The gradient reaches ``q`` through the attack objective: through a sliding window (of a pointwise network, whose
    blended windows are the network's output) and one image at a time, the result is the same."""
    images = _volumes(2, (16, 16, 12))
    net = _threshold_net()[1]  # pointwise: the threshold alone
    labels = (images > 0.5).long()
    kwargs = {"q_max": 20, "block_size": 4, "num_steps": 5, "ssim_threshold": 0.97, "ssim_win_size": 7, "loss": "ce"}
    whole = VAFA(**kwargs)(net, images, labels)
    inferer = SlidingWindowInferer((8, 8, 8), sw_batch_size=2, overlap=0.25, mode="gaussian")
    torch.testing.assert_close(VAFA(**kwargs, inferer=inferer)(net, images, labels), whole, atol=1e-5, rtol=0)
    one_by_one = torch.cat([VAFA(**kwargs)(net, images[i : i + 1], labels[i : i + 1]) for i in range(2)])
    torch.testing.assert_close(one_by_one, whole, atol=1e-5, rtol=0)
    assert (_losses(net, whole, labels) > _losses(net, images, labels)).all()


def test_other_data_range():
    """Images in [-1, 3]: the levels scale with the range, the result stays in it and within the SSIM bound."""
    net, images, labels = _case()
    shifted = images * 4 - 1
    attack = VAFA(q_max=20, block_size=4, num_steps=4, ssim_threshold=0.95, ssim_win_size=7, data_range=(-1, 3))
    adv = attack(lambda x: net((x + 1) / 4), shifted, labels)
    assert adv.min() >= -1 and adv.max() <= 3
    assert (SSIMMetric(3, data_range=4.0, win_size=7)(adv, shifted).view(-1) >= 0.95 - 1e-6).all()
    torch.testing.assert_close((adv + 1) / 4, VAFA(**{**attack.settings(), "data_range": (0, 1)})(net, images, labels))


def test_refuses_inputs_outside_the_data_range_and_bad_shapes():
    net, images, labels = _case()
    attack = VAFA(block_size=4, num_steps=2, ssim_win_size=7)
    with pytest.raises(ValueError, match="outside data_range"):
        attack(net, images + 0.6, labels)
    with pytest.raises(ValueError, match="spatial axes"):
        attack(_threshold_net(2), images[..., 0], labels[..., 0])  # 2D images, a 3D attack
    with pytest.raises(ValueError, match="spatial axes"):
        VAFA(ssim_win_size=13)(net, images, labels)  # the SSIM window is larger than the image


@pytest.mark.parametrize(
    "kwargs",
    [
        {"q_max": 0.5},
        {"q_init": 30},
        {"block_size": [4, 4]},
        {"block_size": 0},
        {"num_steps": 0},
        {"lr": 0},
        {"optimizer": "sgd"},
        {"ssim_threshold": 1.5},
        {"ssim_weight": -1},
        {"spatial_dims": 1},
    ],
)
def test_refuses_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        VAFA(**kwargs)


def test_settings_are_json_without_a_ball():
    attack = VAFA(block_size=[8, 8, 4])
    assert attack.eps == math.inf
    settings = attack.settings()
    assert "eps" not in settings and "unit" not in settings
    assert json.loads(json.dumps(settings))["block_size"] == [8, 8, 4]
    assert repr(attack).startswith("VAFA(")


def test_attackd_door_writes_the_record():
    """The same attack through ``Attackd``: one sample, a ``MetaTensor`` kept, the record of the chosen iterate."""
    net, images, labels = _case(batch=1)
    attack = VAFA(block_size=4, num_steps=3, ssim_win_size=7)
    image = MetaTensor(images[0], meta={"filename_or_obj": "volume.nii.gz"})
    out = Attackd("image", attack=attack, network=net, record_key="vafa")({"image": image, "label": labels[0]})
    assert isinstance(out["image"], MetaTensor) and out["image"].meta["filename_or_obj"] == "volume.nii.gz"
    torch.testing.assert_close(out["image"].as_tensor()[None], attack(net, images, labels))
    record = json.loads(json.dumps(out["vafa"]))
    assert record["attack"] == "VAFA" and record["settings"]["q_max"] == 20
    assert sorted(record["record"]) == ["objective", "ssim", "step"]
