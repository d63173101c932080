"""BatchRunner: one running batch of requests, stepped by generate(), stream() or a serving engine.

    runner = BatchRunner(model, tokenizer, emit=True)
    runner.admit(runner.plan("req-1", Request("def f(x):"), config))  # joins at the next block boundary
    while runner.busy:
        for update in runner.step():      # one forward pass, then stop strings, streaming and finished rows
            ...                           # update.event: progress; update.outcome: the row is done
    runner.cancel("req-1")                # its rows leave the batch before the next step

The decoders (diffusion_decoder.py, ar_decoder.py) work on token ids on the device; this module adds
what needs the tokenizer and the host: stop strings on the final text, streamed increments, each row's
statistics, and the rows' comings and goings (finished rows leave the batch; new rows join at a block
boundary of a diffusion batch, or between any two steps of an autoregressive one). All rows of a runner
share the batch-level settings (config.BATCH_FIELDS).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Hashable

import torch

from ..errors import UnmaskError
from . import infill
from .ar_decoder import ARDecoder
from .canvas import build_canvas
from .config import SamplerConfig, resolve_block_length, resolve_cache
from .diffusion_decoder import DiffusionDecoder
from .healing import Healing, healer_for
from .policies import RowSettings
from .stopping import BlockScope, StopScan, cut_at, tokens_covering
from .streaming import MASK_PLACEHOLDER, Event, FinalText, render_draft


@dataclass
class Row:
    """One row of a batch: a request, or one candidate length of an infilling request."""

    request: Hashable  # the request's id
    config: SamplerConfig
    prompt_ids: list[int]
    answer_len: int
    suffix_ids: list[int] = field(default_factory=list)
    kind: str = "complete"  # "complete"; "fim": autoregressive infilling; "middle": diffusion infilling
    candidate: bool = False  # one of several candidates of one request (no streaming events)
    healing: Healing | None = None  # the prompt's last token, re-chosen by the answer's first (healing.py)
    block: BlockScope | None = None  # the Python block the answer ends with (config.stop_at_block_end)
    newline_moved: bool = False  # the suffix's leading newline went to the middle (infill.healed_suffix)

    def text(self, decode, ids: list[int]) -> str:
        """The answer's text for its tokens (without the healed prefix, which ends the prompt, and without the
        newline that a healed suffix gave to the middle)."""
        text = decode(ids)
        text = self.healing.strip(text) if self.healing else text
        return text[:-1] if self.newline_moved and text.endswith("\n") else text


@dataclass
class Outcome:
    ids: list[int]
    text: str
    finish_reason: str  # "stop" or "length"
    forwards: int
    revealed: int
    logprob: float
    wall: float  # seconds from admission to completion
    junction: float = 0.0  # infilling candidates: see infill.py


@dataclass
class Update:
    row: Row
    event: Event | None = None  # progress of a row that is still decoding
    outcome: Outcome | None = None  # the row is done
    final_text: str = ""  # with outcome: the final text not streamed yet
    step: int = 0


class Codec:
    """Text <-> ids with the model's special tokens; works without a tokenizer for id-only requests."""

    def __init__(self, tokenizer: Any, model_config):
        self.tokenizer = tokenizer
        self.eos_id = model_config.eos_token_id
        # Stop tokens of a request whose config leaves stop_token_ids unset: generate() callers that pass
        # a bare SamplerConfig get the model's end-of-text id (load_model's generation_config lists more).
        self.default_stop_ids = (self.eos_id,) if self.eos_id is not None else ()
        self.mask_id = model_config.mask_token_id
        self.pad_id = next((t for t in (model_config.pad_token_id, model_config.eos_token_id) if t is not None), 0)
        self.bos_id = model_config.bos_token_id

    def heal(self, prompt_ids: list[int]) -> tuple[list[int], Healing] | None:
        return healer_for(self.tokenizer).heal(prompt_ids) if self.tokenizer is not None else None

    def encode(self, text: str) -> list[int]:
        if self.tokenizer is None:
            raise UnmaskError("a text request needs a tokenizer (or pass prompt_ids)")
        return list(self.tokenizer.encode(text, add_special_tokens=False).ids)

    def decode(self, ids: list[int]) -> str:
        if self.tokenizer is None:
            return ""
        return self.tokenizer.decode(ids, skip_special_tokens=True)


