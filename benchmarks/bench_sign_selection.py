"""Benchmark ``monai_ext.attacks.SignSelectionFGSM``: images per second of the exhaustive and the greedy search, and the
speed-up of the batched exhaustive search over a one-candidate-at-a-time loop.

For each number of classes ``C`` (2, 4, 6 by default), on MONAI's U-Net with ``C`` output channels (eval mode, random
weights from a fixed seed) and one synthetic batch (4 x 1 x 64 x 64 by default):

- **exhaustive**: ``SignSelectionFGSM(search="exhaustive", chunk_size=...)`` on the batch: ``C`` input gradients, then
  the ``3^C`` candidates of every image in batched forward passes of ``chunk_size`` candidates;
- **greedy**: ``search="greedy"``: ``1 + 2 C`` candidates per image;
- **loop**: the same exhaustive search with one forward pass per candidate (``chunk_size=1``), the Python loop the
  issue asks the batched search to beat. The loop must choose the same signs.

Two speed-ups of batched over loop are reported: of the **search** (``exhaustive_signs`` on the same precomputed
directions: the ``3^C`` candidate evaluations alone, where batching applies; target: at least 3x at ``C = 4``) and of
the **whole attack** (the ``C`` input gradients, the same for both, included).

Images per second are ``batch / best time``. Timing: per ``C``, one untimed warm-up round, then ``repeats`` rounds with
the order of the three methods rotated from round to round; the best time of each is used (the least disturbed by
other load), the median is reported too.

Usage::

    python benchmarks/bench_sign_selection.py            # C = 2 4 6, batch 4, 64 x 64; writes results JSON
    python benchmarks/bench_sign_selection.py --classes 2 4 --batch 2 --size 32 --repeats 1 --output /tmp/b.json
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import torch
import torch.nn.functional as F
from common import machine_info
from monai.networks.nets import UNet

from monai_ext.attacks import AttackObjective, SignSelectionFGSM
from monai_ext.attacks.sign_selection import exhaustive_signs
from monai_ext.utils import write_json

DEFAULT_OUTPUT = Path(__file__).resolve().parent / "results" / "bench_sign_selection.json"
SPEEDUP_TARGET = 3.0  # batched exhaustive over the one-candidate loop, at C = 4
EPS_LEVELS = 2.55  # 1% of the range


def build_network(num_classes: int, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    net = UNet(2, 1, num_classes, channels=(16, 32, 64, 128), strides=(2, 2, 2), num_res_units=1)
    return net.eval()


def make_batch(batch: int, size: int, num_classes: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Smooth images in ``[0, 1]`` and labels by intensity bands: ``C`` classes."""
    gen = torch.Generator().manual_seed(seed)
    noise = torch.rand(batch, 1, size, size, generator=gen)
    images = F.avg_pool2d(noise, kernel_size=9, stride=1, padding=4, count_include_pad=False)
    images = (images - images.amin()) / (images.amax() - images.amin())
    labels = (images * num_classes).clamp(max=num_classes - 1).floor()
    return images.contiguous(), labels


