"""Helpers the data stages share: an ordered, bounded parallel map and an optional progress bar.

`ordered_map` differs from `Pool.imap` in one way that matters for corpora larger than RAM: imap's
feeder thread reads the whole input iterable ahead of the workers, while this keeps at most
`max_in_flight` tasks submitted, so reading, working and writing proceed in step.
"""

from __future__ import annotations

import multiprocessing
from collections import deque
from typing import Any, Callable, Iterable, Iterator


def _context():
    # fork starts workers in milliseconds and shares the parent's read-only state (eval n-grams, tokenizer).
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("fork" if "fork" in methods else None)


def ordered_map(func: Callable[[Any], Any], items: Iterable[Any], workers: int, *,
                initializer: Callable[..., None] | None = None, initargs: tuple = (),
                max_in_flight: int | None = None) -> Iterator[Any]:
    """func(item) for each item, in input order, on `workers` processes (in this process when workers <= 1)."""
    if workers <= 1:
        if initializer is not None:
            initializer(*initargs)
        for item in items:
            yield func(item)
        return
    max_in_flight = max_in_flight or 4 * workers
    with _context().Pool(workers, initializer, initargs) as pool:
        pending: deque = deque()
        for item in items:
            pending.append(pool.apply_async(func, (item,)))
            if len(pending) >= max_in_flight:
                yield pending.popleft().get()
        while pending:
            yield pending.popleft().get()


class Progress:
    """A tqdm bar when tqdm is installed (the `data` extra), else silent."""

    def __init__(self, desc: str, unit: str = "it", total: int | None = None, unit_scale: bool = False,
                 enabled: bool = True):
        self._bar = None
        if enabled:
            try:
                from tqdm import tqdm
            except ImportError:
                return
            self._bar = tqdm(desc=desc, unit=unit, total=total, unit_scale=unit_scale, dynamic_ncols=True)

    def update(self, n: int = 1, **postfix: Any) -> None:
        if self._bar is not None:
            self._bar.update(n)
            if postfix:
                self._bar.set_postfix(postfix, refresh=False)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
