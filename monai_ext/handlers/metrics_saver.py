"""MONAI's ``MetricsSaver`` with files that are whole or absent."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from ignite.engine import Engine
from monai.handlers import MetricsSaver

__all__ = ["AtomicMetricsSaver"]


class AtomicMetricsSaver(MetricsSaver):
    """
    MONAI's :py:class:`~monai.handlers.MetricsSaver` (same arguments, same files: ``metrics.csv``,
    ``<metric>_raw.csv``, ``<metric>_summary.csv``) whose files are written to a temporary folder inside ``save_dir``
    and then moved over the old ones one by one (``os.replace``): a run killed while writing leaves each file whole,
    the old one or the new one, never truncated.
    """

    def __call__(self, engine: Engine) -> None:
        final = Path(self.save_dir)
        final.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=".metrics-", dir=final) as tmp:
            self.save_dir = tmp
            try:
                super().__call__(engine)
            finally:
                self.save_dir = str(final)
            for name in sorted(os.listdir(tmp)):
                os.replace(os.path.join(tmp, name), final / name)