def run_case(num_classes: int, args: argparse.Namespace) -> dict:
    net = build_network(num_classes, args.seed)
    images, labels = make_batch(args.batch, args.size, num_classes, args.seed)
    attacks = {
        "exhaustive": SignSelectionFGSM(EPS_LEVELS, chunk_size=args.chunk_size),
        "greedy": SignSelectionFGSM(EPS_LEVELS, search="greedy", chunk_size=args.chunk_size),
        "loop": SignSelectionFGSM(EPS_LEVELS, chunk_size=1),
    }
    directions = attacks["exhaustive"].directions(AttackObjective(net, images, labels), images)
    searches = {
        "search_batched": lambda: exhaustive_signs(net, images, labels, directions, (0.0, 1.0), "ce", args.chunk_size),
        "search_loop": lambda: exhaustive_signs(net, images, labels, directions, (0.0, 1.0), "ce", 1),
    }
    methods = {**{k: lambda a=a: a.with_record(net, images, labels)[1] for k, a in attacks.items()}, **searches}
    names = list(methods)
    times: dict[str, list[float]] = {name: [] for name in names}
    signs: dict[str, list] = {}
    for round_ in range(args.repeats + 1):  # round 0: untimed warm-up
        for name in names[round_ % len(names) :] + names[: round_ % len(names)]:
            start = time.perf_counter()
            with torch.no_grad() if name.startswith("search") else nullcontext():
                out = methods[name]()
            elapsed = time.perf_counter() - start
            if round_ == 0:
                signs[name] = out[0].tolist() if name.startswith("search") else [r["signs"] for r in out]
            else:
                times[name].append(elapsed)
    best = {k: min(v) for k, v in times.items()}
    return {
        "classes": num_classes,
        "candidates_per_image": {"exhaustive": 3**num_classes, "greedy": 1 + 2 * num_classes},
        "times_s": times,
        "best_s": best,
        "median_s": {k: statistics.median(v) for k, v in times.items()},
        "images_per_s": {k: args.batch / best[k] for k in attacks},
        "search_speedup_batched_over_loop": best["search_loop"] / best["search_batched"],
        "attack_speedup_batched_over_loop": best["loop"] / best["exhaustive"],
        "loop_same_signs": signs["loop"] == signs["exhaustive"] == signs["search_loop"] == signs["search_batched"],
        "greedy_same_signs_fraction": sum(g == e for g, e in zip(signs["greedy"], signs["exhaustive"])) / args.batch,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--classes", type=int, nargs="+", default=[2, 4, 6])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--size", type=int, default=64, help="side length of the square images")
    parser.add_argument("--chunk_size", type=int, default=81, help="candidates per forward pass (batched searches)")
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds after one warm-up round")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    args = parser.parse_args(argv)
    if min(args.classes) < 1 or args.batch < 1 or args.size < 8 or args.repeats < 1 or args.chunk_size < 1:
        raise SystemExit("--classes, --batch, --repeats, --chunk_size must be >= 1 and --size >= 8")
    if args.threads:
        torch.set_num_threads(args.threads)
    print(
        f"SignSelectionFGSM eps={EPS_LEVELS}/255, U-Net 16-32-64-128; batch {args.batch} x 1 x {args.size} x "
        f"{args.size}; chunk {args.chunk_size}; torch {torch.__version__}, {torch.get_num_threads()} threads; best of "
        f"{args.repeats} rounds",
        flush=True,
    )
    results = []
    for num_classes in args.classes:
        results.append(run_case(num_classes, args))
        best = results[-1]["best_s"]
        print(f"  C = {num_classes}: " + ", ".join(f"{k} {v:.3f} s" for k, v in best.items()), flush=True)

    header = (
        f"{'C':>2} {'3^C':>5} {'exhaustive img/s':>16} {'greedy img/s':>12} {'loop img/s':>10} "
        f"{'search batched/loop':>19} {'attack batched/loop':>19}"
    )
    print(f"\n{header}\n{'-' * len(header)}")
    for r in results:
        ips = r["images_per_s"]
        print(
            f"{r['classes']:>2} {3 ** r['classes']:>5} {ips['exhaustive']:>16.3f} {ips['greedy']:>12.3f} "
            f"{ips['loop']:>10.3f} {r['search_speedup_batched_over_loop']:>19.2f} "
            f"{r['attack_speedup_batched_over_loop']:>19.2f}"
        )
    at_four = [r for r in results if r["classes"] == 4]
    verdict = "SKIPPED (C = 4 not run)"
    if at_four:
        verdict = "PASS" if at_four[0]["search_speedup_batched_over_loop"] >= SPEEDUP_TARGET else "FAIL"
    print(f"\nbatched exhaustive search / one-candidate loop >= {SPEEDUP_TARGET:g}x at C = 4: {verdict}")
    print(f"loop chose the exhaustive signs: {all(r['loop_same_signs'] for r in results)}")

    report = {
        "benchmark": "monai_ext.attacks.SignSelectionFGSM: exhaustive (batched) and greedy search vs one-candidate loop",
        "config": {k: v for k, v in vars(args).items() if k != "output"},  # the output path is machine-specific
        "network": "monai UNet channels (16, 32, 64, 128), strides (2, 2, 2), num_res_units 1, random weights",
        "machine": machine_info(),
        "time_method": (
            "one process; per C one untimed warm-up round then `repeats` rounds, the method order rotated each round; "
            "images per second and speed-up from the best times (medians also given)"
        ),
        "results": results,
        "targets": {"search_speedup_ge_3_at_C4": verdict},
    }
    write_json(args.output, report)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
