"""Open-weight checkpoint adapters: run other projects' diffusion (and autoregressive) models as-is.

`adapt(folder)` reads config.json's `model_type` and hands the folder to the adapter for that
family, which returns a ModelConfig for our one Transformer, a tensor rename function (applied
while the weights are loaded shard by shard) and the sampler defaults the model's authors use.

- `llada`: LLaDA 8B Base/Instruct, LLaDA 1.5 (llada.py): bidirectional, unshifted logits;
- `Dream`: Dream, Dream-Coder, DiffuCoder, DreamOn (dream.py): bidirectional, shifted logits;
- `Fast_dLLM_Qwen`: Fast-dLLM v2 (block_diffusion.py): block-causal, shifted logits;
- `sdar`: SDAR (block_diffusion.py): block-causal, unshifted logits, Qwen3 q/k norms;
- `qwen2`, `qwen3`, `llama` (hf_causal.py): autoregressive baselines (causal, shifted); a qwen2
  folder whose tokenizer declares a mask token is Open-dCoder (bidirectional, shifted).

Sampler defaults (`LoadedModel.generation_config`) use sampling.SamplerConfig's keys, each only where
the authors set one: policy ("steps" | "threshold"), block_size (read as block_length), steps_per_block,
threshold, temperature, top_p, top_k, max_new_tokens; plus the token ids mask_token_id, eos_token_id,
pad_token_id, bos_token_id and stop_token_ids (every id that ends an answer, eos first; the ids listed as
eos_token_id in the folder's generation_config.json included).
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, Callable

from ..checkpoint import CONFIG_FILE, CheckpointError, GENERATION_CONFIG_FILE
from . import block_diffusion, dream, hf_causal, llada
from .common import Adapted, ForeignFolder, read_json_if_present

_ADAPTERS: dict[str, Callable[[ForeignFolder], Adapted]] = {
    model_type: module.adapt
    for module in (llada, dream, block_diffusion, hf_causal)
    for model_type in module.MODEL_TYPES
}
# "unmask" is the project's own format, loaded by checkpoint.from_pretrained without an adapter.
SUPPORTED_MODEL_TYPES = ("unmask", *_ADAPTERS)


def adapt(path: str | Path, config: dict[str, Any], tokenizer: Any | None = None) -> Adapted:
    """Read a foreign checkpoint folder whose config.json is `config` (see the module docstring)."""
    path = Path(path)
    model_type = config.get("model_type")
    if model_type not in _ADAPTERS:
        close = difflib.get_close_matches(str(model_type), SUPPORTED_MODEL_TYPES, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise CheckpointError(f"{path / CONFIG_FILE}: model_type {model_type!r} is not supported{hint}; "
                              f"supported: {', '.join(SUPPORTED_MODEL_TYPES)}")
    folder = ForeignFolder(
        path=path,
        config=config,
        tokenizer=tokenizer,
        tokenizer_config=read_json_if_present(path / "tokenizer_config.json"),
        hf_generation_config=read_json_if_present(path / GENERATION_CONFIG_FILE),
    )
    adapted = _ADAPTERS[model_type](folder)
    # Ids that the folder's Hugging Face generation_config.json lists as eos_token_id (one or a list) also
    # end an answer, whatever the family's own defaults say (e.g. a fine-tune's extra end-of-turn token).
    hf_generation = ForeignFolder(path, folder.hf_generation_config, file=GENERATION_CONFIG_FILE)
    stops = list(adapted.generation_config.get("stop_token_ids", []))
    stops += [i for i in hf_generation.token_ids("eos_token_id") if i not in stops]
    adapted.generation_config["stop_token_ids"] = stops
    return adapted


__all__ = ["Adapted", "ForeignFolder", "SUPPORTED_MODEL_TYPES", "adapt"]
