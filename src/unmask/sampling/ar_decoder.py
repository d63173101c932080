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
                 settings: RowSettings, *, cache: str = "kv", eos_id: int | None = None, pad_id: int = 0,
                 device: torch.device | str = "cpu"):
        assert cache in ("kv", "none")
        assert model.config.attention == "causal"
        self.model, self.settings, self.cache_mode, self.eos_id = model, settings, cache, eos_id
        self.device = torch.device(device)
        B = len(prompts)
        self.prompt_width = P = max(len(p) for p in prompts)
        A = max(max_new_tokens)
        self.offsets = [P - len(p) for p in prompts]
        tokens = torch.full((B, P + A), pad_id, dtype=torch.long)
        valid = torch.zeros(B, P + A, dtype=torch.bool)
        positions = torch.zeros(B, P + A, dtype=torch.long)
        for i, p in enumerate(prompts):
            tokens[i, P - len(p):P] = torch.tensor(p, dtype=torch.long)
            valid[i, P - len(p):] = True
            positions[i, P - len(p):] = torch.arange(len(p) + A)
        self.tokens, self.valid, self.positions = tokens.to(device), valid.to(device), positions.to(device)
        self.max_new = torch.tensor(max_new_tokens, dtype=torch.long, device=device)
        self.kv = KVCache.for_model(model, B, P + A) if cache == "kv" else None
        self.length = 0  # generated columns so far (host)
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

    @torch.no_grad()
    def step(self) -> None:
        """Predict and append the next token of every row that is not done."""
        assert not self.finished
        P, t = self.prompt_width, self.length
        column = P + t  # the column this step fills
        if self.cache_mode == "none":
            a = 0
        else:
            a = 0 if t == 0 else column - 1
        logits = self.model(self.tokens[:, a:column], position_ids=self.positions[:, a:column],
                            attention_mask=self.valid[:, a:column], cache=self.kv, cache_start=a,
                            logits_slice=slice(-1, None))
        token, confidence, _ = policies.sample_tokens(logits, self.settings, self._gumbel(column, logits.shape[-1]))
        token, confidence = token[:, 0], confidence[:, 0]
        active = ~self.done
        self.tokens[:, column] = torch.where(active, token, self.tokens[:, column])
        self.forwards += active
        self.logprob += torch.where(active, confidence.clamp_min(1e-30).log(), torch.zeros_like(confidence))
        ended = active & (token == self.eos_id) if self.eos_id is not None else torch.zeros_like(active)
        self.generated += active & ~ended
        self.done |= ended | (self.generated >= self.max_new)
        self.length += 1
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
        if all(done) or self.prompt_width + self.length >= self.tokens.shape[1]:
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
        self.settings = self.settings.select_rows(index)
        if self.kv is not None:
            self.kv.select_rows(idx)
        if not index:
            self.finished = True

    def answer_ids(self, row: int, length: int | None = None) -> list[int]:
        """The row's generated tokens (end-of-text excluded), or its first `length`."""
        n = int(self.generated[row]) if length is None else length
        return self.tokens[row, self.prompt_width:self.prompt_width + n].tolist()

    def draft_ids(self, row: int) -> tuple[list[int], list[bool]]:
        ids = self.answer_ids(row)
        return ids, [False] * len(ids)

    def counters(self) -> dict[str, list]:
        return {"forwards": self.forwards.tolist(), "revealed": self.generated.tolist(),
                "logprob": self.logprob.tolist()}