def plan_rows(model: torch.nn.Module, codec: Codec, request_id: Hashable, request, config: SamplerConfig) -> list[Row]:
    """Tokenize and check one request; one row, or one per candidate length for a variable-length infill."""
    cfg = model.config
    prompt_ids = list(request.prompt_ids) if request.prompt_ids is not None else codec.encode(request.prompt or "")
    has_suffix = request.suffix is not None or request.suffix_ids is not None
    # With a text suffix, suffix_ids (when given) are the tokens of the healed suffix the model sees.
    suffix, moved = infill.healed_suffix(request.suffix, config) if request.suffix is not None else (None, False)
    suffix_ids = (list(request.suffix_ids) if request.suffix_ids is not None
                  else codec.encode(suffix) if suffix is not None else [])
    if not prompt_ids and not has_suffix:
        raise UnmaskError("the prompt is empty")
    healing = None
    if request.prompt_ids is None and not has_suffix and config.token_healing:
        healed = codec.heal(prompt_ids)
        if healed is not None:
            prompt_ids, healing = healed
    if codec.bos_id is not None and getattr(request, "add_bos", True):
        prompt_ids = [codec.bos_id] + prompt_ids
    if has_suffix and cfg.attention == "block_causal":
        raise UnmaskError("this model cannot infill (block_causal attention sees no suffix); drop the suffix")
    if has_suffix and cfg.attention == "causal":
        prompt_ids, suffix_ids = infill.fim_prompt(prompt_ids, suffix_ids), []
    if has_suffix and cfg.shift_logits and not prompt_ids:
        raise UnmaskError("infilling at the very start needs a prefix for a model with shifted logits")
    if cfg.attention != "causal" and cfg.mask_token_id is None:
        raise UnmaskError("the model's config.json has no mask_token_id, so it cannot be sampled as a diffusion model")
    resolve_cache(config.cache, cfg.attention)
    if config.stop_token_ids is None:
        config = config.replace(stop_token_ids=codec.default_stop_ids)
    outside = [t for t in config.stop_token_ids if t >= cfg.vocab_size]
    if outside:
        raise UnmaskError(f"stop_token_ids: {outside[0]} is outside the model's vocabulary of {cfg.vocab_size}")
    resolve_block_length(config.block_length, cfg.attention, cfg.block_size)
    context = cfg.max_position_embeddings
    used = len(prompt_ids) + len(suffix_ids)
    if used >= context:
        what = "prompt and suffix" if has_suffix else "prompt"
        verb = "do" if has_suffix else "does"
        raise UnmaskError(f"the {what} ({used} tokens) {verb} not fit the model's context of {context} tokens")
    budget = min(config.max_new_tokens, context - used)
    if not has_suffix or cfg.attention == "causal":
        block = None
        if config.stop_at_block_end and not has_suffix:
            text = request.prompt if request.prompt is not None else codec.decode(list(request.prompt_ids))
            block = BlockScope.of_prompt(text)
        return [Row(request_id, config, prompt_ids, budget, kind="fim" if has_suffix else "complete",
                    healing=healing, block=block, newline_moved=moved)]
    lengths = infill.candidate_lengths(config, budget)
    return [Row(request_id, config, prompt_ids, m, suffix_ids, "middle", candidate=len(lengths) > 1,
                newline_moved=moved) for m in lengths]


