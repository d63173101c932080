"""The autoregressive twin's decoder: one token per forward pass with an incremental key/value cache.

Shape legend: B batch rows, P longest prompt, A longest answer, V vocabulary.

Every speed claim of the project is made against this decoder, so it is the strong baseline: the
prompt is prefilled once (that pass also yields the first token), then each step feeds only the last
token against the cache, with no recompute of the prefix. It shares the tokenizer, the sampling
function (policies.sample_tokens), the randomness (rng.py) and the stopping rules with the diffusion
decoder, and the same driver interface (step / poll / finish_rows / select_rows).

Rows are left-padded to the longest prompt; rotary positions count each row's own tokens, so a
request's output does not depend on its batch. `cache="none"` recomputes the whole sequence at every
step (a reference for tests, never a baseline).
"""

from __future__ import annotations

import torch

from ..model.kv_cache import KVCache
from . import policies, rng
from .diffusion_decoder import Poll
from .policies import RowSettings


class ARDecoder:
    def __init__(self, model: torch.nn.Module, prompts: list[list[int]], max_new_tokens: list[int],
                 settings: RowSettings, *, cache: str = "kv", pad_id: int = 0,
                 device: torch.device | str = "cpu", first_allowed: list[torch.Tensor | None] | None = None):
        """first_allowed: per row, None or the bool [V] mask of tokens its first answer token may take."""
        assert cache in ("kv", "none")
        assert model.config.attention == "causal"
        self.model, self.settings, self.cache_mode = model, settings, cache
        self.pad_id = pad_id
        self.device = torch.device(device)
        B = len(prompts)
        P = max(len(p) for p in prompts)
        width = P + max(max_new_tokens)
        self.offsets = [P - len(p) for p in prompts]  # left padding per row
        tokens = torch.full((B, width), pad_id, dtype=torch.long)
        valid = torch.zeros(B, width, dtype=torch.bool)
        positions = torch.zeros(B, width, dtype=torch.long)
        for i, p in enumerate(prompts):
            tokens[i, P - len(p):P] = torch.tensor(p, dtype=torch.long)
            valid[i, P - len(p):] = True
            positions[i, P - len(p):] = torch.arange(width - P + len(p))
        self.tokens, self.valid, self.positions = tokens.to(device), valid.to(device), positions.to(device)
        self.answer_start = [P] * B  # the column of each row's first generated token
        self.first_allowed = list(first_allowed) if first_allowed is not None else [None] * B
        self.max_new = torch.tensor(max_new_tokens, dtype=torch.long, device=device)
        self.kv = KVCache.for_model(model, B, width) if cache == "kv" else None
        self.next_column = P  # the column the next step fills (the same for every row)
        self.fed_until = 0  # kv cache: columns [0, fed_until) have their keys in the cache
        self.done = torch.zeros(B, dtype=torch.bool, device=device)
        self.generated = torch.zeros(B, dtype=torch.long, device=device)  # answer tokens, end-of-text excluded
        self.forwards = torch.zeros(B, dtype=torch.long, device=device)
        self.logprob = torch.zeros(B, dtype=torch.float32, device=device)
        self.noise = rng.RowNoise(device)
        self.num_steps = 0
        self.finished = False

    @property
    def batch_size(self) -> int:
        return self.tokens.shape[0]

    @property
    def at_block_boundary(self) -> bool:
        """An autoregressive batch may admit new rows between any two steps."""
        return True

    @property
    def width(self) -> int:
        return self.tokens.shape[1]

    @torch.no_grad()
    def step(self) -> None:
        """Predict and append the next token of every row that is not done."""
        assert not self.finished
        column = self.next_column
        a = self.fed_until if self.cache_mode == "kv" else 0
        logits = self.model(self.tokens[:, a:column], position_ids=self.positions[:, a:column],
                            attention_mask=self.valid[:, a:column], cache=self.kv, cache_start=a,
                            logits_slice=slice(-1, None))
        for r, allowed in enumerate(self.first_allowed):
            if allowed is not None and self.answer_start[r] == column:
                logits[r, 0] = logits[r, 0].masked_fill(~allowed, float("-inf"))
        if self.settings.any_penalty:
            starts = torch.tensor(self.answer_start, device=self.device)
            cols = torch.arange(column, device=self.device)
            answered = cols[None, :] >= starts[:, None]  # [B, column]: the row's answer so far
            counts = policies.token_counts(self.tokens[:, :column], answered, logits.shape[-1])
            logits = policies.apply_penalties(logits, counts, self.settings)
        token, confidence, _ = policies.sample_tokens(logits, self.settings, self._gumbel(column, logits.shape[-1]))
        token, confidence = token[:, 0], confidence[:, 0]
        active = ~self.done
        self.tokens[:, column] = torch.where(active, token, self.tokens[:, column])
        self.forwards += active
        self.logprob += torch.where(active, confidence.clamp_min(1e-30).log(), torch.zeros_like(confidence))
        ended = active & self.settings.is_stop(token)  # any of the row's stop ids (settings.stop_ids)
        self.generated += active & ~ended
        self.done |= ended | (self.generated >= self.max_new)
        self.fed_until = column
        self.next_column += 1
        self.num_steps += 1

    def _gumbel(self, column: int, vocab: int) -> torch.Tensor | None:
        rows = self.settings.sampling_rows
        if not rows:
            return None
        noise = torch.zeros(self.batch_size, 1, vocab, device=self.device)
        for r in rows:
            # Keyed by the position being predicted, like the diffusion decoder's block start.
            noise[r] = self.noise.gumbel(self.settings.seeds[r], (column - self.offsets[r], 0), (1, vocab))
        return noise

    def poll(self) -> Poll:
        host = torch.cat([self.done.long(), self.generated]).tolist()
        B = self.batch_size
        done = [bool(d) for d in host[:B]]
        if all(done) or self.next_column >= self.width:
            self.finished = True
        return Poll(done, host[B:])

    def finish_rows(self, rows: list[int]) -> None:
        if rows:
            self.done[torch.tensor(rows, device=self.device)] = True

    def select_rows(self, index: list[int]) -> None:
        idx = torch.tensor(index, dtype=torch.long, device=self.device)
        for name in ("tokens", "valid", "positions", "max_new", "done", "generated", "forwards", "logprob"):
            setattr(self, name, getattr(self, name)[idx])
        self.offsets = [self.offsets[i] for i in index]
        self.answer_start = [self.answer_start[i] for i in index]
        self.first_allowed = [self.first_allowed[i] for i in index]
        self.settings = self.settings.select_rows(index)
        if self.kv is not None:
            self.kv.select_rows(idx)
        if not index:
            self.finished = True

    def merge(self, other: "ARDecoder") -> None:
        """Admit `other`'s rows (a new batch for the same model and cache) between two steps.

        Columns are padded so that both batches fill the same column next; the next step then recomputes
        the keys of every row from column 0 (one prefill-sized pass), after which each row decodes exactly
        as it would alone.
        """
        assert not self.finished and not other.finished
        assert self.model is other.model and self.cache_mode == other.cache_mode
        left_self = max(0, other.next_column - self.next_column)
        left_other = max(0, self.next_column - other.next_column)
        width = max(self.width + left_self, other.width + left_other)
        parts = [self._padded(left_self, width), other._padded(left_other, width)]
        for i, name in enumerate(("tokens", "valid", "positions")):
            setattr(self, name, torch.cat([p[i] for p in parts]))
        for name in ("max_new", "done", "generated", "forwards", "logprob"):
            setattr(self, name, torch.cat([getattr(self, name), getattr(other, name)]))
        self.offsets = [o + left_self for o in self.offsets] + [o + left_other for o in other.offsets]
        self.answer_start = ([c + left_self for c in self.answer_start]
                             + [c + left_other for c in other.answer_start])
        self.first_allowed = self.first_allowed + other.first_allowed
        self.settings = RowSettings.concat([self.settings, other.settings])
        self.next_column += left_self
        self.fed_until = 0
        if self.kv is not None:
            self.kv = KVCache.for_model(self.model, self.batch_size, width)

    def _padded(self, left: int, width: int) -> tuple[torch.Tensor, ...]:
        B = self.batch_size
        right = width - self.width - left

        def pad(t: torch.Tensor, value) -> torch.Tensor:
            return torch.cat([t.new_full((B, left), value), t, t.new_full((B, right), value)], dim=1)

        return pad(self.tokens, self.pad_id), pad(self.valid, False), pad(self.positions, 0)

    def answer_ids(self, row: int, length: int | None = None) -> list[int]:
        """The row's generated tokens (end-of-text excluded), or its first `length`."""
        n = int(self.generated[row]) if length is None else length
        start = self.answer_start[row]
        return self.tokens[row, start:start + n].tolist()

    def draft_ids(self, row: int) -> tuple[list[int], list[bool]]:
        ids = self.answer_ids(row)
        return ids, [False] * len(ids)

    def counters(self) -> dict[str, list]:
        return {"forwards": self.forwards.tolist(), "revealed": self.generated.tolist(),
                "logprob": self.logprob.tolist()}
