"""Benchmark the attacks of ``monai_ext.attacks``: PGD, SegPGD, CosPGD and APGD over the floor of plain gradient
passes, PGD against torchattacks, and the shared sweep over the NLCEN paper's 18 budgets against one run per budget.

For each network (MONAI's U-Net and the project's NLCEN, eval mode, random weights from a fixed seed unless a
checkpoint is given) and each number of steps (10 and 40 by default), on one batch (8 x 1 x 224 x 224 by default):

- **floor**: ``steps`` plain passes of forward + cross-entropy + ``torch.autograd.grad(loss, x)`` on the batch, the
  least work any gradient attack of that many steps must do;
- **ours**: ``monai_ext.attacks.PGD(eps=8, alpha=2, num_steps=steps, random_start=False, unit="levels")``, L-inf;
  ratio ours / floor, target ``<= 1.10``;
- **torchattacks**: ``torchattacks.PGD(model, eps=8/255, alpha=2/255, steps=steps, random_start=False)`` on the same
  network, batch and labels ``(B, H, W)`` long (its ``nn.CrossEntropyLoss()`` has mean reduction, as our
  ``F.cross_entropy``; it puts the model in eval mode itself, ``set_model_training_mode`` left at its default
  all-eval, and assumes inputs in ``[0, 1]``, our ``data_range``); max abs difference of the two adversarial batches
  (target ``<= 1e-5``) and the time ratio ours / torchattacks. Skipped with a message when torchattacks is not
  importable. Install it in the benchmark's environment only: ``pip install --no-deps torchattacks`` (its
  torchvision requirement would replace the CPU torch); it is not a project dependency;
- **segpgd**, **cospgd**: ``SegPGD`` / ``CosPGD`` with the same settings as ours; ratio over the floor (the same
  ``steps`` passes), target ``<= 1.10``;
- **apgd**: ``APGD(eps=8, num_steps=steps)``, L-inf, cross-entropy; it makes ``steps + 1`` forward and ``steps``
  backward passes, its floor (**floor_apgd**) the same plain passes; ratio target ``<= 1.10``.

Per network, the **sweep** case: ``IterativeFGSM(eps, target="inverse")`` (Kurakin's schedule, the NLCEN paper's
attack) at the paper's 18 budgets ``{0.5, 1, 2, 4, 6, ..., 32}``, one run per budget (327 passes) against
``monai_ext.attacks.shared_sweep`` (the trunk shared across budgets, 69 passes when every budget leaves the trunk as
early as it can); the adversarial batches must be equal (max abs difference ``<= 1e-6``) and the time ratio shared /
per-budget ``<= 0.30``.

Timing: the three methods of one (network, steps) case are measured in the same process, ``repeats`` rounds after
one untimed warm-up round, the order of the methods rotated from round to round, so that all see the same machine
state; ratios use the best time of each (the least disturbed by other load) and decide the targets; the ratio of
the medians and the median over rounds of the within-round ratio ("paired", robust to slow drifts of the load) are
reported too.

The batch is synthetic (seeded): smooth noise scaled to exactly ``[0, 1]`` (so that the data-range clip is active)
and labels = ``image > 0.5``.

Usage::

    python benchmarks/bench_attacks.py        # batch 8, 224 x 224, steps 10 40, unet nlcen; writes results JSON
    python benchmarks/bench_attacks.py --batch 2 --size 64 --steps 2 4 --repeats 2 --output /tmp/bench_attacks.json
    python benchmarks/bench_attacks.py --checkpoint unet=path/to/model.pt   # trained weights instead of random
    python benchmarks/bench_attacks.py --no-sweep   # without the 18-budget sweep case
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from common import machine_info
from torch import nn

from monai_ext.utils import write_json

DEFAULT_OUTPUT = Path(__file__).resolve().parent / "results" / "bench_attacks.json"
FLOOR_TARGET = 1.10  # ours / floor
DIFF_TARGET = 1e-5  # max |ours - torchattacks|
SWEEP_TARGET = 0.30  # shared sweep / per-budget sweep
SWEEP_DIFF_TARGET = 1e-6  # max |shared - per budget|
EPS_LEVELS, ALPHA_LEVELS = 8, 2
NETWORKS = ("unet", "nlcen")
NLCEN_BUDGETS = (0.5, 1, *range(2, 33, 2))  # the NLCEN paper's 18 budgets, in levels
NEW_ATTACKS = ("segpgd", "cospgd", "apgd")  # timed over a floor, as ours


def build_network(name: str, seed: int, checkpoint: str | None = None) -> nn.Module:
    """The network ``name`` in eval mode: random weights from ``seed``, or the state dict at ``checkpoint``."""
    torch.manual_seed(seed)
    if name == "unet":
        from monai.networks.nets import UNet

        net = UNet(
            spatial_dims=2,
            in_channels=1,
            out_channels=2,
            channels=(16, 32, 64, 128, 256),
            strides=(2, 2, 2, 2),
            num_res_units=2,
        )
    elif name == "nlcen":
        from monai_ext.networks.nets import NLCEN

        net = NLCEN(spatial_dims=2, in_channels=1, out_channels=2, backbone="resnet18")
    else:
        raise ValueError(f"unknown network {name!r}, must be one of {', '.join(NETWORKS)}.")
    if checkpoint:
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
        for key in ("state_dict", "model", "network"):
            if isinstance(state, dict) and key in state and isinstance(state[key], dict):
                state = state[key]
        net.load_state_dict(state)
    return net.eval()


def make_batch(batch: int, size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Images ``(B, 1, size, size)`` in exactly ``[0, 1]`` and labels ``(B, 1, size, size)`` float class indices."""
    gen = torch.Generator().manual_seed(seed)
    noise = torch.rand(batch, 1, size, size, generator=gen)
    smooth = F.avg_pool2d(noise, kernel_size=9, stride=1, padding=4, count_include_pad=False)
    lo = smooth.amin(dim=(1, 2, 3), keepdim=True)
    hi = smooth.amax(dim=(1, 2, 3), keepdim=True)
    images = ((smooth - lo) / (hi - lo)).clamp(0.0, 1.0).contiguous()
    labels = (images > 0.5).float()
    return images, labels


