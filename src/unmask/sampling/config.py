"""SamplerConfig: every setting of a decoding run, with its validation and its defaults.

A model folder's `generation_config.json` supplies defaults (`SamplerConfig.from_generation_config`);
explicit arguments or CLI flags override them. Settings come in two kinds:

- per request (each row of a batch may differ): policy, threshold, entropy_bound, steps_per_block, order,
  temperature, top_p, top_k, seed, max_new_tokens, stop, stop_token_ids, infill_length, infill_candidates,
  token_healing, suffix_healing, frequency_penalty, presence_penalty, stop_at_block_end;
- per batch (`BATCH_FIELDS`: rows that differ here run in separate batches): block_length, cache,
  refresh_every, because they fix the layout of the canvas and when the model is called.

Policies (which masked positions a step reveals; at least one while any remain):
- `steps`: LLaDA-style fixed quota, `steps_per_block` steps per block, most confident first (or random order);
- `threshold`: Fast-dLLM rule, every position with confidence >= `threshold`, and always the most confident;
  a threshold above 1 therefore reveals exactly one token per step (the vanilla one-token-per-step baseline);
- `entropy`: EB-sampler rule, the most confident positions while (summed entropy - largest entropy) <= bound.

Caches (`auto` picks the fast exact or standard one for the model's attention):
- bidirectional models: `none`, `prefix`, `dual` (Fast-dLLM; auto = dual), `dual-lazy` (dual without the
  whole-canvas pass at each later block's start; diffusion_decoder.py);
- block_causal models: `none` (recompute) or `block` (exact cache of finished blocks; auto = block);
- causal (autoregressive) models: `none` (recompute everything) or `kv` (incremental; auto = kv).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from ..errors import UnmaskError

POLICIES = ("steps", "threshold", "entropy")
ORDERS = ("confidence", "random")
CACHES = ("auto", "none", "prefix", "dual", "dual-lazy", "block", "kv")
CACHES_FOR_ATTENTION = {
    "bidirectional": ("none", "prefix", "dual", "dual-lazy"),
    "block_causal": ("none", "block"),
    "causal": ("none", "kv"),
}
AUTO_CACHE = {"bidirectional": "dual", "block_causal": "block", "causal": "kv"}
BATCH_FIELDS = ("block_length", "cache", "refresh_every")
DEFAULT_BLOCK_LENGTH = 32
DEFAULT_INFILL_CANDIDATES = (1, 2, 3, 4, 6, 8, 11, 16, 23, 32, 45, 64)  # about sqrt(2) apart


@dataclass
class SamplerConfig:
    policy: str = "threshold"
    threshold: float = 0.9
    entropy_bound: float = 0.5  # nats; EB-sampler's gamma (0 reveals one token per step)
    steps_per_block: int | None = None  # `steps` policy; None: one token per step
    order: str = "confidence"  # `steps` policy: most confident first, or uniformly random
    block_length: int | None = None  # None: 32, or a block_causal model's block_size; 0: the whole answer at once
    cache: str = "auto"
    refresh_every: int = 0  # prefix/dual(-lazy): also refresh the whole cache every N steps inside a block (0: never)
    temperature: float = 0.0  # 0: greedy
    top_p: float = 1.0
    top_k: int = 0  # 0: no top-k filter
    seed: int = 0
    max_new_tokens: int = 128
    stop: tuple[str, ...] = ()
    # Token ids that end an answer (any of them). None: the model's defaults, i.e. config.json's eos_token_id
    # plus the ids its generation_config.json lists (instruct models often have several end tokens);
    # (): none, so every answer runs to max_new_tokens (as vLLM's ignore_eos).
    stop_token_ids: tuple[int, ...] | None = None
    infill_length: int | None = None  # infilling: the middle's length in tokens; None: choose among candidates
    infill_candidates: tuple[int, ...] = DEFAULT_INFILL_CANDIDATES
    # Completions of text prompts: re-choose the prompt's last token with the answer's first (healing.py), so a
    # prompt that ends inside a merged token ("):" of "):\n") does not put the model off its training data.
    token_healing: bool = True
    # Infilling from text: a suffix that starts with a newline gives that newline to the middle (the model sees the
    # suffix from the next line on; one trailing newline comes off the middle's text), so the middle's last token
    # may merge the line's end with its newline ("):" + newline is one token) as in training text (infill.py).
    suffix_healing: bool = True
    # OpenAI's penalties, on the tokens of the answer so far (for a diffusion row: those already revealed):
    # a token's logit drops by frequency_penalty x its count + presence_penalty if it occurs at all.
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    # Completions of Python text prompts: end the answer where the indented block the prompt opens or is inside
    # ends (stopping.BlockScope), as an editor's "complete this function" does. Off by default (an API
    # completion runs to its stops and budget); `unmask generate` turns it on.
    stop_at_block_end: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.stop, str):
            self.stop = (self.stop,)
        self.stop = tuple(self.stop)
        if isinstance(self.stop_token_ids, int) and not isinstance(self.stop_token_ids, bool):
            self.stop_token_ids = (self.stop_token_ids,)
        if self.stop_token_ids is not None and not isinstance(self.stop_token_ids, str):
            self.stop_token_ids = tuple(self.stop_token_ids)
        self.infill_candidates = tuple(self.infill_candidates)
        self.validate()

    def validate(self) -> None:
        """Raise UnmaskError naming the first bad setting."""
        if self.policy not in POLICIES:
            raise UnmaskError(f"policy must be one of {', '.join(POLICIES)}, got {self.policy!r}")
        if self.order not in ORDERS:
            raise UnmaskError(f"order must be one of {', '.join(ORDERS)}, got {self.order!r}")
        if self.cache not in CACHES:
            raise UnmaskError(f"cache must be one of {', '.join(CACHES)}, got {self.cache!r}")
        _number(self.threshold, "threshold", low=0.0, low_open=True)
        _number(self.entropy_bound, "entropy_bound", low=0.0)
        _number(self.temperature, "temperature", low=0.0)
        _number(self.top_p, "top_p", low=0.0, low_open=True, high=1.0)
        _number(self.frequency_penalty, "frequency_penalty", low=-2.0, high=2.0)
        _number(self.presence_penalty, "presence_penalty", low=-2.0, high=2.0)
        for name in ("top_k", "refresh_every", "seed"):
            _integer(getattr(self, name), name, low=0)
        _integer(self.max_new_tokens, "max_new_tokens", low=1)
        for name in ("steps_per_block", "infill_length"):
            if getattr(self, name) is not None:
                _integer(getattr(self, name), name, low=1)
        if self.block_length is not None:
            _integer(self.block_length, "block_length", low=0)
        for name in ("token_healing", "suffix_healing", "stop_at_block_end"):
            if not isinstance(getattr(self, name), bool):
                raise UnmaskError(f"{name} must be true or false, got {getattr(self, name)!r}")
        if not self.infill_candidates:
            raise UnmaskError("infill_candidates must list at least one length")
        for m in self.infill_candidates:
            _integer(m, "infill_candidates", low=1)
        for s in self.stop:
            if not isinstance(s, str) or not s:
                raise UnmaskError(f"stop strings must be non-empty strings, got {s!r}")
        if self.stop_token_ids is not None:
            if not isinstance(self.stop_token_ids, tuple):
                raise UnmaskError(f"stop_token_ids must be a list of token ids, got {self.stop_token_ids!r}")
            for t in self.stop_token_ids:
                _integer(t, "stop_token_ids", low=0)

    def to_dict(self) -> dict[str, Any]:
        """Every setting, tuples as lists: ready for JSON (results, provenance)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    def replace(self, **changes: Any) -> "SamplerConfig":
        return dataclasses.replace(self, **changes)

    def batch_key(self) -> tuple:
        return tuple(getattr(self, name) for name in BATCH_FIELDS)

    @classmethod
    def from_generation_config(cls, generation_config: dict[str, Any] | None, **overrides: Any) -> "SamplerConfig":
        """Defaults from a model folder's generation_config.json, then `overrides` (None values are ignored).

        Keys that are not SamplerConfig fields (special-token ids, Hugging Face's own keys) are skipped;
        `block_size` is read as `block_length` and `steps` as `steps_per_block`. Without `stop_token_ids`,
        Hugging Face's `eos_token_id` (one id or a list) gives the stop tokens. (model.load_model already
        puts the full default list, config.json's end-of-text id included, under `stop_token_ids`.)
        """
        names = {f.name for f in dataclasses.fields(cls)}
        aliases = {"block_size": "block_length", "steps": "steps_per_block", "stop_strings": "stop"}
        generation_config = dict(generation_config or {})
        eos = generation_config.get("eos_token_id")
        if generation_config.get("stop_token_ids") is None and eos is not None:
            generation_config["stop_token_ids"] = eos if isinstance(eos, list) else [eos]
        values: dict[str, Any] = {}
        for key, value in generation_config.items():
            key = aliases.get(key, key)
            if key in names and value is not None:
                listed = key in ("stop", "stop_token_ids", "infill_candidates") and isinstance(value, list)
                values[key] = tuple(value) if listed else value
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)


