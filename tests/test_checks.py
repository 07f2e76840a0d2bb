"""Tests of the shared argument checks, ``monai_ext.utils.checks``, and of the networks that use them."""

from __future__ import annotations

import ast
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from monai_ext.networks.blocks import NLCE, ContextEncoding, NonLocalBlock, SelfAttention, SNResidualBlock
from monai_ext.networks.nets import NLCEN, NLCEUNet, SAGANDiscriminator, SAGANGenerator
from monai_ext.utils.checks import (
    check_bool,
    check_callable,
    check_choice,
    check_class_indices,
    check_fraction,
    check_image_batch,
    check_input_shape,
    check_interval,
    check_label_shape,
    check_non_negative,
    check_non_negative_int,
    check_number,
    check_positive,
    check_positive_int,
    check_spatial_dims,
    check_spatial_divisible,
    source_name,
)

PACKAGE = Path(__file__).resolve().parents[1] / "monai_ext"


def test_numbers_are_returned_as_floats():
    assert check_non_negative("eps", 0) == 0.0 and isinstance(check_non_negative("eps", 0), float)
    assert check_positive("lr", np.float32(0.5)) == 0.5
    assert check_non_negative("eps", torch.tensor(8)) == 8.0
    assert check_number("x", -3, low=-5, high=5) == -3.0
    assert check_fraction("mix", 1) == 1.0 and check_fraction("mix", 0) == 0.0


@pytest.mark.parametrize(
    "check, value, message",
    [
        (check_non_negative, -1, "eps must be >= 0, got -1.0"),
        (check_positive, 0, "eps must be > 0, got 0.0"),
        (check_non_negative, math.nan, "eps must be finite, got nan"),
        (check_positive, math.inf, "eps must be finite, got inf"),
        (check_non_negative, -math.inf, "eps must be finite, got -inf"),
        (check_non_negative, True, "eps must be a real number, got True"),
        (check_non_negative, "8", "eps must be a real number, got '8'"),  # a string, even one that reads as a number
        (check_non_negative, None, "eps must be a real number, got None"),
    ],
)
def test_real_numbers_refused(check, value, message):
    with pytest.raises(ValueError, match=message):
        check("eps", value)


def test_number_bounds_and_fractions():
    with pytest.raises(ValueError, match="weight must be <= 2, got 3.0"):
        check_number("weight", 3, high=2)
    with pytest.raises(ValueError, match="weight must be < 2, got 2.0"):
        check_number("weight", 2, high=2, high_open=True)
    with pytest.raises(ValueError, match=r"mix must be a fraction in \[0, 1\], got 1.5"):
        check_fraction("mix", 1.5)
    with pytest.raises(ValueError, match=r"coverage must be a fraction in \(0, 1\], got 0.0"):
        check_fraction("coverage", 0, allow_zero=False)
    with pytest.raises(ValueError, match=r"val_fraction must be a fraction in \[0, 1\), got 1.0"):
        check_fraction("val_fraction", 1, allow_one=False)
    with pytest.raises(ValueError, match="mix must be finite, got nan"):
        check_fraction("mix", float("nan"))


@pytest.mark.parametrize(
    "value, message",
    [
        (True, "in_channels must be a positive integer, got True"),
        (False, "in_channels must be a positive integer, got False"),
        (0, "in_channels must be >= 1, got 0"),
        (-2, "in_channels must be >= 1, got -2"),
        (2.5, "in_channels must be a positive integer, got 2.5"),
        (math.nan, "in_channels must be a positive integer, got nan"),
        (math.inf, "in_channels must be a positive integer, got inf"),
        ("8", "in_channels must be a positive integer, got '8'"),
        (None, "in_channels must be a positive integer, got None"),
    ],
)
def test_positive_int_refused(value, message):
    with pytest.raises(ValueError, match=message):
        check_positive_int("in_channels", value)


def test_ints():
    assert check_positive_int("in_channels", 8) == 8
    assert check_positive_int("in_channels", 8.0) == 8 and isinstance(check_positive_int("in_channels", 8.0), int)
    assert check_positive_int("in_channels", np.int64(3)) == 3
    assert check_positive_int("inter_channels", None, allow_none=True) is None
    assert check_non_negative_int("num_steps", 0) == 0
    with pytest.raises(ValueError, match="num_steps must be >= 0, got -1"):
        check_non_negative_int("num_steps", -1)
    with pytest.raises(ValueError, match="num_steps must be an integer >= 0, got True"):
        check_non_negative_int("num_steps", True)


def test_bool_reads_switches_not_truth_values():
    assert check_bool("random_start", True) is True and check_bool("random_start", np.bool_(False)) is False
    assert check_bool("random_start", "FALSE") is False and check_bool("random_start", "True") is True
    for value in ("no", "0", 0, 1, None, [False]):
        with pytest.raises(ValueError, match="random_start must be true or false"):
            check_bool("random_start", value)


def test_attacks_read_false_from_a_command_line_as_false():
    from monai_ext.attacks import APGD, PGD, LayeredPGD

    assert PGD(eps=4, alpha=1, num_steps=2, random_start="false").random_start is False
    apgd = APGD(eps=4, random_start="false", radius_reduction="true")
    assert apgd.random_start is False and apgd.radius_reduction is True
    assert LayeredPGD(eps=4, alpha=1, per_pass_ball="False").per_pass_ball is False
    with pytest.raises(ValueError, match="per_pass_ball must be true or false, got 'off'"):
        LayeredPGD(eps=4, alpha=1, per_pass_ball="off")


