"""``CacheDataset``: MONAI's cache dataset, whose caching errors end as a Python exception that names the item's files."""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from multiprocessing.pool import ThreadPool
from os import PathLike
from typing import Any

import monai.data
from monai.utils import optional_import

tqdm, has_tqdm = optional_import("tqdm", name="tqdm")

__all__ = ["CacheDataset", "item_files"]


def item_files(item: Any) -> list[str]:
    """The file paths of a datalist item (``{"image": path, "label": path}``, paths or lists of paths), in order."""
    values = item.values() if isinstance(item, Mapping) else [item]
    files: list[str] = []
    for value in values:
        if isinstance(value, (str, PathLike)):
            files.append(str(value))
        elif isinstance(value, Sequence) and not isinstance(value, bytes):
            files += [str(v) for v in value if isinstance(v, (str, PathLike))]
    return files


def _root_cause(error: BaseException) -> BaseException:
    """The first error of a chain (MONAI's ``Compose`` wraps a transform's error in ``RuntimeError``)."""
    while error.__cause__ is not None:
        error = error.__cause__
    return error


class CacheDataset(monai.data.CacheDataset):
    """
    MONAI's ``CacheDataset`` (same arguments), with two changes to what happens when an item fails to load or
    transform while the cache is filled:

    - the error names the item's files (``RuntimeError: dataset item 3 ('a3.png', 'a3_mask.png'): ValueError: ...``,
      chained to the original error);
    - the worker threads are stopped and joined before the error propagates. MONAI terminates its thread pool
      instead, so that the other threads may still be inside torch while the interpreter exits, which aborts the
      process with "terminate called without an active exception" and exit status 134 instead of a traceback and 1.

    In a config: ``{"_target_": "monai_ext.data.CacheDataset", "data": ..., "transform": ..., "num_workers": 2}``.
    """

    def _load_cache_item(self, idx: int) -> Any:
        try:
            return super()._load_cache_item(idx)
        except Exception as e:
            cause = _root_cause(e)
            files = ", ".join(map(repr, item_files(self.data[idx]))) or "no file names"
            raise RuntimeError(f"dataset item {idx} ({files}): {type(cause).__name__}: {cause}") from e

    def _fill_cache(self, indices: Sequence[int] | None = None) -> list:
        if self.cache_num <= 0:
            return []
        if indices is None:
            indices = list(range(self.cache_num))
        failed = threading.Event()

        def load(idx: int) -> Any:
            if failed.is_set():  # an item failed: skip the rest, so that the pool drains fast
                return None
            try:
                return self._load_cache_item(idx)
            except BaseException:
                failed.set()
                raise

        pool = ThreadPool(self.num_workers)
        try:
            items = pool.imap(load, indices)
            if self.progress and has_tqdm:
                items = tqdm(items, total=len(indices), desc="Loading dataset")
            return list(items)
        finally:
            pool.close()
            pool.join()