def floor_passes(
    net: nn.Module, images: torch.Tensor, target: torch.Tensor, steps: int, extra_forward: int = 0
) -> torch.Tensor:
    """``steps`` plain forward + loss + input-gradient passes (and ``extra_forward`` forward passes without a
    gradient): the minimum work of a ``steps``-step gradient attack."""
    grad = None
    for _ in range(steps):
        x = images.detach().requires_grad_(True)
        loss = F.cross_entropy(net(x), target)
        (grad,) = torch.autograd.grad(loss, x)
    with torch.no_grad():
        for _ in range(extra_forward):
            net(images)
    return grad


def _timed(fn) -> tuple[float, object]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def run_case(
    net: nn.Module, images: torch.Tensor, labels: torch.Tensor, steps: int, repeats: int, torchattacks
) -> dict:
    """Time the floor, our PGD and (if available) torchattacks' PGD on one batch, interleaved; compare outputs."""
    from monai_ext.attacks import APGD, PGD, CosPGD, SegPGD

    target = labels[:, 0].long()  # (B, H, W) for nn.CrossEntropyLoss / F.cross_entropy
    common = {"eps": EPS_LEVELS, "alpha": ALPHA_LEVELS, "num_steps": steps, "random_start": False, "unit": "levels"}
    ours = PGD(**common)
    segpgd, cospgd, apgd = SegPGD(**common), CosPGD(**common), APGD(EPS_LEVELS, num_steps=steps)
    methods = {
        "floor": lambda: floor_passes(net, images, target, steps),
        "ours": lambda: ours(net, images, labels),
        "segpgd": lambda: segpgd(net, images, labels),
        "cospgd": lambda: cospgd(net, images, labels),
        "apgd": lambda: apgd(net, images, labels),
        "floor_apgd": lambda: floor_passes(net, images, target, steps, extra_forward=1),
    }
    if torchattacks is not None:
        theirs = torchattacks.PGD(net, eps=EPS_LEVELS / 255, alpha=ALPHA_LEVELS / 255, steps=steps, random_start=False)
        theirs.set_model_training_mode(model_training=False, batchnorm_training=False, dropout_training=False)
        methods["torchattacks"] = lambda: theirs(images, target)

    names = list(methods)
    times: dict[str, list[float]] = {name: [] for name in names}
    outputs: dict[str, torch.Tensor] = {}
    for round_ in range(repeats + 1):  # round 0: untimed warm-up
        order = names[round_ % len(names) :] + names[: round_ % len(names)]
        for name in order:
            elapsed, out = _timed(methods[name])
            if round_ == 0:
                outputs[name] = out
            else:
                times[name].append(elapsed)

    plain = (bool, int, float, str, tuple, type(None))
    settings = {k: v if isinstance(v, plain) else repr(v) for k, v in ours.settings().items()}
    res: dict = {"steps": steps, "ours_settings": settings, "times_s": times}
    res["best_s"] = {k: min(v) for k, v in times.items()}
    res["median_s"] = {k: statistics.median(v) for k, v in times.items()}
    res["ours_over_floor"] = res["best_s"]["ours"] / res["best_s"]["floor"]
    res["ours_over_floor_median"] = res["median_s"]["ours"] / res["median_s"]["floor"]
    # the ratio within each round (both measured seconds apart), median over the rounds: robust to slow load drifts
    res["ours_over_floor_paired_median"] = statistics.median(o / f for o, f in zip(times["ours"], times["floor"]))
    res["floor_target_pass"] = res["ours_over_floor"] <= FLOOR_TARGET
    for name in NEW_ATTACKS:
        floor = "floor_apgd" if name == "apgd" else "floor"
        res[f"{name}_over_floor"] = res["best_s"][name] / res["best_s"][floor]
        res[f"{name}_over_floor_paired_median"] = statistics.median(o / f for o, f in zip(times[name], times[floor]))
        res[f"{name}_floor_target_pass"] = res[f"{name}_over_floor"] <= FLOOR_TARGET
    if torchattacks is not None:
        ours_adv, their_adv = outputs["ours"], outputs["torchattacks"]
        diff = (ours_adv - their_adv).abs()
        eps = EPS_LEVELS / 255
        res["max_abs_diff"] = float(diff.max())
        res["num_diff_values"] = int((diff > 0).sum())
        res["num_diff_values_gt_1e-5"] = int((diff > DIFF_TARGET).sum())
        res["num_values"] = diff.numel()
        res["diff_target_pass"] = res["max_abs_diff"] <= DIFF_TARGET
        res["ours_over_torchattacks"] = res["best_s"]["ours"] / res["best_s"]["torchattacks"]
        res["ours_over_torchattacks_median"] = res["median_s"]["ours"] / res["median_s"]["torchattacks"]
        res["ours_over_torchattacks_paired_median"] = statistics.median(
            o / t for o, t in zip(times["ours"], times["torchattacks"])
        )
        # sanity: both in the ball and the data range
        for name, adv in (("ours", ours_adv), ("torchattacks", their_adv)):
            res[f"{name}_linf"] = float((adv - images).abs().max())
            res[f"{name}_in_ball"] = bool(res[f"{name}_linf"] <= eps + 1e-6 and adv.min() >= 0 and adv.max() <= 1)
    return res


