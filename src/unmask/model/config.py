"""ModelConfig: every shape and special-token field of an unmask transformer.

Field names follow Hugging Face's Llama/Qwen2 `config.json` keys where one exists, so a
checkpoint's config.json reads like any other decoder's. The diffusion-specific fields
(`attention`, `block_size`, `shift_logits`, `mask_token_id`) are ours.
"""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass
from typing import Any

ATTENTION_MODES = ("bidirectional", "causal", "block_causal")
# Rotary frequency rescalings, with the keys each needs (Hugging Face's `rope_scaling` names).
ROPE_SCALINGS = {
    "linear": ("factor",),
    "llama3": ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings"),
}

# Keys Hugging Face writes into every config.json; accepted on load and ignored.
_HF_BOOKKEEPING_KEYS = {"model_type", "architectures", "torch_dtype", "transformers_version", "unmask_version"}


@dataclass
class ModelConfig:
    vocab_size: int = 8192
    hidden_size: int = 256
    num_hidden_layers: int = 4
    num_attention_heads: int = 4
    num_key_value_heads: int = 4
    head_dim: int | None = None  # None: hidden_size // num_attention_heads
    intermediate_size: int = 704
    max_position_embeddings: int = 1024
    rope_theta: float = 10000.0
    # None, or {"rope_type": one of ROPE_SCALINGS, plus that type's keys}: stretches the rotary
    # frequencies of checkpoints trained for long contexts (LLaMA 3.1+ uses "llama3").
    rope_scaling: dict[str, Any] | None = None
    rms_norm_eps: float = 1e-5
    tie_word_embeddings: bool = False
    attention_bias: bool = False  # bias on q/k/v projections (Qwen2, Dream)
    qk_norm: bool = False  # per-head RMSNorm on q and k (Qwen3, SDAR)
    # "bidirectional": masked diffusion; "causal": autoregressive; "block_causal": block diffusion,
    # where a query sees every key in its own block and in earlier blocks (block = position // block_size).
    attention: str = "bidirectional"
    block_size: int | None = None
    # True when the logit at position i predicts token i + 1 (autoregressive heads, and Dream-style
    # diffusion models adapted from them); False when it predicts token i itself (LLaDA, MDLM).
    shift_logits: bool = False
    mask_token_id: int | None = None
    eos_token_id: int | None = None
    pad_token_id: int | None = None
    bos_token_id: int | None = None

    def __post_init__(self) -> None:
        self.validate()

    @property
    def resolved_head_dim(self) -> int:
        return self.head_dim if self.head_dim is not None else self.hidden_size // self.num_attention_heads

    def validate(self) -> None:
        """Raise ValueError naming the first inconsistent field."""
        positive = ["vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                    "num_key_value_heads", "intermediate_size", "max_position_embeddings"]
        for name in positive:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.attention not in ATTENTION_MODES:
            raise ValueError(f"attention must be one of {ATTENTION_MODES}, got {self.attention!r}")
        if self.attention == "block_causal" and (not isinstance(self.block_size, int) or self.block_size <= 0):
            raise ValueError("attention 'block_causal' needs a positive integer block_size")
        if self.head_dim is None and self.hidden_size % self.num_attention_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not divisible by num_attention_heads "
                             f"{self.num_attention_heads}; set head_dim explicitly")
        if self.resolved_head_dim % 2:
            raise ValueError(f"head_dim must be even for rotary embeddings, got {self.resolved_head_dim}")
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError(f"num_attention_heads {self.num_attention_heads} is not a multiple of "
                             f"num_key_value_heads {self.num_key_value_heads}")
        self._validate_rope_scaling()
        for name in ("mask_token_id", "eos_token_id", "pad_token_id", "bos_token_id"):
            value = getattr(self, name)
            if value is not None and not (0 <= value < self.vocab_size):
                raise ValueError(f"{name} {value} is outside the vocabulary [0, {self.vocab_size})")

    def _validate_rope_scaling(self) -> None:
        rs = self.rope_scaling
        if rs is None:
            return
        if not isinstance(rs, dict) or rs.get("rope_type") not in ROPE_SCALINGS:
            raise ValueError(f"rope_scaling must be null or have rope_type in {tuple(ROPE_SCALINGS)}, got {rs!r}")
        for key in ROPE_SCALINGS[rs["rope_type"]]:
            value = rs.get(key)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise ValueError(f"rope_scaling {rs['rope_type']!r} needs a positive number {key!r}, got {value!r}")
        if rs["rope_type"] == "llama3" and rs["high_freq_factor"] <= rs["low_freq_factor"]:
            raise ValueError("rope_scaling 'llama3' needs high_freq_factor > low_freq_factor")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["model_type"] = "unmask"
        d["architectures"] = ["UnmaskTransformer"]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ModelConfig":
        """Build from a config.json dict. Unknown or missing fields raise ValueError naming them."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known - _HF_BOOKKEEPING_KEYS)
        if unknown:
            hints = []
            for key in unknown:
                close = difflib.get_close_matches(key, known, n=1)
                hints.append(f"{key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
            raise ValueError("unknown field(s) " + ", ".join(hints))
        required = {"vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                    "num_key_value_heads", "intermediate_size", "attention"}
        missing = sorted(required - set(d))
        if missing:
            raise ValueError("missing field(s) " + ", ".join(repr(k) for k in missing))
        if d.get("model_type", "unmask") != "unmask":
            raise ValueError(f"model_type {d['model_type']!r} is not an unmask model")
        return cls(**{k: v for k, v in d.items() if k in known})

    def num_parameters(self) -> int:
        """Parameter count implied by the shapes (embedding counted once when tied)."""
        d, h, kv, hd = self.hidden_size, self.num_attention_heads, self.num_key_value_heads, self.resolved_head_dim
        attn = d * h * hd + 2 * d * kv * hd + h * hd * d
        if self.attention_bias:
            attn += h * hd + 2 * kv * hd
        if self.qk_norm:
            attn += 2 * hd
        mlp = 3 * d * self.intermediate_size
        per_layer = attn + mlp + 2 * d
        emb = self.vocab_size * d * (1 if self.tie_word_embeddings else 2)
        return self.num_hidden_layers * per_layer + emb + d
