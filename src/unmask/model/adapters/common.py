"""What every open-weight adapter shares: the folder it reads, what it returns, and config.json readers.

An adapter turns a foreign checkpoint folder into three things: a ModelConfig for our one
Transformer, a function renaming each stored tensor onto our Qwen2-style names (None drops a
tensor the model does not keep), and the sampler defaults the model's authors use. The weights
themselves are read by `checkpoint.build_and_load`, shard by shard; adapters never touch tensors.

Every problem with a folder raises CheckpointError naming the file and the key.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..checkpoint import CONFIG_FILE, CheckpointError
from ..config import ROPE_SCALINGS, ModelConfig

_REQUIRED = object()


@dataclass
class ForeignFolder:
    """A checkpoint folder in someone else's format, with the files an adapter may consult."""

    path: Path
    config: dict[str, Any]  # config.json
    tokenizer: Any | None = None  # tokenizers.Tokenizer from tokenizer.json, when present
    tokenizer_config: dict[str, Any] = field(default_factory=dict)  # tokenizer_config.json, or {}
    hf_generation_config: dict[str, Any] = field(default_factory=dict)  # the folder's generation_config.json, or {}
    file: str = CONFIG_FILE  # the file `config` came from, for error messages

    @property
    def config_path(self) -> Path:
        return self.path / self.file

    def fail(self, message: str) -> CheckpointError:
        return CheckpointError(f"{self.config_path}: {message}")

    # --- config.json values -------------------------------------------------------------------

    def get(self, key: str, default: Any = _REQUIRED) -> Any:
        if key in self.config and self.config[key] is not None:
            return self.config[key]
        if default is _REQUIRED:
            raise self.fail(f"missing key {key!r}")
        return default

    def positive_int(self, key: str, default: Any = _REQUIRED) -> Any:
        value = self.get(key, default)
        if value is default and default is not _REQUIRED:
            return value
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise self.fail(f"{key!r} must be a positive integer, got {value!r}")
        return value

    def positive_float(self, key: str, default: Any = _REQUIRED) -> float:
        value = self.get(key, default)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
            raise self.fail(f"{key!r} must be a positive number, got {value!r}")
        return float(value)

    def flag(self, key: str, default: bool) -> bool:
        value = self.get(key, default)
        if not isinstance(value, bool):
            raise self.fail(f"{key!r} must be true or false, got {value!r}")
        return value

    def expect(self, key: str, supported: tuple, default: Any) -> Any:
        """The key's value, which must be one of `supported` (the variants our Transformer computes)."""
        value = self.config.get(key, default)
        if value not in supported:
            raise self.fail(f"{key} {value!r} is not supported (supported: {', '.join(map(repr, supported))})")
        return value

    def token_ids(self, key: str) -> list[int]:
        """A special-token id key that may hold one id or a list of them (eos_token_id often does)."""
        value = self.config.get(key)
        values = value if isinstance(value, list) else [] if value is None else [value]
        for v in values:
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise self.fail(f"{key!r} must be a token id or a list of them, got {value!r}")
        return values

    # --- the tokenizer ------------------------------------------------------------------------

    def lookup(self, token: str) -> int | None:
        """The id of `token` in tokenizer.json, or None (no tokenizer, or no such token)."""
        return self.tokenizer.token_to_id(token) if self.tokenizer is not None else None

    def declared(self, key: str) -> int | None:
        """The id of the token tokenizer_config.json declares as `key` (e.g. "pad_token"), or None."""
        value = self.tokenizer_config.get(key)
        if isinstance(value, dict):  # {"content": "<|x|>", "lstrip": false, ...}
            value = value.get("content")
        return self.lookup(value) if isinstance(value, str) else None


def first_present(*ids: int | None) -> int | None:
    return next((i for i in ids if i is not None), None)


def check_token_agrees(folder: ForeignFolder, key: str, token: str) -> None:
    """config.json's `key` and tokenizer.json's id for `token` must agree when both exist."""
    ids = folder.token_ids(key)
    tokenized = folder.lookup(token)
    if ids and tokenized is not None and ids[0] != tokenized:
        raise folder.fail(f"{key} is {ids[0]} but tokenizer.json maps {token!r} to {tokenized}")


