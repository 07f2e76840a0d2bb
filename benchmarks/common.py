"""What the benchmarks record about the machine they ran on."""

from __future__ import annotations

import os
import platform

import torch


def machine_info() -> dict:
    """Platform, Python and torch versions, torch's thread count and the CPUs this process may use."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpus": cpus,
    }
