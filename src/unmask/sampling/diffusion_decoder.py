"""Block-wise (semi-autoregressive) decoding of a masked or block diffusion model, as small step functions.

Shape legend: B batch rows, W canvas columns, N columns of the current block, V vocabulary.

A `DiffusionDecoder` owns one batch: its canvas (canvas.py), per-row settings (policies.py), a key/value
cache and counters. An engine drives it:

    dec = DiffusionDecoder(model, canvas, settings, cache="dual")
    while not dec.finished:
        dec.step()            # one forward pass and the reveals it allows, on the device (no host sync)
        status = dec.poll()   # one host sync: which rows are done, how much of each answer is final
        ...                   # stop strings, streaming, cancellation (finish_rows, select_rows)
        if dec.at_block_boundary:
            dec.merge(new_dec)    # admit a new batch's rows

Blocks are decoded in order; the batch moves to the next block once no row has a masked position
left in this one (rows that are done are skipped). What a step feeds to the model depends on the
cache (s, e = the block's columns; W = all columns; shift = 1 for models whose logit at i predicts
token i + 1, whose predictions for [s, e) come from the logits at [s - 1, e - 1)):

- `none`: the whole canvas, every step (the reference);
- `prefix` (Fast-dLLM): the whole canvas at a block's first step (writing every key into the cache),
  then [s - shift, W) against the cached prefix;
- `dual` (Fast-dLLM): the whole canvas at a block's first step, then only [s - shift, e): the prefix
  and the still-masked suffix keys are reused, stale by design, until the next block (or every
  `refresh_every` steps);
- `dual-lazy`: `dual` whose first step of a later block feeds only [p - shift, e), p the start of the block
  decoded before: the finished block's keys become those of its final tokens, while the prompt's and the
  suffix's stay as the first block's full pass computed them. That first pass of every block is what a
  `dual` decode spends a third of its time on for 128-token answers; see docs/performance.md for what the
  staler keys cost (akin to dInfer's vicinity refresh, which refreshes a block's neighbours instead of all);
- `block` (block_causal models, exact): slots [0, c) hold the exact keys of finished blocks; a step feeds
  [min(c, s - shift), e), so the first step of a block also commits the block before it (no extra
  pass), and c becomes s. Block attention keeps finished blocks blind to later ones, so this equals
  recomputing the whole canvas.

A row that has nothing left to reveal in the block while other rows still do waits out of the forward passes
(`_forward_busy_rows`): fed, it would only rewrite keys that the next block's first pass rewrites anyway, so its
tokens do not change. At batch 8 on the default model 45 % of the rows fed were such waits (1,565 of 3,500 on
32 HumanEval prompts, 128 tokens).

Once a row reveals one of its stop tokens (settings.stop_ids: end-of-text, or any id that ends a turn),
every masked position after it becomes the row's first stop id (its end-of-text) too, so no step is
spent past the end of an answer (infilling rows keep decoding: their end is the suffix).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..model.kv_cache import KVCache
from . import policies, rng
from .canvas import Canvas
from .policies import RowSettings


@dataclass
class Poll:
    done: list[bool]  # the row needs no more steps
    committed: list[int]  # answer tokens final from the answer start up to the first masked position


class DiffusionDecoder:
    def __init__(self, model: torch.nn.Module, canvas: Canvas, settings: RowSettings, *, cache: str = "none",
                 refresh_every: int = 0, eos_fill: list[bool] | None = None):
        cfg = model.config
        assert cache in ("none", "prefix", "dual", "dual-lazy", "block")
        assert cache != "block" or cfg.attention == "block_causal"
        self.model, self.canvas, self.settings = model, canvas, settings
        self.cache_mode, self.refresh_every = cache, refresh_every
        self.shift = 1 if cfg.shift_logits else 0
        B, W = canvas.tokens.shape
        device = canvas.tokens.device
        self.device = device
        fill = eos_fill if eos_fill is not None else [True] * B
        self.eos_fill = torch.tensor(fill, dtype=torch.bool, device=device)
        self.any_eos_fill = any(fill) and settings.stop_ids.shape[1] > 0
        self.kv = KVCache.for_model(model, B, W) if cache != "none" else None
        self.committed_until = 0  # block cache: slots [0, committed_until) hold exact keys
        self.last_block_start: int | None = None  # dual-lazy: where the block decoded last began (None: no cache yet)
        self.fresh_from = B  # dual-lazy: rows from here on joined by merge() and have no keys yet
        self.idle: list[bool] | None = None  # rows with nothing to reveal in the current block (from poll)
        self.answer_start = torch.tensor([r.answer_start for r in canvas.rows], device=device)
        self.answer_end = torch.tensor([r.answer_end for r in canvas.rows], device=device)
        self.columns = torch.arange(W, device=device)
        self.done = torch.zeros(B, dtype=torch.bool, device=device)
        self.forwards = torch.zeros(B, dtype=torch.long, device=device)  # passes in which the row revealed
        self.revealed = torch.zeros(B, dtype=torch.long, device=device)
        self.logprob = torch.zeros(B, dtype=torch.float32, device=device)  # log p of each revealed token, summed
        self.initial_masked = torch.zeros(B, dtype=torch.long, device=device)
        self.noise = rng.RowNoise(device)
        self.blocks = canvas.blocks()
        self.block_index = 0
        self.step_in_block = 0
        self.num_steps = 0  # forward passes of the batch
        self.finished = not self.blocks

    @property
    def batch_size(self) -> int:
        return self.canvas.tokens.shape[0]

    # ----------------------------------------------------------------- the step (device only)

    @torch.no_grad()
    def step(self) -> None:
        """One forward pass over the current block and the reveals each row's policy allows."""
        assert not self.finished
        s, e = self.blocks[self.block_index]
        c = self.canvas
        candidates = c.masked[:, s:e] & ~self.done[:, None]
        if self.step_in_block == 0:
            self.initial_masked = candidates.sum(-1)
        logits = self._constrain_first(self.block_logits(s, e, skip_idle=True), s, e)
        self.fresh_from = self.batch_size  # every row's keys are written now
        if self.step_in_block == 0:
            self.last_block_start = s
        if self.settings.any_penalty:
            revealed = c.answer & ~c.masked
            logits = policies.apply_penalties(logits, policies.token_counts(c.tokens, revealed, logits.shape[-1]),
                                              self.settings)
        noise = self._gumbel(s, e, logits.shape[-1])
        tokens, confidence, entropy = policies.sample_tokens(logits, self.settings, noise)
        reveal = policies.select_reveals(self.settings, confidence, entropy, candidates, self.initial_masked,
                                         self.step_in_block, self._random_scores(s, e))
        self._apply(s, e, reveal, tokens, confidence)
        self.forwards += candidates.any(-1)
        self.step_in_block += 1
        self.num_steps += 1

    def block_logits(self, s: int, e: int, skip_idle: bool = False) -> torch.Tensor:
        """Logits [B, e - s, V] predicting the block's columns, with as little fed as the cache allows.

        For the exact block cache this also commits the finished block before s (see the module docstring).
        skip_idle: rows that the last poll() found with nothing left to reveal in the block are not fed, and
        get zero logits (`_forward_busy_rows`).
        """
        c, W, shift = self.canvas, self.canvas.width, self.shift
        lo = s - shift  # the first column whose logits are needed
        if self.cache_mode == "none":
            a, b = 0, W
        elif self.cache_mode == "dual-lazy" and self.step_in_block == 0 and self.last_block_start is not None:
            a, b = self.last_block_start - shift, e
        elif self.cache_mode in ("prefix", "dual", "dual-lazy"):
            refresh = self.step_in_block == 0 or (self.refresh_every and self.step_in_block % self.refresh_every == 0)
            a = 0 if refresh else lo
            b = e if (self.cache_mode != "prefix" and not refresh) else W
        else:
            a, b = min(self.committed_until, lo), e
        a = max(a, 0)
        k = self.fresh_from
        idle = self.idle if skip_idle and k == self.batch_size else None
        if k < self.batch_size and (a, b) != (0, W):
            # Rows that merge() admitted have no keys yet: their first pass is the whole canvas, as it is alone.
            parts = [self._forward(0, k, a, b, lo, e)] if k else []
            logits = torch.cat(parts + [self._forward(k, self.batch_size, 0, W, lo, e)])
        elif idle is not None and any(idle) and not all(idle) and (self.kv is None or b <= self.kv.end):
            logits = self._forward_busy_rows([r for r, x in enumerate(idle) if not x], a, b, lo, e)
        else:
            logits = self._forward(0, self.batch_size, a, b, lo, e)
        if lo < 0:
            # Column 0 is a prompt token (prompts are never empty), so no prediction for it is ever used.
            logits = torch.cat([torch.zeros_like(logits[:, :1]), logits], dim=1)
        if self.cache_mode == "block":
            self.committed_until = max(self.committed_until, s)
        return logits

    def _forward(self, first: int, stop: int, a: int, b: int, lo: int, e: int) -> torch.Tensor:
        """Feed columns [a, b) of rows [first, stop), writing their keys; logits for columns [max(lo, 0), e - shift)."""
        c, rows = self.canvas, slice(first, stop)
        whole = (first, stop) == (0, self.batch_size)
        cache = self.kv if whole or self.kv is None else self.kv.rows(first, stop)
        logits = self.model(c.tokens[rows, a:b], position_ids=c.positions[rows, a:b], attention_mask=c.valid[rows, a:b],
                            cache=cache, cache_start=a, logits_slice=slice(max(lo, 0) - a, e - self.shift - a))
        if cache is not self.kv:
            self.kv.end = max(self.kv.end, cache.end)
        return logits

    def _forward_busy_rows(self, rows: list[int], a: int, b: int, lo: int, e: int) -> torch.Tensor:
        """Logits of every row from a pass over the rows that still have masks in the block; the others get zeros.

        A row that has finished the block while others have not would only rewrite the keys of its final
        tokens at every step; whatever a step writes into [a, b) the next block's first pass overwrites (the
        whole canvas; the lazy start and the block cache's commit feed [block start - shift, ...)), so leaving
        such rows out changes no row's tokens. Their cache rows are copied out and back (take_rows/put_rows).
        """
        c, idx = self.canvas, torch.tensor(rows, device=self.device)
        part = self.kv.take_rows(idx) if self.kv is not None else None
        logits = self.model(c.tokens[idx, a:b], position_ids=c.positions[idx, a:b], attention_mask=c.valid[idx, a:b],
                            cache=part, cache_start=a, logits_slice=slice(max(lo, 0) - a, e - self.shift - a))
        if part is not None:
            self.kv.put_rows(idx, part, a, b)
        out = logits.new_zeros((self.batch_size, *logits.shape[1:]))
        out[idx] = logits
        return out

    def _constrain_first(self, logits: torch.Tensor, s: int, e: int) -> torch.Tensor:
        """Rows with a healed prompt: their answer's first column may take only the allowed tokens."""
        for r, layout in enumerate(self.canvas.rows):
            if layout.first_allowed is not None and s <= layout.answer_start < e:
                j = layout.answer_start - s
                logits[r, j] = logits[r, j].masked_fill(~layout.first_allowed, float("-inf"))
        return logits

    def _row_keys(self, row: int, s: int) -> tuple[int, int]:
        # The row's position at the block start and its step in the block: the same wherever the row runs.
        return s - self.canvas.rows[row].offset, self.step_in_block

    def _gumbel(self, s: int, e: int, vocab: int) -> torch.Tensor | None:
        rows = self.settings.sampling_rows
        if not rows:
            return None
        noise = torch.zeros(self.batch_size, e - s, vocab, device=self.device)
        for r in rows:
            noise[r] = self.noise.gumbel(self.settings.seeds[r], self._row_keys(r, s), (e - s, vocab))
        return noise

    def _random_scores(self, s: int, e: int) -> torch.Tensor | None:
        rows = self.settings.random_rows
        if not rows:
            return None
        scores = torch.zeros(self.batch_size, e - s, device=self.device)
        for r in rows:
            scores[r] = self.noise.uniform(self.settings.seeds[r], self._row_keys(r, s) + (rng.STREAM_ORDER,), (e - s,))
        return scores

    def _apply(self, s: int, e: int, reveal: torch.Tensor, tokens: torch.Tensor, confidence: torch.Tensor) -> None:
        c = self.canvas
        c.tokens[:, s:e] = torch.where(reveal, tokens, c.tokens[:, s:e])
        c.masked[:, s:e] &= ~reveal
        self.revealed += reveal.sum(-1)
        self.logprob += torch.where(reveal, confidence.clamp_min(1e-30).log(), torch.zeros_like(confidence)).sum(-1)
        if self.any_eos_fill:
            is_end = reveal & self.settings.is_stop(tokens) & self.eos_fill[:, None]
            first = torch.where(is_end, self.columns[s:e], c.width).min(-1).values  # [B]; W when none
            tail = c.masked & (self.columns[None, :] > first[:, None])
            c.tokens.copy_(torch.where(tail, self.settings.fill_ids[:, None], c.tokens))
            c.masked &= ~tail

    # ----------------------------------------------------------------- host side

    def poll(self) -> Poll:
        """Mark rows with nothing left to reveal as done, pick the block to decode next (one host sync)."""
        c = self.canvas
        self.done |= ~c.masked.any(-1)
        open_columns = (c.masked & ~self.done[:, None]).any(0)  # [W]
        first_masked = torch.where(c.masked, self.columns[None, :], c.width).min(-1).values
        committed = torch.minimum(first_masked, self.answer_end) - self.answer_start
        host = torch.cat([open_columns.long(), self.done.long(), committed, first_masked]).tolist()
        W, B = c.width, self.batch_size
        open_host, done, committed_host, first_host = host[:W], host[W:W + B], host[W + B:W + 2 * B], host[W + 2 * B:]
        self._seek_block(open_host)
        if not self.finished:
            # Blocks finish in order, so a row has masks in the block [s, e) exactly when its first is before e.
            e = self.blocks[self.block_index][1]
            self.idle = [bool(d) or f >= e for d, f in zip(done, first_host)]
        return Poll([bool(d) for d in done], committed_host)

    def _seek_block(self, open_columns: list[int]) -> None:
        for index in range(self.block_index, len(self.blocks)):
            s, e = self.blocks[index]
            if any(open_columns[s:e]):
                if index != self.block_index:
                    self.block_index, self.step_in_block = index, 0
                return
        self.finished = True

    def finish_rows(self, rows: list[int]) -> None:
        """Stop decoding these rows (a stop string was found, or the request was cancelled)."""
        if rows:
            self.done[torch.tensor(rows, device=self.device)] = True

    def select_rows(self, index: list[int]) -> None:
        """Keep only these rows (finished or cancelled requests leave the batch); safe between steps."""
        idx = torch.tensor(index, dtype=torch.long, device=self.device)
        self.canvas = self.canvas.select_rows(index)
        self.settings = self.settings.select_rows(index)
        for name in ("eos_fill", "answer_start", "answer_end", "done", "forwards", "revealed", "logprob",
                     "initial_masked"):
            setattr(self, name, getattr(self, name)[idx])
        if self.kv is not None:
            self.kv.select_rows(idx)
        self.fresh_from = sum(i < self.fresh_from for i in index)
        self.idle = [self.idle[i] for i in index] if self.idle is not None else None
        self.any_eos_fill = bool(self.eos_fill.any()) and self.settings.stop_ids.shape[1] > 0
        if not index:
            self.finished = True

    @property
    def at_block_boundary(self) -> bool:
        """True between blocks (and before the first step): the moment new rows may join (merge)."""
        return self.step_in_block == 0

    def merge(self, other: "DiffusionDecoder") -> None:
        """Admit `other`'s rows (a new batch, built for the same model and batch-level settings) at a block boundary.

        Columns are padded so that both batches' current blocks start at the same column; block grids then
        coincide, since both use the same block length. The cache is rebuilt by the next step, which feeds the
        whole canvas (a refresh, which prefix and dual caches do at every block start anyway; for the exact
        block cache, one recomputation of the finished blocks); `dual-lazy` keeps this batch's keys, moved with
        its columns, and feeds only `other`'s rows the whole canvas. Each row then decodes exactly as it would alone.
        """
        assert self.at_block_boundary and other.at_block_boundary and not self.finished and not other.finished
        assert (self.model is other.model and self.cache_mode == other.cache_mode
                and self.refresh_every == other.refresh_every
                and self.canvas.block_length == other.canvas.block_length)
        rows_before, kv_before = self.batch_size, self.kv
        s_self, s_other = self.blocks[self.block_index][0], other.blocks[other.block_index][0]
        left_self, left_other = max(0, s_other - s_self), max(0, s_self - s_other)
        width = max(self.canvas.width + left_self, other.canvas.width + left_other)
        self.canvas = Canvas.concat([self.canvas.padded(left_self, width), other.canvas.padded(left_other, width)],
                                    grid_start=s_self + left_self)
        self.settings = RowSettings.concat([self.settings, other.settings])
        for name in ("eos_fill", "done", "forwards", "revealed", "logprob", "initial_masked"):
            setattr(self, name, torch.cat([getattr(self, name), getattr(other, name)]))
        self.answer_start = torch.tensor([r.answer_start for r in self.canvas.rows], device=self.device)
        self.answer_end = torch.tensor([r.answer_end for r in self.canvas.rows], device=self.device)
        self.columns = torch.arange(width, device=self.device)
        self.any_eos_fill = self.any_eos_fill or other.any_eos_fill
        if self.kv is not None:
            self.kv = KVCache.for_model(self.model, self.batch_size, width)
        self.committed_until = 0
        if self.cache_mode == "dual-lazy" and self.last_block_start is not None:
            self.kv.place(kv_before, 0, left_self)
            self.last_block_start += left_self
            self.fresh_from = min(self.fresh_from, rows_before)
        else:
            self.last_block_start = None  # the next step feeds the whole canvas
        self.blocks = self.canvas.blocks()
        self.block_index = 0
        self.idle = None

    @torch.no_grad()
    def junction_logprob(self, rows: list[int], num_tokens: int) -> list[float]:
        """Mean log p of each row's first `num_tokens` suffix tokens, masked, given the rest of its canvas.

        One forward pass over the given rows (no cache). An infilled middle that does not lead into its
        suffix makes the suffix's first tokens unlikely, so this ranks candidate middles of different lengths.
        """
        c, shift = self.canvas, self.shift
        idx = torch.tensor(rows, dtype=torch.long, device=self.device)
        tokens = c.tokens[idx].clone()
        target = torch.zeros_like(tokens, dtype=torch.bool)
        for j, r in enumerate(rows):
            layout = c.rows[r]
            target[j, layout.answer_end:min(layout.end, layout.answer_end + num_tokens)] = True
        inputs = tokens.masked_fill(target, self.model.config.mask_token_id)
        logits = self.model(inputs, position_ids=c.positions[idx], attention_mask=c.valid[idx]).float()
        if shift:
            logits = torch.cat([logits[:, :1], logits[:, :-1]], dim=1)  # logit for column i comes from i - 1
        logp = torch.log_softmax(logits, -1).gather(-1, tokens[..., None])[..., 0]
        total = torch.where(target, logp, torch.zeros_like(logp)).sum(-1)
        return (total / target.sum(-1).clamp(min=1)).tolist()

    def answer_ids(self, row: int, length: int | None = None) -> list[int]:
        """The row's answer tokens (masked ones included as the mask id), or its first `length`."""
        r = self.canvas.rows[row]
        end = r.answer_end if length is None else r.answer_start + length
        return self.canvas.tokens[row, r.answer_start:end].tolist()

    def draft_ids(self, row: int) -> tuple[list[int], list[bool]]:
        """(answer tokens, masked flags) of the row's current draft."""
        r = self.canvas.rows[row]
        return (self.canvas.tokens[row, r.answer_start:r.answer_end].tolist(),
                self.canvas.masked[row, r.answer_start:r.answer_end].tolist())

    def counters(self) -> dict[str, list]:
        """Per-row forward passes, revealed tokens and summed log-probability of the reveals."""
        return {"forwards": self.forwards.tolist(), "revealed": self.revealed.tolist(),
                "logprob": self.logprob.tolist()}