def rope_settings(folder: ForeignFolder, default_theta: float) -> tuple[float, dict | None]:
    """(rope_theta, rope_scaling) from either key layout Hugging Face has written.

    transformers < 5 writes `rope_theta` and `rope_scaling` ({"type" or "rope_type": ..., "factor": ...});
    transformers >= 5 writes both into `rope_parameters` ({"rope_type", "rope_theta", ...}).
    """
    params = folder.config.get("rope_parameters")
    if isinstance(params, dict):
        theta = params.get("rope_theta", folder.config.get("rope_theta", default_theta))
        scaling = params
    else:
        theta = folder.positive_float("rope_theta", default_theta)
        scaling = folder.config.get("rope_scaling")
    if isinstance(theta, bool) or not isinstance(theta, (int, float)) or theta <= 0:
        raise folder.fail(f"rope_theta must be a positive number, got {theta!r}")
    if scaling is None:
        return float(theta), None
    if not isinstance(scaling, dict):
        raise folder.fail(f"rope_scaling must be an object or null, got {scaling!r}")
    kind = scaling.get("rope_type", scaling.get("type", "default"))
    if kind == "default":
        return float(theta), None
    if kind not in ROPE_SCALINGS:
        raise folder.fail(f"rope scaling {kind!r} is not supported (supported: default, {', '.join(ROPE_SCALINGS)})")
    normalised = {"rope_type": kind, **{k: scaling.get(k) for k in ROPE_SCALINGS[kind]}}
    return float(theta), normalised


def hf_decoder_fields(folder: ForeignFolder, *, default_theta: float = 10000.0,
                      default_eps: float = 1e-6) -> dict[str, Any]:
    """ModelConfig shape fields from the config.json keys Llama, Qwen2 and Qwen3 share.

    Key names and meanings: transformers' LlamaConfig / Qwen2Config / Qwen3Config. Checkpoints whose
    config asks for something our Transformer does not compute (sliding-window attention, a
    mixture of experts, another activation) are refused rather than run wrongly.
    """
    folder.expect("hidden_act", ("silu",), "silu")
    if folder.config.get("use_sliding_window"):
        raise folder.fail("use_sliding_window true is not supported (sliding-window attention)")
    if folder.config.get("num_experts") or folder.config.get("num_local_experts"):
        raise folder.fail("mixture-of-experts checkpoints are not supported")
    heads = folder.positive_int("num_attention_heads")
    theta, scaling = rope_settings(folder, default_theta)
    return dict(
        vocab_size=folder.positive_int("vocab_size"),
        hidden_size=folder.positive_int("hidden_size"),
        num_hidden_layers=folder.positive_int("num_hidden_layers"),
        num_attention_heads=heads,
        num_key_value_heads=folder.positive_int("num_key_value_heads", heads),
        head_dim=folder.positive_int("head_dim", None),
        intermediate_size=folder.positive_int("intermediate_size"),
        max_position_embeddings=folder.positive_int("max_position_embeddings", 32768),
        rope_theta=theta,
        rope_scaling=scaling,
        rms_norm_eps=folder.positive_float("rms_norm_eps", default_eps),
        tie_word_embeddings=folder.flag("tie_word_embeddings", False),
    )


def make_config(folder: ForeignFolder, **fields: Any) -> ModelConfig:
    try:
        return ModelConfig(**fields)
    except (TypeError, ValueError) as e:
        raise folder.fail(str(e)) from None


def hf_rename(config: ModelConfig) -> Callable[[str], str | None]:
    """Rename for checkpoints already in Qwen2/LLaMA names: identity, minus tensors we do not keep."""

    def rename(name: str) -> str | None:
        if name == "lm_head.weight" and config.tie_word_embeddings:
            return None  # some tied checkpoints store the head too; it is the embedding
        if name.endswith("rotary_emb.inv_freq"):
            return None  # older transformers saved this derived buffer; we compute it
        return name

    return rename


@dataclass
class Adapted:
    """An adapter's reading of a folder (see the module docstring)."""

    family: str
    config: ModelConfig
    rename: Callable[[str], str | None]
    generation_config: dict[str, Any]


def read_json_if_present(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        value = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(value, dict):
        raise CheckpointError(f"{path}: expected a JSON object")
    return value


def token_defaults(config: ModelConfig, stop_token_ids: list[int | None]) -> dict[str, Any]:
    """The special-token part of a generation_config: the config's ids and the deduplicated stop ids."""
    stops: list[int] = []
    for i in [config.eos_token_id, *stop_token_ids]:
        if i is not None and i not in stops:
            stops.append(i)
    return dict(mask_token_id=config.mask_token_id, eos_token_id=config.eos_token_id,
                pad_token_id=config.pad_token_id, bos_token_id=config.bos_token_id, stop_token_ids=stops)


def in_vocab(token_id: int | None, vocab_size: int) -> int | None:
    """A hard-coded fallback id applies only to the real vocabulary; a smaller one simply lacks it."""
    return token_id if token_id is not None and token_id < vocab_size else None


def require_mask(folder: ForeignFolder, mask_id: int | None, token: str) -> None:
    if mask_id is None:
        raise folder.fail(f"no mask token: set mask_token_id, or give tokenizer.json a {token!r} token")