def run_sweep_case(net: nn.Module, images: torch.Tensor, labels: torch.Tensor, repeats: int) -> dict:
    """Time one targeted I-FGSM run per budget of the NLCEN paper's 18 against the shared sweep, interleaved."""
    import functools

    from monai_ext.attacks import IterativeFGSM, SharedTrajectories, kurakin_num_steps

    factory = functools.partial(IterativeFGSM, target="inverse")
    passes = []

    def shared() -> dict:
        sharing = SharedTrajectories(factory, NLCEN_BUDGETS)
        out = {eps: sharing(eps)(net, images, labels) for eps in NLCEN_BUDGETS}
        passes.append(sharing.passes)
        return out

    methods = {
        "per_budget": lambda: {eps: factory(eps)(net, images, labels) for eps in NLCEN_BUDGETS},
        "shared": shared,
    }
    times: dict[str, list[float]] = {name: [] for name in methods}
    outputs = {}
    for round_ in range(repeats + 1):  # round 0: untimed warm-up
        for name in list(methods)[round_ % 2 :] + list(methods)[: round_ % 2]:
            elapsed, out = _timed(methods[name])
            if round_ == 0:
                outputs[name] = out
            else:
                times[name].append(elapsed)
    diff = max(float((outputs["shared"][e] - outputs["per_budget"][e]).abs().max()) for e in NLCEN_BUDGETS)
    res = {"budgets": list(NLCEN_BUDGETS), "times_s": times, "best_s": {k: min(v) for k, v in times.items()}}
    res["passes"] = {"per_budget": sum(kurakin_num_steps(e) for e in NLCEN_BUDGETS), "shared": passes[0]}
    res["shared_over_per_budget"] = res["best_s"]["shared"] / res["best_s"]["per_budget"]
    res["shared_over_per_budget_paired_median"] = statistics.median(
        s / p for s, p in zip(times["shared"], times["per_budget"])
    )
    res["max_abs_diff"] = diff
    res["sweep_target_pass"] = res["shared_over_per_budget"] <= SWEEP_TARGET
    res["sweep_diff_target_pass"] = diff <= SWEEP_DIFF_TARGET
    return res