def make_decoder(model: torch.nn.Module, codec: Codec, rows: list[Row]):
    """A fresh decoder for rows that share their batch-level settings."""
    cfg = model.config
    first = rows[0].config
    cache = resolve_cache(first.cache, cfg.attention)
    device = next(model.parameters()).device
    first_allowed = [r.healing.vocab_mask(cfg.vocab_size, device) if r.healing else None for r in rows]
    if cfg.attention == "causal":
        settings = RowSettings.from_configs([r.config for r in rows], 1, device)
        return ARDecoder(model, [r.prompt_ids for r in rows], [r.answer_len for r in rows], settings, cache=cache,
                         pad_id=codec.pad_id, device=device, first_allowed=first_allowed)
    block_length = resolve_block_length(first.block_length, cfg.attention, cfg.block_size)
    canvas = build_canvas([r.prompt_ids for r in rows], [r.answer_len for r in rows], [r.suffix_ids for r in rows],
                          mask_id=cfg.mask_token_id, pad_id=codec.pad_id, block_length=block_length,
                          align=cfg.block_size if cfg.attention == "block_causal" else None, device=device,
                          first_allowed=first_allowed)
    settings = RowSettings.from_configs([r.config for r in rows], canvas.block_length, device)
    return DiffusionDecoder(model, canvas, settings, cache=cache, refresh_every=first.refresh_every,
                            eos_fill=[r.kind != "middle" for r in rows])


@dataclass
class _Live:
    """Host-side state of one row in the decoder."""

    row: Row
    start: float
    scan: StopScan
    final: FinalText
    seen: int = -1  # committed length last decoded
    text: str = ""  # committed text at `seen`


