"""Benchmark the ProtoSeg layer analysis: inference with all 18 BasicUNet layers analysed over plain inference.

Plain inference is the eval-mode forward pass of MONAI's ``BasicUNet`` without gradients (what
``SimpleInferer`` does in an evaluator). Analysed inference is the same forward pass with the hooks of
:class:`monai_ext.handlers.FeatureRecorderHandler` recording the 18 convolution outputs and the input, followed by
the per-batch work of the metric handlers of ``interpret.json``: ``SAScoreHandler`` (:class:`monai_ext.metrics.
SAScoreMetric` of the input and the 18 layers: prototypes, probability maps upsampled to the label's resolution,
SAMs and their Dice) and ``OutputDiceHandler`` (the output's Dice); the SAM images are off. A second analysed case
adds the unit analysis of the last layer (``SAScoreHandler(-1, per_unit=True)``: every channel scored).

Both run on the same batch in one process, back to back in each repeat, after a warm-up pass of each; the ratio is
the median over the repeats of (analysed time / plain time) within a repeat, which cancels slow changes of the load
of a shared machine; the ratios of the best and of the median times are reported too. Target: ratio <= 1.5.

Usage::

    python benchmarks/bench_protoseg.py                       # writes benchmarks/results/bench_protoseg.json
    python benchmarks/bench_protoseg.py --size 128 --batch 4 --features 16 16 32 64 128 16 --repeats 3
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from common import machine_info
from monai.metrics import DiceMetric
from monai.networks.nets import BasicUNet

from monai_ext.metrics import SAScoreMetric, binarize_prediction
from monai_ext.networks.utils import BASIC_UNET_LAYERS, INPUT_LAYER, FeatureRecorder
from monai_ext.utils import write_json

DEFAULT_OUTPUT = Path(__file__).resolve().parent / "results" / "bench_protoseg.json"
TARGET_RATIO = 1.5


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=256, help="image side length")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--in-channels", type=int, default=1)
    parser.add_argument("--features", type=int, nargs=6, default=[32, 32, 64, 128, 256, 32], help="BasicUNet features")
    parser.add_argument("--repeats", type=int, default=5, help="timed passes of each case after the warm-up")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own choice)")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    args = parser.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    net = BasicUNet(2, args.in_channels, 2, features=args.features, act="relu", norm="batch").eval()
    images = torch.rand(args.batch, args.in_channels, args.size, args.size)
    labels = torch.zeros(args.batch, 1, args.size, args.size)
    labels[..., args.size // 4 : 3 * args.size // 4, args.size // 3 : 2 * args.size // 3] = 1.0
    recorder = FeatureRecorder(net, [INPUT_LAYER, *BASIC_UNET_LAYERS])
    layer_sa, unit_sa = SAScoreMetric(), SAScoreMetric(per_unit=True)
    output_dice = DiceMetric(include_background=False, ignore_empty=False)

    def plain() -> None:
        with torch.no_grad():
            net(images)

    def analysed(units: bool) -> None:
        with torch.no_grad():
            pred = net(images)
        features, mask = recorder.pop(), binarize_prediction(pred)
        layer_sa(y_pred=features, y=labels, mask=mask)
        output_dice(y_pred=mask, y=labels)
        if units:
            unit_sa(y_pred=features[BASIC_UNET_LAYERS[-1]], y=labels, mask=mask)

    cases = {"plain": plain, "layers": lambda: analysed(False), "layers+units": lambda: analysed(True)}
    # the hooks record every forward pass: cleared before each case
    for fn in cases.values():  # warm-up
        recorder.clear()
        fn()
    times: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(args.repeats):
        for name, fn in cases.items():
            recorder.clear()
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)

    best = {name: min(t) for name, t in times.items()}
    median = {name: statistics.median(t) for name, t in times.items()}
    # paired: each repeat runs the cases back to back, so the ratio within a repeat cancels slow changes of load
    ratios = {
        name: {
            "paired_median": statistics.median(a / p for a, p in zip(times[name], times["plain"])),
            "best": best[name] / best["plain"],
            "median": median[name] / median["plain"],
        }
        for name in ("layers", "layers+units")
    }
    print(
        f"\nProtoSeg layer analysis, BasicUNet features {args.features}, batch {args.batch} x {args.in_channels} x "
        f"{args.size} x {args.size}, {args.repeats} timed passes per case"
    )
    header = f"{'case':>14} {'best s':>8} {'median s':>9} {'ratio (paired median)':>22} {'ratio (best)':>13}"
    print(header)
    print("-" * len(header))
    for name in cases:
        extra = f"{ratios[name]['paired_median']:>22.3f} {ratios[name]['best']:>13.3f}" if name in ratios else ""
        print(f"{name:>14} {best[name]:>8.3f} {median[name]:>9.3f} {extra}")
    passed = ratios["layers"]["paired_median"] <= TARGET_RATIO
    print(f"\ntarget: 18 layers (+ input) analysed / plain <= {TARGET_RATIO}: {'PASS' if passed else 'FAIL'}")

    args.output.parent.mkdir(parents=True, exist_ok=True)
    report = {
        "benchmark": "ProtoSeg: inference with the 18 BasicUNet layers (and the input) analysed / plain inference",
        "config": {
            "size": args.size,
            "batch": args.batch,
            "in_channels": args.in_channels,
            "features": args.features,
            "repeats": args.repeats,
            "threads": torch.get_num_threads(),
        },
        "machine": machine_info(),
        "time_method": "same batch, one process, cases back to back in each repeat after a warm-up; ratio: median "
        "over repeats of (analysed / plain) within a repeat (also: ratio of the best and of the median times)",
        "times_s": times,
        "best_s": best,
        "median_s": median,
        "ratios": ratios,
        "target": {"max_ratio": TARGET_RATIO, "pass": passed},
    }
    write_json(args.output, report)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
