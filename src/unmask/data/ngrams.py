"""Tokens and hashed token n-grams: the fingerprints of near-dedup and decontamination.

A lexical token is an identifier/number run (`\\w+`) or a single other non-space character, so the
fingerprint ignores whitespace and formatting: `x+1` and `x + 1` give the same tokens. Word tokens
are the `\\w+` runs alone (punctuation dropped too), for matching against evaluation sets. Tokens are
hashed to uint64 once per distinct token (blake2b, so the hash is the same in every process, unlike
Python's salted `hash`), and n-grams are combined with a polynomial over uint64 plus a final mixer,
all vectorised in numpy so a 100 kB file costs a few milliseconds.
"""

from __future__ import annotations

import hashlib
import re

import numpy as np

TOKEN_RE = re.compile(r"\w+|[^\w\s]")
WORD_RE = re.compile(r"\w+")

_POLY = np.uint64(0x9E3779B97F4A7C15)  # odd multiplier of the n-gram polynomial


def lexical_tokens(text: str) -> list[str]:
    """Identifier/number runs and single punctuation characters, whitespace dropped."""
    return TOKEN_RE.findall(text)


def word_tokens(text: str) -> list[str]:
    """Identifier/number runs only."""
    return WORD_RE.findall(text)


def _token_hash(token: str) -> int:
    return int.from_bytes(hashlib.blake2b(token.encode("utf-8", "surrogatepass"), digest_size=8).digest(), "little")


def token_hashes(tokens: list[str]) -> np.ndarray:
    """uint64 hash of each token (hashing each distinct token once)."""
    table = {t: _token_hash(t) for t in set(tokens)}
    return np.fromiter((table[t] for t in tokens), dtype=np.uint64, count=len(tokens))


def mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: spreads every input bit over every output bit (the polynomial alone
    leaves low bits depending only on low bits, which would bias MinHash's multiply-shift)."""
    x = x.copy()
    with np.errstate(over="ignore"):
        x ^= x >> np.uint64(30)
        x *= np.uint64(0xBF58476D1CE4E5B9)
        x ^= x >> np.uint64(27)
        x *= np.uint64(0x94D049BB133111EB)
        x ^= x >> np.uint64(31)
    return x


def ngram_hashes(ids: np.ndarray, n: int) -> np.ndarray:
    """uint64 hash of every run of `n` consecutive token hashes: [len(ids) - n + 1] (empty if shorter)."""
    count = len(ids) - n + 1
    if count <= 0:
        return np.empty(0, dtype=np.uint64)
    h = np.zeros(count, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for j in range(n):
            h = h * _POLY + ids[j : j + count]
    return mix64(h)
