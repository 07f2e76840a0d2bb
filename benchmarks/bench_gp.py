"""Benchmark ``monai_ext.attacks.GradientPerturbation``: batched GP with per-image early stop against the same batch
without early stop and against a one-image-at-a-time loop.

On the U-Net of ``bundles/gp_input_transfer`` (MONAI ``UNet``, channels 32-512, strides 2 x 4, 2 residual units),
trained briefly on the bundle's synthetic phantoms (``--train_steps``, seeded) and in eval mode, one batch of ``B``
fresh phantoms (8 by default) with their ground truth (lungs as foreground):

- **early stop** (ours): ``GradientPerturbation(gamma, num_steps).perturb(net, images, labels)``: an image that
  converges leaves the active batch and costs no further pass;
- **no early stop**: the same steps on the whole batch until every image has converged (or ``K`` steps): a converged
  image does not move (its gradient is zero) but is still run, the cost of a batched loop without the active batch;
- **one image at a time**: ``perturb`` on each image alone, in a Python loop.

The three take the same steps; their images agree up to the float differences of convolutions over batches of other
sizes (reported: max abs difference, steps equal), which can change a prediction at a pixel and so the later steps.
Images per second = ``B`` / time; target: early stop at least 1.5x the one-image loop. An image stops when its
foreground Dice reaches ``1 - dice_tolerance`` (0.01 by default; the paper allows "close enough within an error
margin"), or after ``K`` steps.

The trained network's mistakes differ from image to image, so the images converge after different numbers of steps
(a random network is almost insensitive to its input: GP then runs every image to ``K``, which measures nothing).

Timing: the three methods measured in one process, ``repeats`` rounds after an untimed warm-up, the order rotated
from round to round; the ratios use the best time of each.

Usage::

    python benchmarks/bench_gp.py                  # batch 8, 64 x 64, K 100; writes benchmarks/results/bench_gp.json
    python benchmarks/bench_gp.py --size 224 --repeats 3 --output /tmp/bench_gp.json
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from common import machine_info
from monai.losses import DiceCELoss
from monai.networks.nets import UNet
from torch import nn

from monai_ext.attacks import GradientPerturbation, gp_objective, matches_label
from monai_ext.data import synthetic_phantom
from monai_ext.utils import write_json

DEFAULT_OUTPUT = Path(__file__).resolve().parent / "results" / "bench_gp.json"
TARGET = 1.5  # early stop images/s over the one-image loop's


def phantoms(batch: int, size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``batch`` synthetic chest X-ray phantoms (the bundle's default data) in ``[0, 1]``, lungs as foreground."""
    rng = np.random.default_rng(seed)
    pairs = [synthetic_phantom(rng, (size, size)) for _ in range(batch)]
    images = torch.from_numpy(np.stack([p[0] for p in pairs])[:, None] / 255.0).float()
    labels = torch.from_numpy(np.isin(np.stack([p[1] for p in pairs]), (150, 200))[:, None]).float()
    return images, labels


def build_unet(seed: int, size: int, train_steps: int) -> nn.Module:
    """
    The bundle's segmenter (train.json's defaults), trained ``train_steps`` Adam steps (batch 8, Dice + CE) on fresh
    phantoms so that GP meets the mistakes of a trained network, then in eval mode.
    """
    torch.manual_seed(seed)
    net = UNet(2, 1, 2, channels=(32, 64, 128, 256, 512), strides=(2, 2, 2, 2), num_res_units=2)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    loss = DiceCELoss(to_onehot_y=True, softmax=True)
    for step in range(train_steps):
        images, labels = phantoms(8, size, seed + 1000 + step)
        optimizer.zero_grad()
        loss(net(images), labels).backward()
        optimizer.step()
    return net.eval()


