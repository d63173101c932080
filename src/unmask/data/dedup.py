"""Exact and near-duplicate detection for the corpus builder.

Exact: two files are duplicates when their text is equal after collapsing every run of whitespace
(so re-indented or re-wrapped copies count), compared by a 128-bit blake2b key.

Near: MinHash over the set of lexical-token 5-gram shingles estimates the Jaccard similarity of two
files; locality-sensitive hashing (LSH) cuts each signature into `bands` bands of `rows` values and
makes files that agree on any whole band candidates; a candidate is a near duplicate when its full
signatures agree on at least `threshold` of their values (the MinHash estimate of Jaccard). The
band layout is chosen for the threshold by minimising false positives plus false negatives of the
S-curve 1 - (1 - s^rows)^bands (false negatives weighted 3:1, since a full-signature check follows).

Workers compute signatures (pure functions); the main process owns the indexes, the only state of
a corpus build that grows with the corpus (about 0.6 kB per kept file).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from .ngrams import mix64, ngram_hashes

SHINGLE_TOKENS = 5


def exact_key(text: str) -> bytes:
    """128-bit key of the whitespace-normalised text."""
    normalised = " ".join(text.split())
    return hashlib.blake2b(normalised.encode("utf-8"), digest_size=16).digest()


class MinHasher:
    """num_perm hash functions h_i(x) = top 32 bits of (a_i * x + b_i) mod 2^64 (multiply-shift)."""

    def __init__(self, num_perm: int = 128, seed: int = 0):
        rng = np.random.default_rng([seed, 0x6D696E68])
        self.num_perm = num_perm
        self.a = rng.integers(0, 2**64, size=(num_perm, 1), dtype=np.uint64) | np.uint64(1)
        self.b = rng.integers(0, 2**64, size=(num_perm, 1), dtype=np.uint64)

    def signature(self, token_ids: np.ndarray) -> np.ndarray:
        """uint32 [num_perm] MinHash of the set of 5-gram shingles of `token_ids` (fewer tokens: one shingle)."""
        shingles = ngram_hashes(token_ids, min(SHINGLE_TOKENS, len(token_ids))) if len(token_ids) else token_ids
        return self.signature_of_set(shingles)

    def signature_of_set(self, hashes: np.ndarray, chunk: int = 4096) -> np.ndarray:
        """uint32 [num_perm] MinHash of a set of uint64 element hashes (repeats do not matter)."""
        shingles = np.unique(hashes)
        sig = np.full(self.num_perm, np.iinfo(np.uint32).max, dtype=np.uint64)
        with np.errstate(over="ignore"):
            for start in range(0, len(shingles), chunk):
                x = shingles[None, start : start + chunk]
                values = (self.a * x + self.b) >> np.uint64(32)
                np.minimum(sig, values.min(axis=1), out=sig)
        return sig.astype(np.uint32)


def lsh_layout(threshold: float, num_perm: int) -> tuple[int, int]:
    """(bands, rows) with bands * rows <= num_perm whose S-curve best separates around `threshold`."""
    s = np.linspace(0.0, 1.0, 1001)
    ds = s[1] - s[0]
    below, above = s <= threshold, s > threshold
    best, best_err = (1, num_perm), float("inf")
    for bands in range(1, num_perm + 1):
        for rows in range(1, num_perm // bands + 1):
            p = 1.0 - (1.0 - s**rows) ** bands
            # Missed duplicates cost more than extra candidates, which the full-signature check rejects.
            err = (0.25 * p[below].sum() + 0.75 * (1.0 - p[above]).sum()) * ds
            if err < best_err:
                best, best_err = (bands, rows), err
    return best


@dataclass
class NearMatch:
    """The kept file a new file nearly duplicates, and their estimated Jaccard similarity."""

    kept_id: int
    jaccard: float


class NearDupIndex:
    """Signatures of kept files plus LSH buckets; `check_and_add` keeps the first of each near-duplicate group."""

    def __init__(self, threshold: float = 0.85, num_perm: int = 128):
        self.threshold = threshold
        self.num_perm = num_perm
        self.bands, self.rows = lsh_layout(threshold, num_perm)
        self.buckets: list[dict[int, int | list[int]]] = [{} for _ in range(self.bands)]
        self.signatures = np.empty((1024, num_perm), dtype=np.uint32)
        self.size = 0
        weights = np.uint64(0x100000001B3) ** np.arange(self.rows, dtype=np.uint64)
        self._band_weights = weights.astype(np.uint64)

    def _band_keys(self, sig: np.ndarray) -> list[int]:
        bands = sig[: self.bands * self.rows].astype(np.uint64).reshape(self.bands, self.rows)
        with np.errstate(over="ignore"):
            keys = mix64((bands * self._band_weights).sum(axis=1, dtype=np.uint64))
        return keys.tolist()

    def check_and_add(self, sig: np.ndarray) -> NearMatch | None:
        """The best kept match at or above the threshold; otherwise add `sig` as a kept file and return None."""
        keys = self._band_keys(sig)
        candidates: set[int] = set()
        for table, key in zip(self.buckets, keys):
            hit = table.get(key)
            if hit is not None:
                candidates.update(hit if isinstance(hit, list) else (hit,))
        if candidates:
            ids = np.fromiter(candidates, dtype=np.int64, count=len(candidates))
            agree = (self.signatures[ids] == sig).mean(axis=1)
            best = int(agree.argmax())
            if agree[best] >= self.threshold:
                return NearMatch(int(ids[best]), float(agree[best]))
        self._add(sig, keys)
        return None

    def _add(self, sig: np.ndarray, keys: list[int]) -> None:
        if self.size == len(self.signatures):
            self.signatures = np.concatenate([self.signatures, np.empty_like(self.signatures)])
        new_id = self.size
        self.signatures[new_id] = sig
        self.size += 1
        for table, key in zip(self.buckets, keys):
            hit = table.get(key)
            if hit is None:
                table[key] = new_id
            elif isinstance(hit, list):
                hit.append(new_id)
            else:
                table[key] = [hit, new_id]
