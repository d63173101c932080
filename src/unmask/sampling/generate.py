"""The public sampling API: `generate(model, tokenizer, requests, config)` and `stream(...)`.

    from unmask.model import load_model
    from unmask.sampling import Request, SamplerConfig, generate
    lm = load_model("default")
    [result] = generate(lm.model, lm.tokenizer, ["def fibonacci(n):"], SamplerConfig(policy="threshold"))
    print(result.text, result.stats.tokens_per_forward)

Requests may each carry their own SamplerConfig (seed, temperature, policy, stops, ...); requests whose
batch-level settings (block_length, cache, refresh_every) agree share a batch. Diffusion models run on
DiffusionDecoder, autoregressive ones on ARDecoder; both are driven by the same loop (`_drive`), which
handles stop strings, streaming events, per-request statistics and lets finished rows leave the batch.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Iterator

import torch

from ..errors import UnmaskError
from . import infill
from .ar_decoder import ARDecoder
from .canvas import build_canvas
from .config import SamplerConfig, resolve_block_length, resolve_cache
from .diffusion_decoder import DiffusionDecoder
from .policies import RowSettings
from .stopping import StopScan, cut_at, tokens_covering
from .streaming import MASK_PLACEHOLDER, Event, FinalText, render_draft


@dataclass
class Request:
    prompt: str | None = None
    suffix: str | None = None  # set: fill the middle between prompt and suffix
    config: SamplerConfig | None = None  # None: the config given to generate()
    prompt_ids: list[int] | None = None  # token ids instead of text (then no tokenizer is needed)
    suffix_ids: list[int] | None = None


@dataclass
class Stats:
    forward_passes: int  # passes in which this request had a position to decide
    tokens: int  # tokens of the returned answer
    wall_time_s: float  # from the start of its batch to its completion

    @property
    def tokens_per_forward(self) -> float:
        return self.tokens / self.forward_passes if self.forward_passes else 0.0

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.wall_time_s if self.wall_time_s > 0 else 0.0

    def to_dict(self) -> dict[str, float]:
        return {"forward_passes": self.forward_passes, "tokens": self.tokens,
                "tokens_per_forward": round(self.tokens_per_forward, 4), "wall_time_s": round(self.wall_time_s, 6),
                "tokens_per_s": round(self.tokens_per_s, 3)}


@dataclass
class Result:
    text: str  # the answer (for infilling: the middle alone)
    token_ids: list[int]
    finish_reason: str  # "stop" (end-of-text or a stop string) or "length"
    stats: Stats
    prompt_tokens: int
    infill_length: int | None = None  # middle slots of the chosen candidate (diffusion infilling)


@dataclass
class _Row:
    """One row of a batch: a request, or one candidate length of an infilling request."""

    request: int
    config: SamplerConfig
    prompt_ids: list[int]
    answer_len: int
    suffix_ids: list[int] = field(default_factory=list)
    kind: str = "complete"  # "complete"; "fim": autoregressive infilling; "middle": diffusion infilling
    candidate: bool = False  # one of several candidates of one request (no streaming events)


@dataclass
class _Outcome:
    ids: list[int]
    text: str
    finish_reason: str
    forwards: int
    revealed: int
    logprob: float
    wall: float
    junction: float = 0.0  # infilling candidates: see infill.py


class _Codec:
    """Text <-> ids with the model's special tokens; works without a tokenizer for id-only requests."""

    def __init__(self, tokenizer: Any, model_config):
        self.tokenizer = tokenizer
        self.eos_id = model_config.eos_token_id
        self.mask_id = model_config.mask_token_id
        self.pad_id = next((t for t in (model_config.pad_token_id, model_config.eos_token_id) if t is not None), 0)
        self.bos_id = model_config.bos_token_id

    def encode(self, text: str) -> list[int]:
        if self.tokenizer is None:
            raise UnmaskError("a text request needs a tokenizer (or pass prompt_ids)")
        return list(self.tokenizer.encode(text, add_special_tokens=False).ids)

    def decode(self, ids: list[int]) -> str:
        if self.tokenizer is None:
            return ""
        return self.tokenizer.decode(ids, skip_special_tokens=True)


def generate(model: torch.nn.Module, tokenizer: Any, requests, config: SamplerConfig | None = None, *,
             max_batch_size: int | None = None) -> list[Result]:
    """Generate an answer for every request (a string, a Request, or a list of them); results in order."""
    results: dict[int, Result] = {}
    for event in _events(model, tokenizer, requests, config, max_batch_size, emit=False, drafts=False):
        results[event.index] = event.result
    return [results[i] for i in range(len(results))]


def stream(model: torch.nn.Module, tokenizer: Any, requests, config: SamplerConfig | None = None, *,
           drafts: bool = True, mask_placeholder: str = MASK_PLACEHOLDER,
           max_batch_size: int | None = None) -> Iterator[Event]:
    """Events after every step: newly final text, and (drafts=True) each request's current draft.

    The last event of a request has done=True and its Result. An infilling request whose middle
    length is unknown decodes several candidates and reports only its final event.
    """
    yield from _events(model, tokenizer, requests, config, max_batch_size, emit=True, drafts=drafts,
                       placeholder=mask_placeholder)


