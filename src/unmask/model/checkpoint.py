"""Checkpoint folders in the Hugging Face layout, written atomically and validated on load.

A checkpoint is a folder:
    config.json                     ModelConfig fields (HF key names) + model_type "unmask"
    model.safetensors               all weights, or, above `max_shard_bytes`:
    model-0000N-of-0000M.safetensors + model.safetensors.index.json  ({"weight_map": {name: file}})
    tokenizer.json                  when a tokenizer is given
    generation_config.json          sampler defaults (and the special token ids)
Tensor names are the Qwen2/LLaMA ones; a tied LM head is stored once, as model.embed_tokens.weight.

Writes go to a hidden temporary folder beside the target and are renamed into place, so a crash
never leaves a folder that loads half-written. Every load problem raises CheckpointError naming
the file and what is wrong with it.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Any, Callable

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from ..errors import UnmaskError
from .config import ModelConfig
from .transformer import Transformer

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
TOKENIZER_FILE = "tokenizer.json"
GENERATION_CONFIG_FILE = "generation_config.json"
DEFAULT_MAX_SHARD_BYTES = 2 * 1024**3


class CheckpointError(UnmaskError, ValueError):
    """A checkpoint folder that cannot be loaded; the message names the file and the problem."""


def _state_dict_for_saving(model: Transformer) -> dict[str, torch.Tensor]:
    sd = model.state_dict()
    if model.config.tie_word_embeddings:
        sd.pop("lm_head.weight", None)
    return {k: v.detach().contiguous().cpu() for k, v in sd.items()}


def _plan_shards(sd: dict[str, torch.Tensor], max_shard_bytes: int) -> list[dict[str, torch.Tensor]]:
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for name, t in sd.items():
        nbytes = t.numel() * t.element_size()
        if shards[-1] and size + nbytes > max_shard_bytes:
            shards.append({})
            size = 0
        shards[-1][name] = t
        size += nbytes
    return shards


def _write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n")


def atomic_folder(target: str | os.PathLike) -> "_AtomicFolder":
    """Context manager yielding a temporary folder that replaces `target` only if the block succeeds."""
    return _AtomicFolder(Path(target))


class _AtomicFolder:
    def __init__(self, target: Path):
        self.target = target

    def __enter__(self) -> Path:
        self.target.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = Path(tempfile.mkdtemp(prefix=f".{self.target.name}.tmp-", dir=self.target.parent))
        return self.tmp

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            return
        old = None
        if self.target.exists():
            old = self.target.parent / f".{self.target.name}.old-{uuid.uuid4().hex[:8]}"
            os.replace(self.target, old)
        os.replace(self.tmp, self.target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


def save_pretrained(
    model: Transformer,
    directory: str | os.PathLike,
    *,
    tokenizer: Any | None = None,
    generation_config: dict[str, Any] | None = None,
    max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES,
    extra_files: dict[str, str | bytes] | None = None,
) -> Path:
    """Write `model` (and optionally a `tokenizers.Tokenizer` or a path to a tokenizer.json) to `directory`."""
    directory = Path(directory)
    sd = _state_dict_for_saving(model)
    shards = _plan_shards(sd, max_shard_bytes)
    with atomic_folder(directory) as tmp:
        config = model.config.to_dict()
        config["torch_dtype"] = str(next(iter(sd.values())).dtype).replace("torch.", "")
        _write_json(tmp / CONFIG_FILE, config)
        metadata = {"format": "pt"}
        if len(shards) == 1:
            save_file(shards[0], str(tmp / WEIGHTS_FILE), metadata=metadata)
        else:
            weight_map = {}
            total = 0
            for i, shard in enumerate(shards, start=1):
                name = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
                save_file(shard, str(tmp / name), metadata=metadata)
                for k, t in shard.items():
                    weight_map[k] = name
                    total += t.numel() * t.element_size()
            _write_json(tmp / INDEX_FILE, {"metadata": {"total_size": total}, "weight_map": weight_map})
        if tokenizer is not None:
            if isinstance(tokenizer, (str, os.PathLike)):
                shutil.copyfile(tokenizer, tmp / TOKENIZER_FILE)
            else:
                tokenizer.save(str(tmp / TOKENIZER_FILE))
        gen = dict(generation_config or {})
        for key in ("mask_token_id", "eos_token_id", "pad_token_id", "bos_token_id"):
            gen.setdefault(key, getattr(model.config, key))
        _write_json(tmp / GENERATION_CONFIG_FILE, gen)
        for name, content in (extra_files or {}).items():
            mode = "wb" if isinstance(content, bytes) else "w"
            with open(tmp / name, mode) as f:
                f.write(content)
    return directory


def read_config_json(directory: str | os.PathLike) -> dict[str, Any]:
    """The folder's config.json as a dict (any model_type), or CheckpointError saying what is wrong."""
    directory = Path(directory)
    path = directory / CONFIG_FILE
    if not directory.is_dir():
        raise CheckpointError(f"{directory}: not a folder")
    if not path.is_file():
        raise CheckpointError(f"{path}: missing (not a checkpoint folder?)")
    try:
        raw = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(raw, dict):
        raise CheckpointError(f"{path}: expected a JSON object")
    return raw