def resolve_block_length(block_length: int | None, attention: str, model_block_size: int | None) -> int | None:
    """Block length in tokens for this model (None: the whole answer as one block)."""
    if attention == "block_causal":
        if block_length not in (None, model_block_size):
            raise UnmaskError(f"block_length {block_length} differs from this block-diffusion model's block_size "
                              f"{model_block_size}; leave it unset or set it to {model_block_size}")
        return model_block_size
    if block_length is None:
        return DEFAULT_BLOCK_LENGTH
    return block_length or None


def resolve_cache(cache: str, attention: str) -> str:
    """The concrete cache for a model with this attention mode, or UnmaskError if the pair makes no sense."""
    allowed = CACHES_FOR_ATTENTION[attention]
    if cache == "auto":
        return AUTO_CACHE[attention]
    if cache not in allowed:
        raise UnmaskError(f"cache {cache!r} does not apply to a {attention} model (use one of "
                          f"{', '.join(('auto',) + allowed)})")
    return cache


def _number(value: Any, name: str, low: float, low_open: bool = False, high: float | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise UnmaskError(f"{name} must be a finite number, got {value!r}")
    if value < low or (low_open and value == low) or (high is not None and value > high):
        bounds = f"{'(' if low_open else '['}{low:g}, {'inf)' if high is None else f'{high:g}]'}"
        raise UnmaskError(f"{name} must be in {bounds}, got {value!r}")


def _integer(value: Any, name: str, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise UnmaskError(f"{name} must be an integer >= {low}, got {value!r}")