def test_choice_spatial_dims_interval_callable():
    assert check_choice("norm", "LINF", ("linf", "l2")) == "linf"
    with pytest.raises(ValueError, match="unknown norm 'l1', must be one of 'linf', 'l2'"):
        check_choice("norm", "l1", ("linf", "l2"))
    with pytest.raises(ValueError, match="unknown norm 2"):
        check_choice("norm", 2, ("linf", "l2"))
    assert check_spatial_dims(3) == 3
    with pytest.raises(ValueError, match="spatial_dims must be 1, 2 or 3, got True"):
        check_spatial_dims(True)
    with pytest.raises(ValueError, match="spatial_dims must be 2 or 3, got 1"):
        check_spatial_dims(1, allowed=(2, 3))
    assert check_interval("data_range", [0, 255]) == (0.0, 255.0)
    for bad in [(1, 1), (0, math.inf), (0,), "ab", (0, None)]:
        with pytest.raises(ValueError, match="data_range must be"):
            check_interval("data_range", bad)
    assert check_callable("attack", print) is print
    with pytest.raises(ValueError, match=r"attack must be a callable \(network, images, labels\) -> images, got 3"):
        check_callable("attack", 3, "a callable (network, images, labels) -> images")


def test_tensor_checks_name_the_files():
    images = MetaTensor(torch.rand(2, 1, 4, 4), meta={"filename_or_obj": ["a.png", "b.png"]})
    check_image_batch(images, (0.0, 1.0))
    images[1, 0, 0, 0] = 2.0
    with pytest.raises(ValueError, match=r"images 'b.png' \(batch index \[1\]\).*outside data_range \(0, 1\)"):
        check_image_batch(images, (0.0, 1.0))
    with pytest.raises(TypeError, match="images must be a torch.Tensor"):
        check_image_batch([1.0], (0.0, 1.0))
    assert check_label_shape(torch.zeros(2, 4, 4), images).shape == (2, 1, 4, 4)
    with pytest.raises(ValueError, match=r"target of shape \(2, 1, 4, 3\) do not match"):
        check_label_shape(torch.zeros(2, 1, 4, 3), images, name="target")
    check_class_indices(torch.tensor([0.0, 2.0]), 3)
    with pytest.raises(ValueError, match="whole numbers"):
        check_class_indices(torch.tensor([0.5]), 3)
    with pytest.raises(ValueError, match=r"class indices in \[0, 2\] for 3 classes, got values in \[0, 3\]"):
        check_class_indices(torch.tensor([0, 3]), 3)
    with pytest.raises(ValueError, match=r"image must have shape \(B, in_channels=3, \*spatial\)"):
        check_input_shape(torch.zeros(1, 1, 4, 4), 2, 3, name="image")
    with pytest.raises(ValueError, match=r"got shape \(4,\)"):
        check_input_shape(torch.zeros(4), 2, 3)
    check_spatial_divisible(torch.zeros(1, 1, 8, 16), 8, "three halvings")
    with pytest.raises(
        ValueError, match=r"image must be divisible by 8 \(three halvings\), got image shape \(1, 1, 8, 12\)"
    ):
        check_spatial_divisible(torch.zeros(1, 1, 8, 12), 8, "three halvings", name="image")


def test_source_name():
    assert source_name(MetaTensor(torch.zeros(1), meta={"filename_or_obj": "x.png"})) == "'x.png'"
    assert source_name(torch.zeros(1), {"label_meta_dict": {"filename_or_obj": "m.png"}}, "label") == "label 'm.png'"
    assert source_name(torch.zeros(1), {}, "label") == "'label' (no file name in its meta data)"


@pytest.mark.parametrize(
    "factory",
    [
        lambda: NonLocalBlock(2, True),
        lambda: SelfAttention(2, True),
        lambda: ContextEncoding(2, True),
        lambda: NLCE(2, True),
        lambda: SNResidualBlock(2, True, 4),
        lambda: SAGANGenerator(2, True, 2, channels=(4, 8)),
        lambda: SAGANDiscriminator(2, True, 2, channels=(4, 8)),
        lambda: NLCEN(in_channels=True),
    ],
    ids=["NonLocalBlock", "SelfAttention", "ContextEncoding", "NLCE", "SNResidualBlock", "gen", "disc", "NLCEN"],
)
def test_networks_refuse_a_bool_channel_count(factory):
    # True is not the integer 1: every network raises the same clear error before torch sees the value
    with pytest.raises(ValueError, match=r"^in_channels must be a positive integer, got True\.$"):
        factory()


def test_networks_refuse_bool_spatial_dims_and_take_whole_floats():
    for factory in (lambda: NonLocalBlock(True, 4), lambda: SelfAttention(True, 8), lambda: NLCEN(spatial_dims=True)):
        with pytest.raises(ValueError, match="spatial_dims must be .*, got True"):
            factory()
    with pytest.raises(ValueError, match="num_codes must be a positive integer, got 2.5"):
        NLCEUNet(2, 1, 2, channels=(4, 8), strides=(2,), num_codes=2.5)
    block = NonLocalBlock(2, 4.0)  # a whole float from a config is the integer it names
    assert block.in_channels == 4 and isinstance(block.in_channels, int)


def _imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module if node.level == 0 else f".{node.module}")
    return names


def test_import_directions():
    # the checks import no other monai_ext package; the attacks import neither transforms nor handlers
    assert not {m for m in _imported_modules(PACKAGE / "utils" / "checks.py") if m.startswith("monai_ext")}
    for path in (PACKAGE / "attacks").glob("*.py"):
        bad = {m for m in _imported_modules(path) if m.startswith(("monai_ext.transforms", "monai_ext.handlers"))}
        assert not bad, f"{path.name} imports {bad}"
