"""Benchmark the attacks of ``monai_ext.attacks``: PGD, SegPGD, CosPGD and APGD over the floor of plain gradient
passes, PGD against torchattacks, and (``--sweep``) the shared sweep over the NLCEN paper's 18 budgets against one run
per budget.

For each network (MONAI's U-Net 16-256 with 2 residual units and the project's NLCEN, eval mode, random weights from a
fixed seed unless a checkpoint is given), each batch shape (128 x 128 batch 4 and 224 x 224 batch 8 by default) and
each number of steps (10 by default), on one batch:

- **floor**: ``steps`` plain passes of forward + cross-entropy + ``torch.autograd.grad(loss, x)`` on the batch, the
  least work any gradient attack of that many steps must do; **forward**: one forward pass without gradient;
- **pgd**: ``monai_ext.attacks.PGD(eps=8, alpha=2, num_steps=steps, random_start=False, unit="levels")``, L-inf;
- **segpgd**, **cospgd**: ``SegPGD`` / ``CosPGD`` with the same settings;
- **apgd**: ``APGD(eps=8, num_steps=steps)``, L-inf, cross-entropy: ``steps + 1`` forward and ``steps`` backward
  passes, its floor the floor plus one forward pass;
- **apgd_rr**: the same with SEA's radius reduction (``radius_reduction=True``): each of its three stages evaluates
  its starting point, so its floor has three forward passes more than ``steps`` gradient passes;
- **sea**: ``ensemble_attack(eps=8, num_steps=steps, preset="sea")``, SEA's three losses, each an APGD with radius
  reduction, the worst per image by pixel accuracy: ``3 steps`` gradient passes and 12 forward passes (3 per member,
  and one to score each member's result);
- **torchattacks** (when importable): ``torchattacks.PGD(model, eps=8/255, alpha=2/255, steps=steps,
  random_start=False)`` on the same network, batch and labels ``(B, H, W)`` long (its ``nn.CrossEntropyLoss()`` has
  mean reduction, as our ``F.cross_entropy``; it puts the model in eval mode itself and assumes inputs in ``[0, 1]``,
  our ``data_range``); max abs difference to ours (target ``<= 1e-5``) and the time ratio ours / torchattacks.
  Install it in the benchmark's environment only: ``pip install --no-deps torchattacks`` (its torchvision
  requirement would replace the CPU torch); it is not a project dependency.

Each attack's ratio over its floor has the target ``<= 1.10``. The attacks are listed once, in ``_attacks()`` (a
factory and the passes of its floor): an attack added there is timed, tabled and checked like the others.

Timing: one process; per case one untimed warm-up round (every method at one step), a floor, then rounds of ``one
forward pass, then each attack followed by a floor`` (the attacks in an order rotated from round to round), at least
``--repeats`` rounds and until the case has run ``--seconds``. Every call is timed on two clocks: wall
(``time.perf_counter``) and the process's CPU time (``time.process_time``, the work of all its threads, which other
jobs on a shared machine disturb less than the wall clock). An attack's ratio in a round is its time over its floor
there (the mean of the floors just before and after it, plus the forward passes of APGD and SEA); the reported ratio is the
median over the rounds on the clock ``--clock`` (CPU by default), which decides the target; the other clock's median
and the ratio of the best times are recorded too.

The batch is synthetic (seeded): smooth noise scaled to exactly ``[0, 1]`` (so that the data-range clip is active)
and labels = ``image > 0.5``.

The **sweep** case (``--sweep``, at the first batch shape): ``IterativeFGSM(eps, target="inverse")`` (Kurakin's
schedule, the NLCEN paper's attack) at the paper's 18 budgets ``{0.5, 1, 2, 4, 6, ..., 32}``, one run per budget (327
passes) against ``monai_ext.attacks.shared_sweep`` (the trunk shared across budgets, 69 passes when every budget
leaves the trunk as early as it can); the adversarial batches must be equal (max abs difference ``<= 1e-6``) and the
time ratio shared / per-budget ``<= 0.30``.

Usage::

    python benchmarks/bench_attacks.py        # 128 x 128 batch 4 and 224 x 224 batch 8, 10 steps, unet nlcen
    python benchmarks/bench_attacks.py --threads 1   # one thread: the CPU clock then measures one core's work
    python benchmarks/bench_attacks.py --size 64 --batch 2 --steps 2 4 --repeats 2 --output /tmp/bench_attacks.json
    python benchmarks/bench_attacks.py --checkpoint unet=path/to/model.pt   # trained weights instead of random
    python benchmarks/bench_attacks.py --sweep   # with the 18-budget sweep case
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from common import machine_info
from torch import nn

from monai_ext.utils import write_json

DEFAULT_OUTPUT = Path(__file__).resolve().parent / "results" / "bench_attacks.json"
FLOOR_TARGET = 1.10  # attack / floor
DIFF_TARGET = 1e-5  # max |ours - torchattacks|
SWEEP_TARGET = 0.30  # shared sweep / per-budget sweep
SWEEP_DIFF_TARGET = 1e-6  # max |shared - per budget|
EPS_LEVELS, ALPHA_LEVELS = 8, 2
NETWORKS = ("unet", "nlcen")
CLOCKS = ("cpu", "wall")
NLCEN_BUDGETS = (0.5, 1, *range(2, 33, 2))  # the NLCEN paper's 18 budgets, in levels


def _attacks() -> dict[str, tuple[Callable[[int], Callable], Callable[[int], tuple[int, int]]]]:
    """The attacks timed over a floor: name -> (a factory of the attack of ``steps`` steps, the passes of its floor
    ``steps -> (forward + backward passes, extra forward passes)``)."""
    from monai_ext.attacks import APGD, PGD, CosPGD, SegPGD, ensemble_attack

    common = {"eps": EPS_LEVELS, "alpha": ALPHA_LEVELS, "random_start": False, "unit": "levels"}
    return {
        "pgd": (lambda steps: PGD(num_steps=steps, **common), lambda steps: (steps, 0)),
        "segpgd": (lambda steps: SegPGD(num_steps=steps, **common), lambda steps: (steps, 0)),
        "cospgd": (lambda steps: CosPGD(num_steps=steps, **common), lambda steps: (steps, 0)),
        "apgd": (lambda steps: APGD(EPS_LEVELS, num_steps=steps), lambda steps: (steps, 1)),
        "apgd_rr": (lambda steps: APGD(EPS_LEVELS, num_steps=steps, radius_reduction=True), lambda steps: (steps, 3)),
        "sea": (
            lambda steps: ensemble_attack(eps=EPS_LEVELS, num_steps=steps, preset="sea"),
            lambda steps: (3 * steps, 12),
        ),
    }


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


def forward_pass(net: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """One forward pass without gradient: the extra pass of an attack that scores its last iterate (APGD)."""
    with torch.no_grad():
        return net(images)


def _timed(fn: Callable[[], object]) -> tuple[float, float, object]:
    """``(wall seconds, CPU seconds of the process, result)`` of ``fn()``."""
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return time.perf_counter() - wall, time.process_time() - cpu, out


def _median_ratio(top: list[float], bottom: list[float]) -> float:
    return statistics.median(t / b for t, b in zip(top, bottom))


def run_case(
    net: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    steps: int,
    repeats: int,
    torchattacks,
    clock: str = "cpu",
    seconds: float = 0.0,
) -> dict:
    """
    Time the floor, one forward pass and every attack (and torchattacks' PGD, when given) on one batch: a floor, then
    rounds of ``forward, then each attack followed by a floor`` (the attacks in an order rotated each round), at
    least ``repeats`` rounds and until the case has run ``seconds``; each attack's ratio over its floor in each round
    (the mean of the floors just before and after it, plus its extra forward passes), the median over the rounds.
    """
    target = labels[:, 0].long()  # (B, H, W) for nn.CrossEntropyLoss / F.cross_entropy
    table = _attacks()
    attacks = {name: make(steps) for name, (make, _) in table.items()}
    passes = {name: floor(steps) for name, (_, floor) in table.items()}
    if torchattacks is not None:
        theirs = torchattacks.PGD(net, eps=EPS_LEVELS / 255, alpha=ALPHA_LEVELS / 255, steps=steps, random_start=False)
        theirs.set_model_training_mode(model_training=False, batchnorm_training=False, dropout_training=False)
        attacks["torchattacks"] = lambda net_, images_, labels_: theirs(images_, target)
        passes["torchattacks"] = (steps, 0)

    # warm-up, untimed: every method at one step (first-call costs: allocator, oneDNN primitives)
    floor_passes(net, images, target, 1)
    forward_pass(net, images)
    for name, (make, _) in table.items():
        make(1)(net, images, labels)
    if torchattacks is not None:
        attacks["torchattacks"](net, images, labels)

    names = list(attacks)
    times = {c: {n: [] for n in ["floor", "forward", *names]} for c in CLOCKS}
    floors = {c: {n: [] for n in names} for c in CLOCKS}  # per attack and round: the floor it is measured against
    outputs = {}

    def record(name: str, fn: Callable[[], object]) -> object:
        wall, cpu, out = _timed(fn)
        times["wall"][name].append(wall)
        times["cpu"][name].append(cpu)
        return out

    start = time.perf_counter()
    record("floor", lambda: floor_passes(net, images, target, steps))
    round_ = 0
    while round_ < repeats or time.perf_counter() - start < seconds:
        record("forward", lambda: forward_pass(net, images))
        for name in names[round_ % len(names) :] + names[: round_ % len(names)]:
            outputs[name] = record(name, lambda name=name: attacks[name](net, images, labels))
            record("floor", lambda: floor_passes(net, images, target, steps))
            full, extra = passes[name]
            for c in CLOCKS:
                mean = (times[c]["floor"][-2] + times[c]["floor"][-1]) / 2
                floors[c][name].append(mean * full / steps + extra * times[c]["forward"][-1])
        round_ += 1

    other = "wall" if clock == "cpu" else "cpu"
    res: dict = {"steps": steps, "rounds": round_, "clock": clock, "times_s": times, "floor_s": floors}
    res["floor_passes"] = passes
    res["settings"] = {n: _plain(a.settings()) for n, a in attacks.items() if hasattr(a, "settings")}
    res["over_floor"], res["over_floor_other_clock"], res["over_floor_best"], res["target_pass"] = {}, {}, {}, {}
    for name in names:
        res["over_floor"][name] = _median_ratio(times[clock][name], floors[clock][name])
        res["over_floor_other_clock"][name] = _median_ratio(times[other][name], floors[other][name])
        res["over_floor_best"][name] = min(times[clock][name]) / min(floors[clock][name])
        if name in table:  # torchattacks' time is recorded, not held to our target
            res["target_pass"][name] = res["over_floor"][name] <= FLOOR_TARGET
    if torchattacks is not None:
        diff = (outputs["pgd"] - outputs["torchattacks"]).abs()
        res["max_abs_diff"] = float(diff.max())
        res["num_diff_values_gt_1e-5"] = int((diff > DIFF_TARGET).sum())
        res["diff_target_pass"] = res["max_abs_diff"] <= DIFF_TARGET
        res["pgd_over_torchattacks"] = _median_ratio(times[clock]["pgd"], times[clock]["torchattacks"])
    eps = EPS_LEVELS / 255
    linf = float((outputs["pgd"] - images).abs().max())
    res["pgd_in_ball"] = linf <= eps + 1e-6 and float(outputs["pgd"].min()) >= 0 and float(outputs["pgd"].max()) <= 1
    return res


def _plain(settings: dict) -> dict:
    plain = (bool, int, float, str, tuple, type(None))
    return {k: v if isinstance(v, plain) else repr(v) for k, v in settings.items()}


def run_sweep_case(
    net: nn.Module, images: torch.Tensor, labels: torch.Tensor, repeats: int, clock: str = "cpu"
) -> dict:
    """Time one targeted I-FGSM run per budget of the NLCEN paper's 18 against the shared sweep, interleaved, on
    ``clock``."""
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
            wall, cpu, out = _timed(methods[name])
            elapsed = cpu if clock == "cpu" else wall
            if round_ == 0:
                outputs[name] = out
            else:
                times[name].append(elapsed)
    diff = max(float((outputs["shared"][e] - outputs["per_budget"][e]).abs().max()) for e in NLCEN_BUDGETS)
    res = {
        "budgets": list(NLCEN_BUDGETS),
        "clock": clock,
        "times_s": times,
        "best_s": {k: min(v) for k, v in times.items()},
    }
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


def _shapes(sizes: list[int], batches: list[int]) -> list[tuple[int, int]]:
    """``(size, batch)`` pairs: the lists zipped, a single value repeated."""
    if len(batches) == 1:
        batches = batches * len(sizes)
    if len(sizes) == 1:
        sizes = sizes * len(batches)
    if len(sizes) != len(batches):
        raise SystemExit(f"--size and --batch must have one value or the same number, got {sizes} and {batches}")
    return list(zip(sizes, batches))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, nargs="+", default=[128, 224], help="side lengths of the square images")
    parser.add_argument("--batch", type=int, nargs="+", default=[4, 8], help="batch sizes, one per --size")
    parser.add_argument("--steps", type=int, nargs="+", default=[10], help="attack step counts")
    parser.add_argument("--networks", nargs="+", choices=NETWORKS, default=list(NETWORKS))
    parser.add_argument("--repeats", type=int, default=3, help="least timed rounds per case, after a warm-up round")
    parser.add_argument(
        "--seconds", type=float, default=120.0, help="more rounds until a case has run this long (wall clock)"
    )
    parser.add_argument("--clock", choices=CLOCKS, default="cpu", help="the clock the ratios and targets use")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random weights and the synthetic batch")
    parser.add_argument(
        "--checkpoint", action="append", default=[], metavar="NETWORK=PATH", help="state dict instead of random"
    )
    parser.add_argument("--no-torchattacks", action="store_true", help="skip the torchattacks comparison")
    parser.add_argument("--sweep", action="store_true", help="the 18-budget shared sweep case, at the first shape")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    args = parser.parse_args(argv)
    if args.repeats < 1 or min(args.batch) < 1 or min(args.size) < 1 or min(args.steps) < 1:
        raise SystemExit("--batch, --size, --steps and --repeats must be >= 1")
    shapes = _shapes(args.size, args.batch)
    checkpoints = _parse_checkpoints(args.checkpoint)
    if args.threads:
        torch.set_num_threads(args.threads)

    torchattacks = None if args.no_torchattacks else _import_torchattacks()
    print(
        f"L-inf eps={EPS_LEVELS}/255 (PGD, SegPGD, CosPGD: alpha={ALPHA_LEVELS}/255, no random start); shapes "
        f"{', '.join(f'{s} x {s} batch {b}' for s, b in shapes)}; torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads; median over at least {args.repeats} rounds and {args.seconds:g} s per "
        f"case, {args.clock} clock",
        flush=True,
    )

    results, sweeps = [], []
    for name in args.networks:
        net = build_network(name, args.seed, checkpoints.get(name))
        for size, batch in shapes:
            images, labels = make_batch(batch, size, args.seed)
            for steps in args.steps:
                res = {"network": name, "size": size, "batch": batch}
                res["weights"] = checkpoints.get(name, f"random (seed {args.seed})")
                res.update(run_case(net, images, labels, steps, args.repeats, torchattacks, args.clock, args.seconds))
                results.append(res)
                cells = ", ".join(f"{n} {r:.3f}" for n, r in res["over_floor"].items())
                floor = statistics.median(res["times_s"][args.clock]["floor"])
                print(
                    f"  {name:6s} {size} x {size} batch {batch}, {steps} steps, {res['rounds']} rounds: floor "
                    f"{floor:.3f} s; {cells}",
                    flush=True,
                )
        if args.sweep:
            size, batch = shapes[0]
            images, labels = make_batch(batch, size, args.seed)
            sweep = {
                "network": name,
                "size": size,
                "batch": batch,
                **run_sweep_case(net, images, labels, args.repeats, args.clock),
            }
            sweeps.append(sweep)
            print(
                f"  {name:6s} 18-budget sweep: per budget {sweep['best_s']['per_budget']:.3f} s, shared "
                f"{sweep['best_s']['shared']:.3f} s ({sweep['passes']['shared']} of {sweep['passes']['per_budget']} "
                f"passes), max diff {sweep['max_abs_diff']:.3g}",
                flush=True,
            )
        del net

    names = list(results[0]["over_floor"])
    other = "wall" if args.clock == "cpu" else "cpu"
    header = f"{'network':>7} {'shape':>13} {'steps':>5} {'rounds':>6} {'floor s':>8} " + " ".join(
        f"{n:>14}" for n in names
    )
    print(
        f"\nattack / floor, median over rounds of the ratio within a round, {args.clock} clock ({other} clock in "
        f"brackets); target <= {FLOOR_TARGET}\n{header}\n{'-' * len(header)}"
    )
    for r in results:
        cells = " ".join(
            f"{r['over_floor'][n]:>6.3f} ({r['over_floor_other_clock'][n]:.3f})"
            + ("!" if not r["target_pass"].get(n, True) else "")
            for n in names
        )
        shape = f"{r['size']}x{r['size']} b{r['batch']}"
        floor = statistics.median(r["times_s"][args.clock]["floor"])
        print(f"{r['network']:>7} {shape:>13} {r['steps']:>5} {r['rounds']:>6} {floor:>8.3f} {cells}")
    floor_pass = all(all(r["target_pass"].values()) for r in results)
    print(f"\nevery attack / floor <= {FLOOR_TARGET}: {'PASS' if floor_pass else 'FAIL (marked !)'}")
    has_ta = torchattacks is not None
    diff_pass = all(r["diff_target_pass"] for r in results) if has_ta else None
    if has_ta:
        print(f"max |pgd - torchattacks| <= {DIFF_TARGET:g}: {'PASS' if diff_pass else 'FAIL'}")
    else:
        print("torchattacks comparison: SKIPPED (not importable or --no-torchattacks)")
    for s in sweeps:
        print(
            f"  {s['network']:>7} sweep: shared / per budget {s['shared_over_per_budget']:.3f} (target <= "
            f"{SWEEP_TARGET}), max |diff| {s['max_abs_diff']:.3g} (target <= {SWEEP_DIFF_TARGET:g})"
        )
    sweep_pass = all(s["sweep_target_pass"] and s["sweep_diff_target_pass"] for s in sweeps) if sweeps else None

    report = {
        "benchmark": (
            "monai_ext.attacks PGD, SegPGD, CosPGD, APGD, APGD with radius reduction and the SEA preset vs the floor of plain forward+backward passes, PGD vs "
            "torchattacks.PGD, shared_sweep vs one run per budget over the NLCEN paper's 18 budgets"
        ),
        "config": {
            "shapes": [{"size": s, "batch": b} for s, b in shapes],
            "steps": args.steps,
            "networks": args.networks,
            "repeats": args.repeats,
            "seconds": args.seconds,
            "clock": args.clock,
            "seed": args.seed,
            "checkpoints": checkpoints,
            "eps": f"{EPS_LEVELS}/255",
            "alpha": f"{ALPHA_LEVELS}/255",
            "norm": "linf",
            "sweep": args.sweep,
        },
        "machine": machine_info(),
        "torchattacks": getattr(torchattacks, "__version__", None) if has_ta else None,
        "time_method": (
            "one process; per case one untimed warm-up round (every method at one step), a floor, then rounds of one "
            "forward pass and each attack followed by a floor (the attacks' order rotated each round), at least "
            "`repeats` rounds and until the case has run `seconds`; every call timed on the wall clock and on the "
            "process's CPU time; an attack's ratio in a round is its time over its floor there (the mean of the floors "
            "just before and after it, plus the extra forward passes of APGD and SEA), reported as the median over the rounds on "
            "`clock` (the target), with the other clock's median and the ratio of the best times"
        ),
        "results": results,
        "sweeps": sweeps,
        "targets": {
            "every_attack_over_floor_le_1.10": "PASS" if floor_pass else "FAIL",
            "max_abs_diff_le_1e-5": ("PASS" if diff_pass else "FAIL") if has_ta else "SKIPPED",
            "shared_sweep_over_per_budget_le_0.30_and_diff_le_1e-6": (
                "SKIPPED" if sweep_pass is None else "PASS" if sweep_pass else "FAIL"
            ),
        },
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    write_json(args.output, report)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