def load_config(directory: str | os.PathLike) -> ModelConfig:
    path = Path(directory) / CONFIG_FILE
    raw = read_config_json(directory)
    try:
        return ModelConfig.from_dict(raw)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: {e}") from None


def weight_files(directory: Path) -> dict[str, str]:
    """Map tensor name -> safetensors file name (from the index when sharded)."""
    index = directory / INDEX_FILE
    single = directory / WEIGHTS_FILE
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise CheckpointError(f"{index}: not a valid safetensors index ({e!r})") from None
        for file in sorted(set(weight_map.values())):
            if not (directory / file).is_file():
                raise CheckpointError(f"{directory / file}: missing (listed in {INDEX_FILE})")
        return dict(weight_map)
    if single.is_file():
        return {name: WEIGHTS_FILE for name in _tensor_names(single)}
    raise CheckpointError(f"{directory}: no {WEIGHTS_FILE} or {INDEX_FILE}")


def _tensor_names(path: Path) -> list[str]:
    try:
        with safe_open(str(path), framework="pt") as f:
            return list(f.keys())
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path}: truncated or corrupt safetensors file ({e})") from None


def load_state_dict_shards(directory: Path, device, dtype):
    """Yield (file, {name: tensor}) one shard at a time, tensors already on `device` in `dtype`."""
    files = weight_files(directory)
    for file in sorted(set(files.values())):
        path = directory / file
        tensors = {}
        try:
            with safe_open(str(path), framework="pt", device="cpu") as f:
                for name in f.keys():
                    t = f.get_tensor(name)
                    tensors[name] = t.to(device=device, dtype=dtype if t.is_floating_point() and dtype else t.dtype)
        except (SafetensorError, OSError, ValueError, RuntimeError) as e:
            raise CheckpointError(f"{path}: truncated or corrupt safetensors file ({e})") from None
        yield file, tensors


def load_weights_into(model: torch.nn.Module, directory: Path, device, dtype,
                      rename: Callable[[str], str | None] | None = None) -> None:
    """Fill a `model` (built on the meta device or the CPU) from the folder's shards, checking names and
    shapes file by file.

    `rename` maps a stored tensor name onto the model's name (foreign formats), or to None for a
    tensor the model does not keep (e.g. a duplicate of a tied embedding). Each shard's tensors are
    assigned before the next shard is read, so host memory never holds more than one shard extra.
    """
    expected = {k: v for k, v in model.state_dict().items()}
    if getattr(model.config, "tie_word_embeddings", False):
        expected.pop("lm_head.weight", None)
    seen: set[str] = set()
    for file, stored in load_state_dict_shards(directory, device, dtype):
        tensors = {}
        for stored_name in list(stored):
            t = stored.pop(stored_name)
            name = rename(stored_name) if rename is not None else stored_name
            if name is None:
                continue
            label = repr(name) if name == stored_name else f"{stored_name!r} (read as {name!r})"
            if name not in expected:
                raise CheckpointError(f"{directory / file}: unexpected tensor {label} for this config")
            if name in tensors or name in seen:
                raise CheckpointError(f"{directory / file}: tensor {label} appears twice")
            if tuple(t.shape) != tuple(expected[name].shape):
                raise CheckpointError(f"{directory / file}: tensor {label} has shape {tuple(t.shape)}, "
                                      f"config.json implies {tuple(expected[name].shape)}")
            tensors[name] = t
        del stored
        model.load_state_dict(tensors, strict=False, assign=True)
        seen.update(tensors)
        del tensors
    missing = sorted(set(expected) - seen)
    if missing:
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        raise CheckpointError(f"{directory}: missing tensor(s) {', '.join(missing[:3])}{more}")


# Above this many parameters (400 MB in float32) a model is built on the meta device (build_and_load).
META_BUILD_MIN_PARAMETERS = 100_000_000


def from_pretrained(directory: str | os.PathLike, *, device: str | torch.device = "cpu",
                    dtype: torch.dtype | None = None) -> Transformer:
    """Load an unmask checkpoint folder onto `device` (shard by shard, never a second full copy in RAM)."""
    directory = Path(directory)
    return build_and_load(load_config(directory), directory, device=device, dtype=dtype)


def build_and_load(config: ModelConfig, directory: str | os.PathLike, *, device: str | torch.device = "cpu",
                   dtype: torch.dtype | None = None, rename: Callable[[str], str | None] | None = None) -> Transformer:
    """Build a Transformer for `config` and fill it from the folder's shards.

    A large model is built on the meta device, so that its weights are never held twice. A small one is
    built on the CPU, randomly initialised and then overwritten: the meta device's first use imports torch's
    meta kernels and dynamo (about 1.5 s on a 2-core CPU, a third of `unmask generate` on the default),
    while initialising a few million parameters takes milliseconds.
    """
    with torch.device("meta" if config.num_parameters() > META_BUILD_MIN_PARAMETERS else "cpu"):
        model = Transformer(config)
    load_weights_into(model, Path(directory), device, dtype, rename)
    if config.tie_word_embeddings:
        model.lm_head.weight = model.model.embed_tokens.weight
    return model.eval()


def load_generation_config(directory: str | os.PathLike) -> dict[str, Any]:
    path = Path(directory) / GENERATION_CONFIG_FILE
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path}: not valid JSON ({e})") from None