def no_early_stop(net: nn.Module, images: torch.Tensor, labels: torch.Tensor, gp: GradientPerturbation):
    """GP's steps on the whole batch until all images converge (or ``num_steps``): converged images stay in."""
    x = images.clone()
    steps = torch.zeros(images.shape[0], dtype=torch.long)
    for _ in range(gp.num_steps):
        x.requires_grad_(True)
        logits = net(x)
        (grad,) = torch.autograd.grad(gp_objective(logits, labels).sum(), x)
        done = matches_label(logits.detach(), labels, gp.dice_tolerance)
        if done.all():
            break
        scale = grad.flatten(1).abs().amax(1).clamp_min(torch.finfo(grad.dtype).tiny).view(-1, 1, 1, 1)
        moving = (~done).view(-1, 1, 1, 1)
        x = torch.where(moving, x.detach() - gp.gamma * grad / scale, x.detach())
        steps += (~done).long()
    return x.detach(), steps


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=64, help="side of the square images (divisible by 16)")
    parser.add_argument("--gamma", type=float, default=0.1, help="GP step (data units; the paper's GP_T: 0.1)")
    parser.add_argument("--num_steps", type=int, default=100, help="K")
    parser.add_argument("--dice_tolerance", type=float, default=0.01, help="stop at Dice >= 1 - this (0: exact)")
    parser.add_argument("--repeats", type=int, default=2, help="timed rounds after one warm-up round")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--train_steps", type=int, default=60, help="Adam steps of the U-Net on phantoms")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    start = time.perf_counter()
    net = build_unet(args.seed, args.size, args.train_steps)
    print(f"trained the U-Net {args.train_steps} steps in {time.perf_counter() - start:.1f} s", flush=True)
    images, labels = phantoms(args.batch, args.size, args.seed)
    gp = GradientPerturbation(gamma=args.gamma, num_steps=args.num_steps, dice_tolerance=args.dice_tolerance)
    methods = {
        "early_stop": lambda: gp.perturb(net, images, labels),
        "no_early_stop": lambda: no_early_stop(net, images, labels, gp),
        "one_at_a_time": lambda: [gp.perturb(net, images[i : i + 1], labels[i : i + 1]) for i in range(args.batch)],
    }
    names = list(methods)
    times: dict[str, list[float]] = {n: [] for n in names}
    outputs = {}
    for round_ in range(args.repeats + 1):
        for name in names[round_ % 3 :] + names[: round_ % 3]:
            start = time.perf_counter()
            out = methods[name]()
            elapsed = time.perf_counter() - start
            if round_ == 0:
                outputs[name] = out
            else:
                times[name].append(elapsed)
            print(f"  round {round_} {name}: {elapsed:.2f} s", flush=True)

    ours = outputs["early_stop"]
    full_x, full_steps = outputs["no_early_stop"]
    alone_x = torch.cat([r.images for r in outputs["one_at_a_time"]])
    alone_steps = torch.cat([r.iterations for r in outputs["one_at_a_time"]])
    best = {n: min(t) for n, t in times.items()}
    per_second = {n: args.batch / t for n, t in best.items()}
    speedup = {
        "early_stop_over_one_at_a_time": per_second["early_stop"] / per_second["one_at_a_time"],
        "early_stop_over_no_early_stop": per_second["early_stop"] / per_second["no_early_stop"],
    }
    report = {
        "benchmark": "GradientPerturbation: batched with per-image early stop vs no early stop vs one image at a time",
        "config": {k: v for k, v in vars(args).items() if k != "output"},  # the output path is machine-specific
        "network": "MONAI UNet(2, 1, 2, channels=(32, 64, 128, 256, 512), strides=(2, 2, 2, 2), num_res_units=2)",
        "machine": machine_info(),
        "steps_per_image": ours.iterations.tolist(),
        "converged": ours.converged.tolist(),
        "image_passes": {
            "early_stop": int((ours.iterations + 1).sum()),
            "no_early_stop": args.batch * (int(full_steps.max()) + 1),
        },
        "same_result": {
            "max_abs_diff_no_early_stop": float((ours.images - full_x).abs().max()),
            "max_abs_diff_one_at_a_time": float((ours.images - alone_x).abs().max()),
            "steps_equal": bool(torch.equal(ours.iterations, full_steps) and torch.equal(ours.iterations, alone_steps)),
        },
        "times_s": times,
        "best_s": best,
        "images_per_second": per_second,
        "speedup": speedup,
        "target": {f"early_stop_over_one_at_a_time_ge_{TARGET}": speedup["early_stop_over_one_at_a_time"] >= TARGET},
    }
    print(
        f"\nsteps per image {report['steps_per_image']}; image passes {report['image_passes']}\n"
        + "\n".join(f"{n:>14}: {best[n]:7.2f} s, {per_second[n]:6.2f} images/s" for n in names)
        + f"\nearly stop / one at a time: {speedup['early_stop_over_one_at_a_time']:.2f}x (target >= {TARGET}: "
        + ("PASS" if report["target"][f"early_stop_over_one_at_a_time_ge_{TARGET}"] else "FAIL")
        + f"); early stop / no early stop: {speedup['early_stop_over_no_early_stop']:.2f}x"
        + f"\nsame result: {report['same_result']}"
    )
    write_json(args.output, report)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