def _events(model, tokenizer, requests, config, max_batch_size, *, emit: bool, drafts: bool,
            placeholder: str = MASK_PLACEHOLDER) -> Iterator[Event]:
    requests = _as_requests(requests)
    config = config or SamplerConfig()
    codec = _Codec(tokenizer, model.config)
    rows = [row for i, r in enumerate(requests) for row in _plan(model, codec, i, r, r.config or config)]
    wanted: dict[int, int] = {}
    for row in rows:
        wanted[row.request] = wanted.get(row.request, 0) + 1
    finished: dict[int, list[tuple[_Row, _Outcome]]] = {}
    for batch in _batches(rows, max_batch_size):
        for update in _drive(model, codec, batch, emit=emit, drafts=drafts, placeholder=placeholder):
            row = update.row
            if update.outcome is None:
                yield update.event
                continue
            finished.setdefault(row.request, []).append((row, update.outcome))
            if len(finished[row.request]) == wanted[row.request]:
                result = _result(finished.pop(row.request), len(row.prompt_ids))
                text = result.text if row.candidate else update.final_text
                yield Event(row.request, update.step, text, result.text if drafts else None, True, result)


def _as_requests(requests) -> list[Request]:
    if isinstance(requests, (str, Request)):
        requests = [requests]
    out = [Request(prompt=r) if isinstance(r, str) else r for r in requests]
    if not out:
        raise UnmaskError("no requests to generate")
    return out


def _plan(model, codec: _Codec, index: int, request: Request, config: SamplerConfig) -> list[_Row]:
    """Tokenize and check one request; one row, or one per candidate length for a variable-length infill."""
    cfg = model.config
    prompt_ids = list(request.prompt_ids) if request.prompt_ids is not None else codec.encode(request.prompt or "")
    has_suffix = request.suffix is not None or request.suffix_ids is not None
    suffix_ids = (list(request.suffix_ids) if request.suffix_ids is not None
                  else codec.encode(request.suffix) if request.suffix is not None else [])
    if not prompt_ids and not has_suffix:
        raise UnmaskError("the prompt is empty")
    if codec.bos_id is not None:
        prompt_ids = [codec.bos_id] + prompt_ids
    if has_suffix and cfg.attention == "block_causal":
        raise UnmaskError("this model cannot infill (block_causal attention sees no suffix); drop the suffix")
    if has_suffix and cfg.attention == "causal":
        prompt_ids, suffix_ids = infill.fim_prompt(prompt_ids, suffix_ids), []
    if has_suffix and cfg.shift_logits and not prompt_ids:
        raise UnmaskError("infilling at the very start needs a prefix for a model with shifted logits")
    if cfg.attention != "causal" and cfg.mask_token_id is None:
        raise UnmaskError("the model's config.json has no mask_token_id, so it cannot be sampled as a diffusion model")
    context = cfg.max_position_embeddings
    used = len(prompt_ids) + len(suffix_ids)
    if used >= context:
        what = "prompt and suffix" if has_suffix else "prompt"
        raise UnmaskError(f"the {what} ({used} tokens) do not fit the model's context of {context} tokens")
    budget = min(config.max_new_tokens, context - used)
    if not has_suffix or cfg.attention == "causal":
        return [_Row(index, config, prompt_ids, budget, kind="fim" if has_suffix else "complete")]
    lengths = infill.candidate_lengths(config, budget)
    return [_Row(index, config, prompt_ids, m, suffix_ids, "middle", candidate=len(lengths) > 1) for m in lengths]


def _batches(rows: list[_Row], max_batch_size: int | None) -> list[list[_Row]]:
    groups: dict[tuple, list[_Row]] = {}
    for row in rows:
        groups.setdefault(row.config.batch_key(), []).append(row)
    size = max_batch_size or len(rows)
    return [g[i:i + size] for g in groups.values() for i in range(0, len(g), size)]


def make_decoder(model: torch.nn.Module, codec: _Codec, rows: list[_Row]):
    """The decoder for a batch of rows that share their batch-level settings."""
    cfg = model.config
    first = rows[0].config
    cache = resolve_cache(first.cache, cfg.attention)
    device = next(model.parameters()).device
    if cfg.attention == "causal":
        settings = RowSettings.from_configs([r.config for r in rows], 1, device)
        return ARDecoder(model, [r.prompt_ids for r in rows], [r.answer_len for r in rows], settings, cache=cache,
                         eos_id=codec.eos_id, pad_id=codec.pad_id, device=device)
    block_length = resolve_block_length(first.block_length, cfg.attention, cfg.block_size)
    canvas = build_canvas([r.prompt_ids for r in rows], [r.answer_len for r in rows], [r.suffix_ids for r in rows],
                          mask_id=cfg.mask_token_id, pad_id=codec.pad_id, block_length=block_length,
                          align=cfg.block_size if cfg.attention == "block_causal" else None, device=device)
    settings = RowSettings.from_configs([r.config for r in rows], canvas.block_length, device)
    return DiffusionDecoder(model, canvas, settings, cache=cache, refresh_every=first.refresh_every,
                            eos_fill=[r.kind != "middle" for r in rows], eos_id=codec.eos_id)