class BatchRunner:
    def __init__(self, model: torch.nn.Module, tokenizer: Any = None, *, emit: bool = False, drafts: bool = False,
                 placeholder: str = MASK_PLACEHOLDER):
        """emit: produce streaming events (text increments); drafts: also render each row's draft every step."""
        self.model, self.codec = model, Codec(tokenizer, model.config)
        self.emit, self.drafts, self.placeholder = emit, drafts, placeholder
        self.decoder = None
        self.live: list[_Live] = []  # decoder row b is live[b]
        self.pending: list[Row] = []
        self.batch_key: tuple | None = None

    def plan(self, request_id: Hashable, request, config: SamplerConfig) -> list[Row]:
        return plan_rows(self.model, self.codec, request_id, request, config)

    @property
    def size(self) -> int:
        """Rows decoding or waiting to join."""
        return len(self.live) + len(self.pending)

    @property
    def busy(self) -> bool:
        return bool(self.pending) or (self.decoder is not None and not self.decoder.finished)

    def admit(self, rows: list[Row]) -> None:
        """Queue rows; they join at the next chance (a block boundary, for diffusion batches)."""
        if not self.busy:
            self.batch_key = None
        for row in rows:
            key = row.config.batch_key()
            if self.batch_key is None:
                self.batch_key = key
            if key != self.batch_key:
                raise ValueError(f"rows with batch settings {key} cannot join a batch with {self.batch_key}")
        self.pending.extend(rows)

    def cancel(self, request_id: Hashable) -> None:
        """Drop a request's rows (queued or running) before the next step; it produces no result."""
        self.pending = [r for r in self.pending if r.request != request_id]
        keep = [b for b, lv in enumerate(self.live) if lv.row.request != request_id]
        if len(keep) < len(self.live):
            self._keep(keep)

    def step(self) -> list[Update]:
        """Admit what may join, run one forward pass, and report progress and finished rows."""
        self._join()
        dec = self.decoder
        if dec is None or dec.finished:
            return []
        dec.step()
        poll = dec.poll()
        hits = []
        for b, lv in enumerate(self.live):
            if (lv.row.config.stop or lv.row.block or self._streams(lv.row)) and poll.committed[b] != lv.seen:
                lv.seen = poll.committed[b]
                lv.text = lv.row.text(self.codec.decode, self._final_ids(dec.answer_ids(b, lv.seen), lv.row))
                if not poll.done[b] and lv.scan.scan(lv.text) is not None:
                    hits.append(b)
        if hits:
            dec.finish_rows(hits)
            poll = dec.poll()
        done = [b for b, d in enumerate(poll.done) if d or dec.finished]
        counters = dec.counters() if done else {}
        candidates = [b for b in done if self.live[b].row.candidate]
        junction = dict(zip(candidates, dec.junction_logprob(candidates, infill.JUNCTION_TOKENS))) if candidates else {}
        now = time.perf_counter()
        updates = []
        for b, lv in enumerate(self.live):
            if b in done:
                outcome = self._outcome(b, lv, poll.committed[b], counters, now - lv.start)
                if b in junction:
                    outcome.junction, outcome.forwards = junction[b], outcome.forwards + 1
                final_text = lv.final.update(outcome.text, final=True) if self.emit else ""
                updates.append(Update(lv.row, outcome=outcome, final_text=final_text, step=dec.num_steps))
            elif self._streams(lv.row):
                delta = lv.final.update(lv.text)
                draft = None
                if self.drafts:
                    draft = render_draft(*dec.draft_ids(b), self.codec.decode, self.placeholder)
                    draft = lv.row.healing.strip(draft) if lv.row.healing else draft
                if delta or self.drafts:
                    updates.append(Update(lv.row, Event(lv.row.request, dec.num_steps, delta, draft),
                                          step=dec.num_steps))
        if dec.finished:
            self.live = []  # every row was reported done above
        elif done:
            self._keep([b for b in range(len(self.live)) if b not in done])
        return updates

    # ----------------------------------------------------------------- internals

    def _streams(self, row: Row) -> bool:
        return self.emit and not row.candidate

    def _join(self) -> None:
        if not self.pending:
            return
        now = time.perf_counter()
        if self.decoder is None or self.decoder.finished:
            self.decoder, self.live = make_decoder(self.model, self.codec, self.pending), []
        elif self.decoder.at_block_boundary:
            self.decoder.merge(make_decoder(self.model, self.codec, self.pending))
        else:
            return
        self.live += [_Live(r, now, StopScan(r.config.stop, r.block), FinalText(r.config.stop, r.block is not None))
                      for r in self.pending]
        self.pending = []
        self.decoder.poll()

    def _keep(self, keep: list[int]) -> None:
        self.decoder.select_rows(keep)
        self.live = [self.live[b] for b in keep]
        if keep:
            self.decoder.poll()

    def _final_ids(self, ids: list[int], row: Row) -> list[int]:
        """The answer's tokens up to its end: before its first stop token, or (a diffusion middle) without
        filler tokens (stop tokens, padding)."""
        c = self.codec
        if row.kind == "middle":
            return infill.strip_fillers(ids, {c.eos_id, c.pad_id, c.mask_id, *row.config.stop_token_ids})
        ids, _ = cut_at(ids, row.config.stop_token_ids)
        return [t for t in ids if t != c.mask_id]

    def _outcome(self, b: int, lv: _Live, committed: int, counters: dict, wall: float) -> Outcome:
        row, dec, c = lv.row, self.decoder, self.codec
        raw = dec.answer_ids(b, committed)
        if row.kind == "middle":
            ended = True  # the middle always ends at the suffix
        elif isinstance(dec, ARDecoder):
            ended = committed < row.answer_len  # it stopped on end-of-text before its budget
        else:
            ended = cut_at(raw, row.config.stop_token_ids)[1]
        ids = self._final_ids(raw, row)
        text = row.text(c.decode, ids)
        stop = StopScan(row.config.stop, row.block).scan(text) if row.config.stop or row.block else None
        if stop is not None:
            covering = tokens_covering(ids, lambda part: row.text(c.decode, part), stop)
            text, ids, ended = text[:stop], ids[:covering], True
        return Outcome(ids, text, "stop" if ended else "length", counters["forwards"][b], counters["revealed"][b],
                       counters["logprob"][b], wall)
