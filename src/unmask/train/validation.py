"""Validation during training: the objective's loss and the likelihood on fixed held-out windows.

Shape legend: N validation windows, B windows per forward pass, S Monte Carlo samples, L length.

The windows are the first `eval.windows` windows of the shards' "val" split, in order, split
evenly across ranks (every rank runs the same number of forward passes, which FSDP requires).
Every random draw is seeded by (eval.seed, window index), so each validation of a run, and runs
with any number of ranks, score the same noise on the same windows.

Reported: val_loss (the training loss with that fixed noise; for "ar" the exact NLL, without
fill-in-the-middle), val_nats_per_token (the Monte Carlo negative ELBO for diffusion objectives,
the exact NLL for "ar"; both of tokens 1..L-1 given token 0) and val_bits_per_byte when the
shards' index records the val split's UTF-8 byte count.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch

from ..data.shards import TokenShards
from ..diffusion import ar_nll, bits_per_byte, nelbo_draws, nelbo_estimates
from ..errors import UnmaskError
from .distributed import DistInfo, all_reduce
from .objectives import Draws, Objective, derive_seed


class Validator:
    def __init__(self, shards_dir: str, window_len: int, num_windows: int, info: DistInfo):
        try:
            shards = TokenShards(shards_dir, "val")
        except UnmaskError as e:
            raise UnmaskError(f"{e}; validation needs a 'val' split") from None
        available = len(shards) // window_len
        total = min(num_windows, available)
        total -= total % info.world_size
        if total == 0:
            raise UnmaskError(f"{shards_dir}: the val split has {len(shards)} tokens, fewer than "
                              f"{info.world_size} window(s) of {window_len}")
        per_rank = total // info.world_size
        self.indices = list(range(info.rank * per_rank, (info.rank + 1) * per_rank))  # contiguous per rank
        self.windows = torch.stack([torch.from_numpy(shards.read(i * window_len, window_len)) for i in self.indices])
        self.num_windows = total
        self.tokens_per_byte = tokens_per_byte(shards, "val")
        self.device = info.device

    @torch.no_grad()
    def run(self, model, objective: Objective, *, batch_size: int, bound_samples: int, seed: int,
            autocast: contextlib.AbstractContextManager | None = None) -> dict[str, Any]:
        cfg = objective.model_config
        L = self.windows.shape[1]
        is_ar = objective.name == "ar"
        block = cfg.block_size if objective.name == "block" else None
        loss_sum = nats = 0.0
        with autocast or contextlib.nullcontext():
            for start in range(0, len(self.indices), batch_size):
                x = self.windows[start : start + batch_size].to(self.device)
                if is_ar:
                    nats += ar_nll(model, x).sum().item()
                else:  # noise drawn for all N windows and sliced: the same whatever the ranks and batches
                    first = self.indices[start]
                    draws = Draws(derive_seed(seed, 0), self.num_windows, slice(first, first + len(x)), self.device)
                    loss_sum += objective.loss(model, x, draws).item() * len(x)
            per_pass = max(1, batch_size // bound_samples)  # windows x samples ~ one training batch
            for start in range(0, 0 if is_ar else len(self.indices), per_pass):
                indices = self.indices[start : start + per_pass]
                draws = [nelbo_draws(bound_samples, L, L // block if block else 1,
                                     torch.Generator().manual_seed(derive_seed(seed, 1, i))) for i in indices]
                estimates = nelbo_estimates(model, self.windows[start : start + per_pass].to(self.device),
                                            torch.stack([d[0] for d in draws]), torch.stack([d[1] for d in draws]),
                                            mask_token_id=cfg.mask_token_id, shift_logits=cfg.shift_logits,
                                            block_size=block)
                nats += estimates.mean(1).sum().item()
        sums = all_reduce(torch.tensor([loss_sum, nats, len(self.indices)], dtype=torch.float64, device=self.device))
        loss_sum, nats, windows = sums.tolist()
        nats_per_token = nats / (windows * (L - 1))
        result = {"val_loss": nats_per_token if is_ar else loss_sum / windows, "val_nats_per_token": nats_per_token,
                  "val_metric": "nll" if is_ar else "nelbo", "val_windows": int(windows)}
        if self.tokens_per_byte is not None:
            result["val_bits_per_byte"] = bits_per_byte(nats_per_token, self.tokens_per_byte)
        return result


def tokens_per_byte(shards: TokenShards, split: str) -> float | None:
    """num_tokens / num_bytes of a split from the shard index, or None when the index has no byte count."""
    num_bytes = shards.index.get("num_bytes", {})
    if not isinstance(num_bytes, dict) or not num_bytes.get(split):
        return None
    return len(shards) / float(num_bytes[split])
