"""The decoding cases `unmask bench` compares, and how one case is run and measured.

Cases, all greedy, on the same prompt ids and the same new-token budget:
- `vanilla`: the diffusion model, one token per step, no cache (the LLaDA reference);
- fast cases: each fast policy (threshold, entropy at the model's default settings) with each cache that
  applies (bidirectional: none/prefix/dual/dual-lazy; block_causal: the exact block cache);
- `ar`: the autoregressive twin with its key/value cache.

A pass of a case decodes every prompt in consecutive batches of `batch_size` requests through the public
`stream()` API (the path a server takes); decode_run.py interleaves the cases' timed passes. Forward passes
are counted by a hook on the model (every call, whatever the decoder), tokens from the results; the first
final token of a request is its first streamed text.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch

from ..sampling import Request, SamplerConfig, stream
from .hardware import PeakMemory, synchronize
from .timing import median

FAST_CACHES = {"bidirectional": ("none", "prefix", "dual", "dual-lazy"), "block_causal": ("block",)}


@dataclass
class Case:
    name: str
    kind: str  # "vanilla", "fast" or "ar"
    model: str  # "diffusion" or "ar": which loaded model decodes it
    config: SamplerConfig


def build_cases(attention: str, generation_config: dict, *, has_ar: bool, ar_generation_config: dict | None,
                max_new_tokens: int, seed: int, threshold: float | None = None,
                entropy_bound: float | None = None) -> list[Case]:
    common = dict(max_new_tokens=max_new_tokens, seed=seed, temperature=0.0, top_p=1.0, top_k=0, stop=())
    base = SamplerConfig.from_generation_config(generation_config, **common)
    cases = [Case("vanilla", "vanilla", "diffusion",
                  base.replace(policy="steps", steps_per_block=None, order="confidence", cache="none"))]
    fast = dict(threshold=threshold if threshold is not None else base.threshold,
                entropy_bound=entropy_bound if entropy_bound is not None else base.entropy_bound)
    for policy in ("threshold", "entropy"):
        for cache in FAST_CACHES[attention]:
            cases.append(Case(f"{policy}/{cache}", "fast", "diffusion",
                              base.replace(policy=policy, cache=cache, refresh_every=0, **fast)))
    if has_ar:
        ar = SamplerConfig.from_generation_config(ar_generation_config or {}, **common)
        cases.append(Case("ar/kv", "ar", "ar", ar.replace(cache="kv")))
    return cases


@dataclass
class Pass:
    """One run of a case over every prompt."""

    wall_s: float = 0.0
    tokens: int = 0
    model_calls: int = 0
    request_forwards: int = 0
    first_token_s: list[float] = field(default_factory=list)
    latency_s: list[float] = field(default_factory=list)
    outputs: list[list[int]] = field(default_factory=list)


def batches(prompt_ids: list[list[int]], batch_size: int) -> list[list[list[int]]]:
    """Consecutive groups of batch_size prompts; fewer prompts than one batch are cycled to fill it."""
    if len(prompt_ids) < batch_size:
        prompt_ids = [prompt_ids[i % len(prompt_ids)] for i in range(batch_size)]
    return [prompt_ids[i:i + batch_size] for i in range(0, len(prompt_ids), batch_size)]


class CallCounter:
    """Counts the model's forward calls (a forward hook, removed on close)."""

    def __init__(self, model: torch.nn.Module):
        self.calls = 0
        self.handle = model.register_forward_hook(self._hook)

    def _hook(self, module, inputs, output) -> None:
        self.calls += 1

    def close(self) -> None:
        self.handle.remove()


def decode_group(model, tokenizer, group: list[list[int]], config: SamplerConfig, device: torch.device,
                 counter: CallCounter, into: Pass) -> None:
    """Decode one batch of prompts; add its time, tokens, passes, first-token times and latencies to `into`."""
    requests = [Request(prompt_ids=ids) for ids in group]
    first: list[float | None] = [None] * len(group)
    done: list = [None] * len(group)
    calls = counter.calls
    synchronize(device)
    t0 = time.perf_counter()
    for event in stream(model, tokenizer, requests, config, drafts=False):
        now = time.perf_counter() - t0
        if event.text and first[event.index] is None:
            first[event.index] = now
        if event.done:
            done[event.index] = (event.result, now)
    synchronize(device)
    into.wall_s += time.perf_counter() - t0
    into.model_calls += counter.calls - calls
    for i, (result, at) in enumerate(done):
        into.tokens += len(result.token_ids)
        into.request_forwards += result.stats.forward_passes
        into.first_token_s.append(first[i] if first[i] is not None else at)  # no text at all: its end
        into.latency_s.append(at)
        into.outputs.append(list(result.token_ids))


def warm_up(model, tokenizer, case: Case, prompt_ids: list[list[int]], batch_size: int, device: torch.device,
            runs: int) -> None:
    """Untimed runs of the case's first batch (kernels, allocator and caches settle)."""
    first = batches(prompt_ids, batch_size)[0]
    counter = CallCounter(model)
    try:
        for _ in range(runs):
            decode_group(model, tokenizer, first, case.config, device, counter, Pass())
    finally:
        counter.close()


def timed_pass(model, tokenizer, case: Case, prompt_ids: list[list[int]], batch_size: int,
               device: torch.device) -> Pass:
    """One timed run of the case over every prompt, in consecutive batches of batch_size."""
    counter = CallCounter(model)
    try:
        p = Pass()
        for group in batches(prompt_ids, batch_size):
            decode_group(model, tokenizer, group, case.config, device, counter, p)
        return p
    finally:
        counter.close()


def summarize(case: Case, batch_size: int, passes: list[Pass], peak_bytes: int) -> dict:
    """The row of figures for a case's timed passes (medians; counts from the first pass)."""
    walls = [p.wall_s for p in passes]
    ref = passes[0]
    wall = median(walls)
    return {
        "case": case.name, "kind": case.kind, "model": case.model, "batch_size": batch_size,
        "requests": len(ref.outputs), "tokens": ref.tokens, "forward_passes": ref.model_calls,
        "request_forward_passes": ref.request_forwards,
        "wall_s": wall, "wall_s_repeats": walls,
        "tokens_per_s": ref.tokens / wall if wall > 0 else 0.0,
        "forward_passes_per_s": ref.model_calls / wall if wall > 0 else 0.0,
        "tokens_per_forward": ref.tokens / ref.request_forwards if ref.request_forwards else 0.0,
        "time_to_first_token_s": median([median(p.first_token_s) for p in passes]),
        "latency_s": median([median(p.latency_s) for p in passes]),
        "peak_memory_bytes": peak_bytes,
        "same_outputs_across_repeats": all(p.outputs == ref.outputs for p in passes),
    }


def exact_match(outputs: list[list[int]], reference: list[list[int]]) -> float:
    """Fraction of requests whose tokens equal the reference's (the vanilla one-token-per-step decode)."""
    assert len(outputs) == len(reference)
    return sum(a == b for a, b in zip(outputs, reference)) / len(reference)
