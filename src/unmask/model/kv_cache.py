"""A static key/value cache that every sampler of unmask shares.

Shape legend: B batch, S cache slots, H_kv key/value heads, D_h head width, L tokens fed.

The cache holds one slot per canvas position. A forward pass with `cache_start=s` over L tokens
writes those tokens' keys and values (rotary embedding already applied) into slots [s, s + L),
replacing what was there, and its queries attend over every slot written so far (subject to the
model's attention mode and the per-slot validity mask). That one rule serves every decoder:

- autoregressive: prefill the prompt at 0, then feed one token at a time at the end;
- prefix cache (Fast-dLLM): one full pass at a block start, then feed the block and everything
  after it at the block's start, so the prefix keys are reused until the next block;
- dual cache: one full pass at a block start, then feed only the block, so the prefix and the
  masked suffix keys are reused (stale by design) until the next block; its lazy variant feeds the
  block before and the block at a later block's start instead of a full pass;
- exact block cache (block_causal models): finished blocks stay in their slots; the current
  block is fed at its start at every step, and once more when clean to commit its keys.

Buffers are preallocated so that the step function never reallocates (a prerequisite for CUDA
graphs). `end` is a plain int on the host, so slicing costs no device synchronisation.
"""

from __future__ import annotations

import torch


class KVCache:
    def __init__(self, num_layers: int, batch_size: int, max_slots: int, num_kv_heads: int, head_dim: int,
                 device: torch.device | str | None = None, dtype: torch.dtype = torch.float32):
        shape = (batch_size, num_kv_heads, max_slots, head_dim)
        self.keys = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(num_layers)]
        self.values = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(num_layers)]
        self.slot_positions = torch.zeros(batch_size, max_slots, dtype=torch.long, device=device)
        self.slot_valid = torch.zeros(batch_size, max_slots, dtype=torch.bool, device=device)
        self.max_slots = max_slots
        self.end = 0  # slots [0, end) have been written at least once

    @classmethod
    def for_model(cls, model: torch.nn.Module, batch_size: int, max_slots: int) -> "KVCache":
        cfg = model.config
        p = next(model.parameters())
        return cls(cfg.num_hidden_layers, batch_size, max_slots, cfg.num_key_value_heads, cfg.resolved_head_dim,
                   device=p.device, dtype=p.dtype)

    @property
    def batch_size(self) -> int:
        return self.slot_valid.shape[0]

    def write_tokens(self, start: int, positions: torch.Tensor, valid: torch.Tensor) -> None:
        """Record the positions [B, L] and validity [B, L] of the tokens about to be written at `start`."""
        stop = start + positions.shape[1]
        if start < 0 or stop > self.max_slots:
            raise ValueError(f"cache write [{start}, {stop}) is outside its {self.max_slots} slots")
        self.slot_positions[:, start:stop] = positions
        self.slot_valid[:, start:stop] = valid
        self.end = max(self.end, stop)

    def write(self, layer: int, start: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store k, v [B, H_kv, L, D_h] at slots [start, start + L); return keys/values of slots [0, end)."""
        stop = start + k.shape[2]
        self.keys[layer][:, :, start:stop] = k
        self.values[layer][:, :, start:stop] = v
        return self.keys[layer][:, :, : self.end], self.values[layer][:, :, : self.end]

    def truncate(self, end: int) -> None:
        """Forget slots >= end (they become invisible to later queries until written again)."""
        self.slot_valid[:, end:] = False
        self.end = min(self.end, end)

    def reset(self) -> None:
        self.slot_valid.zero_()
        self.end = 0

    def select_rows(self, index: torch.Tensor) -> None:
        """Keep only the batch rows in `index` (e.g. when finished requests leave a batch)."""
        self.keys = [k[index] for k in self.keys]
        self.values = [v[index] for v in self.values]
        self.slot_positions = self.slot_positions[index]
        self.slot_valid = self.slot_valid[index]

    def rows(self, start: int, stop: int) -> "KVCache":
        """A view of batch rows [start, stop): what a pass through it writes lands in this cache's tensors (but
        not in this cache's `end`, which the caller updates)."""
        view = KVCache.__new__(KVCache)
        view.keys = [k[start:stop] for k in self.keys]
        view.values = [v[start:stop] for v in self.values]
        view.slot_positions = self.slot_positions[start:stop]
        view.slot_valid = self.slot_valid[start:stop]
        view.max_slots, view.end = self.max_slots, self.end
        return view

    def take_rows(self, index: torch.Tensor) -> "KVCache":
        """A copy of the batch rows in `index` (slots [0, end)): a pass over some rows only writes into it, and
        `put_rows` copies what it wrote back."""
        part = KVCache.__new__(KVCache)
        part.keys = [k[index, :, : self.end] for k in self.keys]
        part.values = [v[index, :, : self.end] for v in self.values]
        part.slot_positions = self.slot_positions[index, : self.end]
        part.slot_valid = self.slot_valid[index, : self.end]
        part.max_slots, part.end = self.end, self.end
        return part

    def put_rows(self, index: torch.Tensor, part: "KVCache", start: int, stop: int) -> None:
        """Copy slots [start, stop) of `part` (from take_rows(index)) back into the rows in `index`."""
        for mine, theirs in zip(self.keys + self.values, part.keys + part.values):
            mine[index, :, start:stop] = theirs[:, :, start:stop]
        self.slot_positions[index, start:stop] = part.slot_positions[:, start:stop]
        self.slot_valid[index, start:stop] = part.slot_valid[:, start:stop]

    def place(self, source: "KVCache", row: int, left: int) -> None:
        """Copy every written slot of `source` into rows [row, row + its batch) at slots moved `left` to the right
        (how a batch keeps its keys when it is padded on the left to join another)."""
        rows, slots = slice(row, row + source.batch_size), slice(left, left + source.end)
        if slots.stop > self.max_slots:
            raise ValueError(f"placing {source.end} slots at {left} overflows this cache's {self.max_slots}")
        for mine, theirs in zip(self.keys + self.values, source.keys + source.values):
            mine[rows, :, slots] = theirs[:, :, :source.end]
        self.slot_positions[rows, slots] = source.slot_positions[:, :source.end]
        self.slot_valid[rows, slots] = source.slot_valid[:, :source.end]
        self.end = max(self.end, slots.stop)