@dataclass
class _Update:
    row: _Row
    event: Event | None = None  # progress of a request that is still decoding
    outcome: _Outcome | None = None  # the row is done
    final_text: str = ""  # with outcome: the text not yet streamed
    step: int = 0


def _drive(model, codec: _Codec, rows: list[_Row], *, emit: bool, drafts: bool, placeholder: str):
    """Run one batch to the end, yielding an _Update per streamed step of a row and one when it is done."""
    decoder = make_decoder(model, codec, rows)
    start = time.perf_counter()
    live = list(range(len(rows)))  # decoder row b holds rows[live[b]]
    scans = [StopScan(r.config.stop) for r in rows]
    finals = [FinalText(r.config.stop) for r in rows]
    seen = [-1] * len(rows)
    texts = [""] * len(rows)
    while not decoder.finished:
        decoder.step()
        poll = decoder.poll()
        hits = []
        for b, i in enumerate(live):
            row = rows[i]
            if (row.config.stop or (emit and not row.candidate)) and poll.committed[b] != seen[i]:
                seen[i] = poll.committed[b]
                texts[i] = codec.decode(_final_ids(decoder.answer_ids(b, poll.committed[b]), row, codec))
                if not poll.done[b] and scans[i].scan(texts[i]) is not None:
                    hits.append(b)
        if hits:
            decoder.finish_rows(hits)
            poll = decoder.poll()
        done = [b for b, d in enumerate(poll.done) if d or decoder.finished]
        counters = decoder.counters() if done else None
        junction = _junctions(decoder, [b for b in done if rows[live[b]].candidate])
        now = time.perf_counter()
        for b, i in enumerate(live):
            row = rows[i]
            if b in done:
                outcome = _outcome(decoder, codec, b, row, poll.committed[b], counters, now - start)
                if b in junction:
                    outcome.junction = junction[b]
                    outcome.forwards += 1
                final_text = finals[i].update(outcome.text, final=True) if emit else ""
                yield _Update(row, outcome=outcome, final_text=final_text, step=decoder.num_steps)
            elif emit and not row.candidate:
                delta = finals[i].update(texts[i])
                draft = render_draft(*decoder.draft_ids(b), codec.decode, placeholder) if drafts else None
                if delta or drafts:
                    yield _Update(row, Event(row.request, decoder.num_steps, delta, draft))
        if done and not decoder.finished:
            keep = [b for b in range(len(live)) if b not in done]
            decoder.select_rows(keep)
            live = [live[b] for b in keep]
            decoder.poll()


def _junctions(decoder, rows: list[int]) -> dict[int, float]:
    if not rows:
        return {}
    return dict(zip(rows, decoder.junction_logprob(rows, infill.JUNCTION_TOKENS)))


def _final_ids(ids: list[int], row: _Row, codec: _Codec) -> list[int]:
    """The answer's tokens up to its end: before end-of-text, or (a diffusion middle) without filler tokens."""
    if row.kind == "middle":
        return infill.strip_fillers(ids, {codec.eos_id, codec.pad_id, codec.mask_id})
    ids, _ = cut_at(ids, codec.eos_id)
    return [t for t in ids if t != codec.mask_id]


def _outcome(decoder, codec: _Codec, b: int, row: _Row, committed: int, counters: dict, wall: float) -> _Outcome:
    raw = decoder.answer_ids(b, committed)
    if row.kind == "middle":
        ended = True  # the middle always ends at the suffix
    elif isinstance(decoder, ARDecoder):
        ended = committed < row.answer_len  # it stopped on end-of-text before its budget
    else:
        ended = codec.eos_id is not None and codec.eos_id in raw
    ids = _final_ids(raw, row, codec)
    text = codec.decode(ids)
    stop = StopScan(row.config.stop).scan(text) if row.config.stop else None
    if stop is not None:
        text = text[:stop]
        ids = ids[:tokens_covering(ids, codec.decode, stop)]
        ended = True
    return _Outcome(ids, text, "stop" if ended else "length", counters["forwards"][b], counters["revealed"][b],
                    counters["logprob"][b], wall)


def _result(candidates: list[tuple[_Row, _Outcome]], prompt_tokens: int) -> Result:
    """The request's result; for several infilling candidates, the best by infill.candidate_score."""
    row, best = max(candidates, key=lambda ro: infill.candidate_score(ro[1].logprob, ro[1].revealed, ro[1].junction))
    forwards = sum(o.forwards for _, o in candidates)
    wall = max(o.wall for _, o in candidates)
    stats = Stats(forwards, len(best.ids), wall)
    return Result(best.text, best.ids, best.finish_reason, stats, prompt_tokens,
                  row.answer_len if row.kind == "middle" else None)
