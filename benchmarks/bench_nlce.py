"""Benchmark the NLCE non-local block against a naive N x N implementation (forward + backward).

The project's :class:`monai_ext.networks.blocks.NonLocalBlock` computes eq. (1)-(2) of the NLCE paper with
``scaled_dot_product_attention`` (fused, memory linear in N = H x W); the naive version uses the same weights
but materialises the N x N affinity matrix and its softmax. Each (implementation, size) case runs in a fresh
subprocess, so its peak memory is its own: peak RSS growth = ``ru_maxrss`` after one forward + backward minus
the process RSS just before it (model, input and kernels already loaded by a small warm-up). Time is the
best (and the median) of a few forward + backward passes after that first pass; the ratios and the target
check use the best time, the least disturbed by other load on the machine. At sizes >= 128 both
implementations get the same, smaller number of repeats (the naive pass takes seconds and GBs).

Usage::

    python benchmarks/bench_nlce.py                      # 32, 64, 128; writes benchmarks/results/bench_nlce.json
    python benchmarks/bench_nlce.py --sizes 32 64 --repeats 3 --output /tmp/bench.json
"""

from __future__ import annotations

import argparse
import gc
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

from common import machine_info

from monai_ext.utils import write_json

DEFAULT_OUTPUT = Path(__file__).resolve().parent / "results" / "bench_nlce.json"
TARGET_SIZE = 128


