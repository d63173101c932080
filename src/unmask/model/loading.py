"""Resolve a model name or folder and load everything a sampler needs from it.

`load_model("default")` and `load_model("default-ar")` are the bundled models shipped under
`unmask/assets/models/`; anything else is a checkpoint folder on disk. Open-weight formats (LLaDA,
Dream, ...) are recognised by config.json's `model_type` and mapped onto the one Transformer class.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..errors import UnmaskError
from .adapters import adapt
from .checkpoint import (GENERATION_CONFIG_FILE, TOKENIZER_FILE, CheckpointError, build_and_load, from_pretrained,
                         load_generation_config, read_config_json)
from .transformer import Transformer

BUNDLED_MODELS_DIR = Path(__file__).resolve().parent.parent / "assets" / "models"
BUNDLED_NAMES = ("default", "default-ar")


@dataclass
class LoadedModel:
    model: Transformer
    tokenizer: Any | None  # tokenizers.Tokenizer, when the folder has tokenizer.json
    generation_config: dict[str, Any] = field(default_factory=dict)
    chat_template: str | None = None
    path: Path | None = None
    name: str = ""
    family: str = "unmask"  # "unmask", or the open-weight family its adapter read (e.g. "llada", "dream")


def resolve_model_path(name_or_path: str | os.PathLike | None) -> tuple[str, Path]:
    """(display name, folder) for a bundled model name, or a path; None means the bundled default."""
    name = str(name_or_path) if name_or_path is not None else "default"
    if name in BUNDLED_NAMES:
        path = BUNDLED_MODELS_DIR / name
        if not (path / "config.json").is_file():
            raise UnmaskError(f"the bundled model {name!r} is not in this install ({path} is missing); "
                              "pass --model DIR with a checkpoint folder")
        return name, path
    path = Path(name).expanduser()
    if not path.exists():
        raise UnmaskError(f"{path}: no such model folder (and not one of the bundled names {', '.join(BUNDLED_NAMES)})")
    return path.name, path


def load_tokenizer_file(path: Path):
    from tokenizers import Tokenizer

    try:
        return Tokenizer.from_file(str(path))
    except Exception as e:  # tokenizers raises a bare Exception subclass for malformed files
        raise CheckpointError(f"{path}: not a valid tokenizer.json ({e})") from None


def _chat_template(path: Path) -> str | None:
    """The Jinja chat template, wherever transformers saved it: tokenizer_config.json's `chat_template`
    (a string, or a list of {"name", "template"} of which "default" is used), else chat_template.jinja."""
    cfg = path / "tokenizer_config.json"
    if cfg.is_file():
        try:
            template = json.loads(cfg.read_text()).get("chat_template")
        except (json.JSONDecodeError, AttributeError) as e:
            raise CheckpointError(f"{cfg}: not a valid tokenizer config ({e})") from None
        if isinstance(template, list):
            named = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}
            template = named.get("default")
        if template is not None and not isinstance(template, str):
            raise CheckpointError(f"{cfg}: chat_template must be a string or a list of named templates")
        if template:
            return template
    jinja = path / "chat_template.jinja"
    return jinja.read_text() if jinja.is_file() else None


def load_model(name_or_path: str | os.PathLike | None = None, *, device: str | torch.device = "cpu",
               dtype: torch.dtype | None = None) -> LoadedModel:
    """Load a bundled model or a checkpoint folder: unmask's own format, or an open-weight one
    (LLaDA, Dream family, Fast-dLLM v2, SDAR, Qwen2/Qwen3/LLaMA) recognised by config.json's model_type.

    dtype None keeps the stored dtype. Weights go shard by shard straight to `device`.
    """
    name, path = resolve_model_path(name_or_path)
    raw = read_config_json(path)
    tok_path = path / TOKENIZER_FILE
    tokenizer = load_tokenizer_file(tok_path) if tok_path.is_file() else None
    chat_template = _chat_template(path)
    if raw.get("model_type", "unmask") == "unmask":
        model = from_pretrained(path, device=device, dtype=dtype)
        generation = with_stop_token_ids(load_generation_config(path), model.config.eos_token_id,
                                         source=path / GENERATION_CONFIG_FILE)
        return LoadedModel(model=model, tokenizer=tokenizer, generation_config=generation,
                           chat_template=chat_template, path=path, name=name)
    adapted = adapt(path, raw, tokenizer)
    model = build_and_load(adapted.config, path, device=device, dtype=dtype, rename=adapted.rename)
    return LoadedModel(model=model, tokenizer=tokenizer, generation_config=adapted.generation_config,
                       chat_template=chat_template, path=path, name=name, family=adapted.family)


def with_stop_token_ids(generation_config: dict[str, Any], eos_token_id: int | None, *,
                        source: str | os.PathLike = GENERATION_CONFIG_FILE) -> dict[str, Any]:
    """The generation config with `stop_token_ids`: config.json's end-of-text id first, then the ids the
    generation config lists under `eos_token_id` (one id or a list, as in Hugging Face's format) and
    `stop_token_ids`, without repeats. Instruct models end a turn with a token other than end-of-text."""
    ids: list[int] = []
    for key in ("eos_token_id", "stop_token_ids"):
        value = generation_config.get(key)
        values = value if isinstance(value, list) else [] if value is None else [value]
        for v in values:
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise CheckpointError(f"{source}: {key} must be a token id or a list of them, "
                                      f"got {value!r}")
        ids += values
    stops: list[int] = []
    for i in [eos_token_id, *ids]:
        if i is not None and i not in stops:
            stops.append(i)
    return {**generation_config, "stop_token_ids": stops}
