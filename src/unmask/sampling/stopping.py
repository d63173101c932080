"""Where an answer ends: stop tokens (end-of-text and the like), stop strings, the token budget (host-side, on final text only).

A diffusion answer becomes final from left to right only in its committed prefix (the tokens before
the first still-masked position), so stop strings are searched there: a stop string seen in a draft
could still be separated by tokens revealed later. The answer text excludes the end-of-text token
and the stop string itself (as OpenAI's API does).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable


def cut_at(ids: list[int], stop_ids: Iterable[int]) -> tuple[list[int], bool]:
    """(ids before the first of `stop_ids`, whether one occurred)."""
    stops = set(stop_ids)
    for i, t in enumerate(ids):
        if t in stops:
            return ids[:i], True
    return ids, False


def find_stop(text: str, stops: tuple[str, ...], start: int = 0) -> int | None:
    """Index in `text` of the earliest stop string beginning at or after `start`, or None."""
    hits = [i for i in (text.find(s, start) for s in stops) if i >= 0]
    return min(hits) if hits else None


def partial_stop_length(text: str, stops: tuple[str, ...]) -> int:
    """Length of the longest suffix of `text` that is a proper prefix of a stop string (text to hold back)."""
    best = 0
    for s in stops:
        for n in range(min(len(s) - 1, len(text)), best, -1):
            if text.endswith(s[:n]):
                best = n
                break
    return best


def tokens_covering(ids: list[int], decode: Callable[[list[int]], str], num_chars: int) -> int:
    """The fewest leading tokens of `ids` whose decoded text has at least `num_chars` characters."""
    lo, hi = 0, len(ids)
    while lo < hi:
        mid = (lo + hi) // 2
        if len(decode(ids[:mid])) >= num_chars:
            hi = mid
        else:
            lo = mid + 1
    return lo


@dataclass
class StopScan:
    """Incremental stop-string search over a growing committed text."""

    stops: tuple[str, ...]
    scanned: int = 0  # characters of text already known to hold no stop string start

    def scan(self, text: str) -> int | None:
        if not self.stops:
            return None
        hit = find_stop(text, self.stops, max(0, self.scanned))
        if hit is None:
            # A stop string may begin in the last len(s) - 1 characters and end in text not yet final.
            self.scanned = max(self.scanned, len(text) - max(len(s) for s in self.stops) + 1)
        return hit