def _rss_kb() -> int:
    """Current resident set size of this process in kB (Linux /proc)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("VmRSS not found in /proc/self/status")


def _maxrss_kb() -> int:
    """Peak resident set size of this process in kB (ru_maxrss is in kB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak // 1024 if sys.platform == "darwin" else peak


def naive_forward(block, x):
    """NonLocalBlock forward with the explicit (B, N, N) affinity matrix and softmax, same weights."""
    import torch

    b, spatial = x.shape[0], x.shape[2:]
    theta = block.theta(x).flatten(2).transpose(1, 2)  # (B, N, C')
    phi = block.phi(x).flatten(2)  # (B, C', N)
    g = block.g(x).flatten(2).transpose(1, 2)  # (B, N, C')
    attn = torch.softmax(torch.bmm(theta, phi), dim=-1)  # (B, N, N), eq. (1)-(2)
    y = torch.bmm(attn, g).transpose(1, 2).reshape(b, block.inter_channels, *spatial)
    return block.w_z(y) + x


def run_case(impl: str, size: int, batch: int, channels: int, repeats: int) -> dict:
    """Measure one (implementation, size) case in this process; returns a result dict."""
    import torch

    from monai_ext.networks.blocks import NonLocalBlock

    torch.manual_seed(0)
    block = NonLocalBlock(2, channels).train()
    forward = block if impl == "project" else (lambda t: naive_forward(block, t))

    def step(t):
        forward(t).sum().backward()

    step(torch.randn(batch, channels, 8, 8))  # load kernels, thread pools, autograd
    block.zero_grad(set_to_none=False)
    x = torch.randn(batch, channels, size, size)
    gc.collect()
    baseline_kb, maxrss_before_kb = _rss_kb(), _maxrss_kb()
    step(x)  # measured for memory; also the timing warm-up
    peak_kb = _maxrss_kb()

    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        step(x)
        times.append(time.perf_counter() - t0)
    return {
        "impl": impl,
        "size": size,
        "batch": batch,
        "channels": channels,
        "inter_channels": block.inter_channels,
        "repeats": repeats,
        "time_median_s": statistics.median(times),
        "time_best_s": min(times),
        "times_s": times,
        "peak_mb": max(peak_kb - baseline_kb, 0) / 1024,
        "baseline_rss_mb": baseline_kb / 1024,
        "maxrss_before_mb": maxrss_before_kb / 1024,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }


def run_subprocess(impl: str, size: int, batch: int, channels: int, repeats: int) -> dict:
    """Run one case in a fresh interpreter (`sys.executable` re-invoking this script)."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", impl, "--sizes", str(size)]
    cmd += ["--batch", str(batch), "--channels", str(channels), "--repeats", str(repeats)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, cwd=Path(__file__).resolve().parents[1])
    if proc.returncode != 0:
        raise RuntimeError(f"case {impl} {size}x{size} failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[32, 64, 128], help="feature map side lengths")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--channels", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5, help="timed passes after the first one")
    parser.add_argument("--large-repeats", type=int, default=2, help="timed passes (both impls) at size >= 128")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    parser.add_argument("--child", choices=["project", "naive"], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child:  # worker: one case, one JSON line on stdout
        print(json.dumps(run_case(args.child, args.sizes[0], args.batch, args.channels, args.repeats)))
        return 0

    results = []
    for size in args.sizes:
        for impl in ("project", "naive"):
            repeats = args.large_repeats if size >= 128 else args.repeats
            res = run_subprocess(impl, size, args.batch, args.channels, repeats)
            print(f"  {impl:8s} {size}x{size}: {res['time_best_s']:.3f} s, {res['peak_mb']:.1f} MB", flush=True)
            results.append(res)

    by = {(r["impl"], r["size"]): r for r in results}
    rows, ratios = [], {}
    header = f"{'size':>9} {'impl':>8} {'fwd+bwd best s':>15} {'median s':>9} {'peak MB':>9} {'time ratio':>11} {'mem ratio':>10}"
    print(f"\nNonLocalBlock forward + backward, batch {args.batch}, channels {args.channels}; ratios = project / naive")
    print(header)
    print("-" * len(header))
    for size in args.sizes:
        p, n = by["project", size], by["naive", size]
        t_ratio = p["time_best_s"] / n["time_best_s"]
        m_ratio = p["peak_mb"] / n["peak_mb"] if n["peak_mb"] > 0 else float("nan")
        ratios[size] = {"time_project_over_naive": t_ratio, "peak_mb_project_over_naive": m_ratio}
        for r in (p, n):
            extra = f"{t_ratio:>11.3f} {m_ratio:>10.4f}" if r is p else ""
            row = f"{size:>4}x{size:<4} {r['impl']:>8} {r['time_best_s']:>15.3f} {r['time_median_s']:>9.3f} {r['peak_mb']:>9.1f} {extra}"
            print(row)
            rows.append(row)

    target = None
    if TARGET_SIZE in args.sizes:
        p, n = by["project", TARGET_SIZE], by["naive", TARGET_SIZE]
        mem_ok = p["peak_mb"] <= n["peak_mb"] / 10
        time_ok = p["time_best_s"] <= n["time_best_s"]
        target = {"size": TARGET_SIZE, "memory_le_tenth": mem_ok, "time_le_naive": time_ok, "pass": mem_ok and time_ok}
        print(
            f"\ntarget at {TARGET_SIZE}x{TARGET_SIZE} (project peak <= naive/10 and time <= naive): "
            f"{'PASS' if target['pass'] else 'FAIL'} (memory {'ok' if mem_ok else 'no'}, time {'ok' if time_ok else 'no'})"
        )

    args.output.parent.mkdir(parents=True, exist_ok=True)
    report = {
        "benchmark": "NonLocalBlock (NLCE eq. 1-2) forward+backward: SDPA (project) vs explicit N x N (naive)",
        "config": {
            "sizes": args.sizes,
            "batch": args.batch,
            "channels": args.channels,
            "repeats": args.repeats,
            "large_repeats": args.large_repeats,
        },
        "machine": machine_info(),
        "memory_method": "fresh subprocess per case; ru_maxrss after first fwd+bwd minus VmRSS just before it",
        "time_method": "best (ratios, target) and median of timed fwd+bwd passes after the first pass",
        "results": results,
        "ratios": {str(k): v for k, v in ratios.items()},
        "target": target,
    }
    write_json(args.output, report)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
