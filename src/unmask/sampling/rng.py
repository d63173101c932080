"""Per-request randomness that does not depend on the batch a request runs in.

Each draw comes from a `torch.Generator` seeded from (the request's seed, the position of the first
token being decided, the step within its block, a stream id). A request therefore draws the same
numbers whether it runs alone or beside others, whichever rows joined or left, and however many
steps the batch spent on other rows; and the same seed on the same device gives the same output.
"""

from __future__ import annotations

import torch

_MASK64 = (1 << 64) - 1

STREAM_TOKENS = 1  # Gumbel noise for sampling token values
STREAM_ORDER = 2  # uniform scores for the random reveal order


def _splitmix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def derive_seed(seed: int, *keys: int) -> int:
    """A 63-bit seed mixed from `seed` and integer keys (order matters)."""
    x = _splitmix64(seed & _MASK64)
    for k in keys:
        x = _splitmix64(x ^ (k & _MASK64))
    return x & ((1 << 63) - 1)


class RowNoise:
    """Draws noise for rows of a batch; one reusable generator per device, reseeded for every draw."""

    def __init__(self, device: torch.device | str):
        self.device = torch.device(device)
        self.generator = torch.Generator(device=self.device)

    def uniform(self, seed: int, keys: tuple[int, ...], shape: tuple[int, ...]) -> torch.Tensor:
        self.generator.manual_seed(derive_seed(seed, *keys))
        return torch.rand(shape, generator=self.generator, device=self.device)

    def gumbel(self, seed: int, keys: tuple[int, ...], shape: tuple[int, ...]) -> torch.Tensor:
        u = self.uniform(seed, keys + (STREAM_TOKENS,), shape)
        # Clamp away from 0 so that -log(-log u) stays finite.
        return -torch.log(-torch.log(u.clamp_min(1e-20)))
