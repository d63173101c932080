"""The public sampling API: `generate(model, tokenizer, requests, config)` and `stream(...)`.

    from unmask.model import load_model
    from unmask.sampling import Request, SamplerConfig, generate
    lm = load_model("default")
    [result] = generate(lm.model, lm.tokenizer, ["def fibonacci(n):"], SamplerConfig(policy="threshold"))
    print(result.text, result.stats.tokens_per_forward)

Requests may each carry their own SamplerConfig (seed, temperature, policy, stops, ...); requests whose
batch-level settings (block_length, cache, refresh_every) agree share a batch. Diffusion models run on
DiffusionDecoder, autoregressive ones on ARDecoder, both driven by a BatchRunner (runner.py), which
handles stop strings, streaming events, per-request statistics and lets finished rows leave the batch.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any, Iterator

import torch

from ..errors import UnmaskError
from . import infill
from .config import SamplerConfig
from .runner import BatchRunner, Outcome, Row
from .streaming import MASK_PLACEHOLDER, Event


@dataclass
class Request:
    prompt: str | None = None
    suffix: str | None = None  # set: fill the middle between prompt and suffix
    config: SamplerConfig | None = None  # None: the config given to generate()
    prompt_ids: list[int] | None = None  # token ids instead of text (then no tokenizer is needed)
    suffix_ids: list[int] | None = None  # with `suffix` too: the tokens of infill.healed_suffix(suffix, config)
    # False: the prompt carries its own special tokens (a chat template's, as transformers' apply_chat_template
    # leaves them to the template), so the model's beginning-of-text token is not prepended.
    add_bos: bool = True


@dataclass
class Stats:
    forward_passes: int  # passes in which this request had a position to decide
    tokens: int  # tokens of the returned answer
    wall_time_s: float  # from joining its batch to its completion

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
    finish_reason: str  # "stop" (a stop token such as end-of-text, or a stop string) or "length"
    stats: Stats
    prompt_tokens: int
    infill_length: int | None = None  # middle slots of the chosen candidate (diffusion infilling)


def generate(model: torch.nn.Module, tokenizer: Any, requests, config: SamplerConfig | None = None, *,
             max_batch_size: int | None = None) -> list[Result]:
    """Generate an answer for every request (a string, a Request, or a list of them); results in order.

    max_batch_size: decode at most this many rows at once (an infilling request of unknown length takes
    one row per candidate length); the others wait and join as rows finish.
    """
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
    runner = BatchRunner(model, tokenizer, emit=emit, drafts=drafts, placeholder=placeholder)
    rows = [row for i, r in enumerate(requests) for row in runner.plan(i, r, r.config or config)]
    wanted: dict[int, int] = {}
    for row in rows:
        wanted[row.request] = wanted.get(row.request, 0) + 1
    finished: dict[int, list[tuple[Row, Outcome]]] = {}
    for group in _groups(rows):
        # Keep up to max_batch_size rows decoding: queued rows join as others finish.
        queue = deque(group)
        limit = max_batch_size or len(group)
        while queue or runner.busy:
            room = limit - runner.size
            if room > 0 and queue:
                runner.admit([queue.popleft() for _ in range(min(room, len(queue)))])
            for update in runner.step():
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


def _groups(rows: list[Row]) -> list[list[Row]]:
    """Rows grouped by their batch-level settings (each group runs as its own batch)."""
    groups: dict[tuple, list[Row]] = {}
    for row in rows:
        groups.setdefault(row.config.batch_key(), []).append(row)
    return list(groups.values())


def _result(candidates: list[tuple[Row, Outcome]], prompt_tokens: int) -> Result:
    """The request's result; for several infilling candidates, the best by infill.candidate_score."""
    row, best = max(candidates, key=lambda ro: infill.candidate_score(ro[1].logprob, ro[1].revealed, ro[1].junction))
    forwards = sum(o.forwards for _, o in candidates)
    wall = max(o.wall for _, o in candidates)
    stats = Stats(forwards, len(best.ids), wall)
    return Result(best.text, best.ids, best.finish_reason, stats, prompt_tokens,
                  row.answer_len if row.kind == "middle" else None)