def _import_torchattacks():
    try:
        import torchattacks
    except (ImportError, RuntimeError, AttributeError) as e:  # not installed, or an install broken against torch
        print(
            f"torchattacks is not importable ({type(e).__name__}: {e}): skipping the comparison. Install it in the "
            "benchmark's environment with `pip install --no-deps torchattacks`.",
            flush=True,
        )
        return None
    return torchattacks


def _parse_checkpoints(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or name not in NETWORKS:
            raise SystemExit(f"--checkpoint must be NETWORK=PATH with NETWORK in {NETWORKS}, got {item!r}")
        out[name] = path
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=224, help="side length of the square images")
    parser.add_argument("--steps", type=int, nargs="+", default=[10, 40], help="PGD step counts")
    parser.add_argument("--networks", nargs="+", choices=NETWORKS, default=list(NETWORKS))
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds after one warm-up round")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random weights and the synthetic batch")
    parser.add_argument(
        "--checkpoint", action="append", default=[], metavar="NETWORK=PATH", help="state dict instead of random"
    )
    parser.add_argument("--no-torchattacks", action="store_true", help="skip the torchattacks comparison")
    parser.add_argument("--no-sweep", action="store_true", help="skip the 18-budget shared sweep case")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.batch < 1 or args.size < 1 or min(args.steps) < 1:
        raise SystemExit("--batch, --size, --steps and --repeats must be >= 1")
    checkpoints = _parse_checkpoints(args.checkpoint)
    if args.threads:
        torch.set_num_threads(args.threads)

    torchattacks = None if args.no_torchattacks else _import_torchattacks()
    images, labels = make_batch(args.batch, args.size, args.seed)
    print(
        f"PGD L-inf eps={EPS_LEVELS}/255 alpha={ALPHA_LEVELS}/255 no random start; batch {args.batch} x 1 x "
        f"{args.size} x {args.size}; torch {torch.__version__}, {torch.get_num_threads()} threads; "
        f"best of {args.repeats} rounds",
        flush=True,
    )

    results, sweeps = [], []
    for name in args.networks:
        net = build_network(name, args.seed, checkpoints.get(name))
        for steps in args.steps:
            res = {"network": name, "weights": checkpoints.get(name, f"random (seed {args.seed})")}
            res.update(run_case(net, images, labels, steps, args.repeats, torchattacks))
            results.append(res)
            best = res["best_s"]
            msg = f"  {name:6s} {steps:3d} steps: floor {best['floor']:.3f} s, ours {best['ours']:.3f} s"
            if "torchattacks" in res["best_s"]:
                msg += f", torchattacks {res['best_s']['torchattacks']:.3f} s, max diff {res['max_abs_diff']:.3g}"
            print(msg, flush=True)
        if not args.no_sweep:
            sweep = {"network": name, **run_sweep_case(net, images, labels, args.repeats)}
            sweeps.append(sweep)
            print(
                f"  {name:6s} 18-budget sweep: per budget {sweep['best_s']['per_budget']:.3f} s, shared "
                f"{sweep['best_s']['shared']:.3f} s ({sweep['passes']['shared']} of {sweep['passes']['per_budget']} "
                f"passes), max diff {sweep['max_abs_diff']:.3g}",
                flush=True,
            )
        del net

    has_ta = torchattacks is not None
    header = f"{'network':>7} {'steps':>5} {'floor s':>8} {'ours s':>8} {'ours/floor':>10} {'paired':>6} {'<=1.10':>6}"
    if has_ta:
        header += f" {'t.attacks s':>11} {'ours/t.a.':>9} {'max|diff|':>9} {'<=1e-5':>6}"
    print(
        "\nbest times; ratios of the best times (target on these); paired = median over rounds of the ratio within a "
        f"round\n{header}\n{'-' * len(header)}"
    )
    for r in results:
        row = (
            f"{r['network']:>7} {r['steps']:>5} {r['best_s']['floor']:>8.3f} {r['best_s']['ours']:>8.3f} "
            f"{r['ours_over_floor']:>10.3f} {r['ours_over_floor_paired_median']:>6.3f} "
            f"{'PASS' if r['floor_target_pass'] else 'FAIL':>6}"
        )
        if has_ta:
            row += (
                f" {r['best_s']['torchattacks']:>11.3f} {r['ours_over_torchattacks']:>9.3f} "
                f"{r['max_abs_diff']:>9.2g} {'PASS' if r['diff_target_pass'] else 'FAIL':>6}"
            )
        print(row)

    print(f"\nnew attacks over their floor (target <= {FLOOR_TARGET}; paired in brackets)")
    for r in results:
        cells = [f"{n} {r[f'{n}_over_floor']:.3f} ({r[f'{n}_over_floor_paired_median']:.3f})" for n in NEW_ATTACKS]
        print(f"  {r['network']:>7} {r['steps']:>3} steps: " + ", ".join(cells))
    for s in sweeps:
        print(
            f"  {s['network']:>7} sweep: shared / per budget {s['shared_over_per_budget']:.3f} (target <= "
            f"{SWEEP_TARGET}), max |diff| {s['max_abs_diff']:.3g} (target <= {SWEEP_DIFF_TARGET:g})"
        )
    floor_pass = all(r["floor_target_pass"] for r in results)
    new_pass = all(r[f"{n}_floor_target_pass"] for r in results for n in NEW_ATTACKS)
    sweep_pass = all(s["sweep_target_pass"] and s["sweep_diff_target_pass"] for s in sweeps) if sweeps else None
    diff_pass = all(r["diff_target_pass"] for r in results) if has_ta else None
    print(f"\nours / floor <= {FLOOR_TARGET}: {'PASS' if floor_pass else 'FAIL'}")
    if has_ta:
        print(f"max |ours - torchattacks| <= {DIFF_TARGET:g}: {'PASS' if diff_pass else 'FAIL'}")
    else:
        print("torchattacks comparison: SKIPPED (not importable or --no-torchattacks)")

    report = {
        "benchmark": (
            "monai_ext.attacks PGD, SegPGD, CosPGD, APGD vs the floor of plain forward+backward passes, PGD vs "
            "torchattacks.PGD, shared_sweep vs one run per budget over the NLCEN paper's 18 budgets"
        ),
        "config": {
            "batch": args.batch,
            "size": args.size,
            "steps": args.steps,
            "networks": args.networks,
            "repeats": args.repeats,
            "seed": args.seed,
            "checkpoints": checkpoints,
            "eps": f"{EPS_LEVELS}/255",
            "alpha": f"{ALPHA_LEVELS}/255",
            "norm": "linf",
            "random_start": False,
        },
        "machine": machine_info(),
        "torchattacks": getattr(torchattacks, "__version__", None) if has_ta else None,
        "time_method": (
            "one process; per case one untimed warm-up round then `repeats` rounds, the order of the methods rotated "
            "each round; targets on the ratios of the best times (ratios of medians and paired within-round medians "
            "also given)"
        ),
        "results": results,
        "sweeps": sweeps,
        "targets": {
            "ours_over_floor_le_1.10": "PASS" if floor_pass else "FAIL",
            "segpgd_cospgd_apgd_over_floor_le_1.10": "PASS" if new_pass else "FAIL",
            "shared_sweep_over_per_budget_le_0.30_and_diff_le_1e-6": (
                "SKIPPED" if sweep_pass is None else "PASS" if sweep_pass else "FAIL"
            ),
            "max_abs_diff_le_1e-5": ("PASS" if diff_pass else "FAIL") if has_ta else "SKIPPED",
        },
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    write_json(args.output, report)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
