"""Plain Hugging Face decoders (`qwen2`, `qwen3`, `llama`) as autoregressive baselines, and Open-dCoder.

A Qwen2/Qwen3/LLaMA checkpoint is our Transformer with causal attention and shifted logits, under
the same tensor names. Its sampler defaults are the ones its authors ship in generation_config.json
(do_sample, temperature, top_p, top_k, eos ids), so the bench's baseline decodes as they intended.

Open-dCoder (pengzhangzhi/Open-dLLM) is a Qwen2 checkpoint continued-pretrained as a masked-diffusion
model: same config and tensor names, but bidirectional attention. It is recognised by the mask
token its tokenizer_config.json declares (its scripts read `tokenizer.mask_token_id`; a plain Qwen2
tokenizer declares none).

Sources: key names and their meaning are transformers' LlamaConfig / Qwen2Config / Qwen3Config;
facts marked [§1.5] / [§2.11] come from our notes shared/reference/formats-algorithms.md, which read
them from pengzhangzhi/Open-dLLM (tasks/train_torch.py, veomni/models/transformers/qwen2/, README.md).
"""

from __future__ import annotations

from typing import Any

from ..checkpoint import GENERATION_CONFIG_FILE
from .common import Adapted, ForeignFolder, first_present, hf_decoder_fields, hf_rename, make_config, token_defaults

MODEL_TYPES = ("qwen2", "qwen3", "llama")
DEFAULT_MAX_NEW_TOKENS = 256  # unmask's default where the authors ship none


def _fields(folder: ForeignFolder) -> dict[str, Any]:
    kind = folder.config["model_type"]
    if kind == "llama":
        # Llama's attention_bias also puts a bias on o_proj, mlp_bias on the MLP: neither is in our layer.
        folder.expect("attention_bias", (False,), False)
        folder.expect("mlp_bias", (False,), False)
        fields = hf_decoder_fields(folder, default_theta=10000.0, default_eps=1e-6)
        fields["max_position_embeddings"] = folder.positive_int("max_position_embeddings", 2048)
        return fields
    if kind == "qwen3":
        folder.expect("attention_bias", (False,), False)  # Qwen3's bias would include o_proj
        return dict(hf_decoder_fields(folder, default_theta=1_000_000.0, default_eps=1e-6), qk_norm=True)
    return dict(hf_decoder_fields(folder, default_theta=1_000_000.0, default_eps=1e-6),
                attention_bias=True)  # Qwen2: q/k/v always carry a bias, o_proj none


def _special_ids(folder: ForeignFolder) -> dict[str, int | None]:
    gen = ForeignFolder(folder.path, folder.hf_generation_config, file=GENERATION_CONFIG_FILE)
    return dict(
        eos_token_id=first_present(*folder.token_ids("eos_token_id"), *gen.token_ids("eos_token_id")),
        pad_token_id=first_present(*folder.token_ids("pad_token_id"), *gen.token_ids("pad_token_id")),
        bos_token_id=first_present(*folder.token_ids("bos_token_id"), *gen.token_ids("bos_token_id")),
    )


def _autoregressive(folder: ForeignFolder) -> Adapted:
    config = make_config(folder, **_fields(folder), **_special_ids(folder), attention="causal", shift_logits=True)
    gen_file = folder.hf_generation_config
    gen = ForeignFolder(folder.path, gen_file, file=GENERATION_CONFIG_FILE)
    if gen_file.get("do_sample"):
        sampling = {"temperature": gen_file.get("temperature", 1.0)}
        sampling.update({k: gen_file[k] for k in ("top_p", "top_k") if gen_file.get(k) is not None})
    else:
        sampling = {"temperature": 0.0}  # transformers decodes greedily unless do_sample is set
    generation = dict(
        max_new_tokens=gen_file.get("max_new_tokens", DEFAULT_MAX_NEW_TOKENS),
        **sampling,
        # Instruct models list several ids (Qwen2.5: <|im_end|> and <|endoftext|>); stop at any of them.
        **token_defaults(config, [*folder.token_ids("eos_token_id"), *gen.token_ids("eos_token_id")]),
    )
    family = folder.config["model_type"]
    return Adapted(family=family, config=config, rename=hf_rename(config), generation_config=generation)


def _open_dcoder(folder: ForeignFolder, mask_id: int) -> Adapted:
    config = make_config(
        folder,
        **_fields(folder),
        **_special_ids(folder),
        attention="bidirectional",  # is_causal = False when sampling with masks [§1.5]
        shift_logits=True,  # trained on labels[..., 1:]; generation right-shifts logits [§1.5]
        mask_token_id=mask_id,  # added as "<M>" after the Qwen2.5 vocabulary; read from the tokenizer [§1.5]
    )
    generation = dict(
        # README samples at temperature 0.7 with Dream-style confidence ordering [§2.11]; one token per
        # step over unmask's default length.
        policy="steps",
        block_size=DEFAULT_MAX_NEW_TOKENS,  # the whole answer as one block, as Dream decodes
        max_new_tokens=DEFAULT_MAX_NEW_TOKENS,
        steps_per_block=DEFAULT_MAX_NEW_TOKENS,
        temperature=0.7,
        threshold=0.9,
        **token_defaults(config, []),
    )
    return Adapted(family="open_dcoder", config=config, rename=hf_rename(config), generation_config=generation)


def adapt(folder: ForeignFolder) -> Adapted:
    mask_id = folder.declared("mask_token")
    if folder.config["model_type"] == "qwen2" and mask_id is not None:
        return _open_dcoder(folder, mask_id)
    return _autoregressive(folder)

