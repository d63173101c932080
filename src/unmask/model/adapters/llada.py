"""LLaDA checkpoints (`model_type: "llada"`: LLaDA-8B-Base/Instruct, LLaDA 1.5) on our Transformer.

LLaDA is an OLMo-style code base: its config.json uses OLMo key names (d_model, n_layers, ...) and
its tensors live under `model.transformer.*`. The network itself is a LLaMA decoder with fully
bidirectional attention whose logit at position i predicts token i (no shift).

Sources: facts marked [§1.1] / [§2.1] / [§2.3] come from our notes
shared/reference/formats-algorithms.md, which read them from ML-GSAI/LLaDA (generate.py, GUIDELINES.md,
EVAL.md) and from the copies of LLaDA's HF files in NVlabs/Fast-dLLM (llada/model/configuration_llada.py,
modeling_llada.py).
"""

from __future__ import annotations

import re

from ..config import ModelConfig
from .common import (Adapted, ForeignFolder, check_token_agrees, first_present, in_vocab, make_config, require_mask,
                     token_defaults)

MODEL_TYPES = ("llada",)

# Special tokens [§1.1]: ids from ML-GSAI/LLaDA generate.py (mask_id=126336, EOS 126081 and EOT 126348
# in logits_eos_inf / confidence_eos_eot_inf) and the released config (bos 126080).
MASK_TOKEN, MASK_ID = "<|mdm_mask|>", 126336
EOS_TOKEN, EOS_ID = "<|endoftext|>", 126081
BOS_TOKEN, BOS_ID = "<|startoftext|>", 126080
EOT_TOKEN, EOT_ID = "<|eot_id|>", 126348

# Tensor names [§1.1]: module tree LLaDAModelLM.model.transformer in Fast-dLLM's copy of modeling_llada.py.
_TOP_LEVEL = {
    "model.transformer.wte.weight": "model.embed_tokens.weight",
    "model.transformer.ln_f.weight": "model.norm.weight",
    "model.transformer.ff_out.weight": "lm_head.weight",  # absent when weight_tying is true
}
_IN_BLOCK = {
    "attn_norm": "input_layernorm",
    "q_proj": "self_attn.q_proj",
    "k_proj": "self_attn.k_proj",
    "v_proj": "self_attn.v_proj",
    "attn_out": "self_attn.o_proj",
    "ff_norm": "post_attention_layernorm",
    "ff_proj": "mlp.gate_proj",  # silu(ff_proj(h)) * up_proj(h): ff_proj is the gate
    "up_proj": "mlp.up_proj",
    "ff_out": "mlp.down_proj",
}
_BLOCK_TENSOR = re.compile(r"model\.transformer\.blocks\.(\d+)\.(\w+)\.weight")


def rename(name: str) -> str | None:
    if name in _TOP_LEVEL:
        return _TOP_LEVEL[name]
    m = _BLOCK_TENSOR.fullmatch(name)
    if m and m.group(2) in _IN_BLOCK:
        return f"model.layers.{m.group(1)}.{_IN_BLOCK[m.group(2)]}.weight"
    return name  # not a LLaDA name: load_weights_into reports it as unexpected


def _model_config(folder: ForeignFolder) -> ModelConfig:
    # Only the LLaMA-style block with separate q/k/v projections maps onto our layer; OLMo's other
    # block types fuse q/k/v into one tensor ("llama" is what LLaDA 8B ships [§1.1]).
    folder.expect("block_type", ("llama",), "llama")
    folder.expect("activation_type", ("silu",), "silu")
    folder.expect("layer_norm_type", ("rms",), "rms")
    folder.expect("layer_norm_with_affine", (True,), True)
    for key in ("include_bias", "include_qkv_bias", "bias_for_layer_norm", "attention_layer_norm",
                "input_emb_norm", "scale_logits", "alibi"):
        folder.expect(key, (False, None), False)  # each would change the math our layer computes
    folder.expect("rope", (True,), True)
    folder.expect("clip_qkv", (None,), None)
    heads = folder.positive_int("n_heads")
    d_model = folder.positive_int("d_model")
    # OLMo pads the embedding to `embedding_size` rows when it is set; the LM head has as many [§1.1].
    vocab = folder.positive_int("embedding_size", None) or folder.positive_int("vocab_size")
    # Each id: config.json, else tokenizer.json's id for the token, else the id LLaDA's code hard-codes
    # (only if the vocabulary is the real one; a smaller one simply lacks it).
    mask = first_present(*folder.token_ids("mask_token_id"), folder.lookup(MASK_TOKEN), in_vocab(MASK_ID, vocab))
    eos = first_present(*folder.token_ids("eos_token_id"), folder.lookup(EOS_TOKEN), in_vocab(EOS_ID, vocab))
    pad = first_present(*folder.token_ids("pad_token_id"), eos)  # pad = EOS in the released config [§1.1]
    bos = first_present(*folder.token_ids("bos_token_id"), folder.lookup(BOS_TOKEN), in_vocab(BOS_ID, vocab))
    return make_config(
        folder,
        vocab_size=vocab,
        hidden_size=d_model,
        num_hidden_layers=folder.positive_int("n_layers"),
        num_attention_heads=heads,
        num_key_value_heads=folder.positive_int("n_kv_heads", heads),  # OLMo: None means plain MHA
        # Required rather than derived from mlp_ratio: every released LLaDA config sets it, and SwiGLU
        # gate and up projections are both this wide [§1.1].
        intermediate_size=folder.positive_int("mlp_hidden_size"),
        max_position_embeddings=folder.positive_int("max_sequence_length", 4096),
        rope_theta=folder.positive_float("rope_theta", 10000.0),  # 500000 in LLaDA 8B; OLMo's default 10000
        rms_norm_eps=folder.positive_float("rms_norm_eps", 1e-5),
        tie_word_embeddings=folder.flag("weight_tying", False),
        attention="bidirectional",  # attn_mask=None, is_causal=False in modeling_llada.py [§1.1]
        shift_logits=False,  # the logit at position i predicts token i [§1.1]
        mask_token_id=mask,
        eos_token_id=eos,
        pad_token_id=pad,
        bos_token_id=bos,
    )



def adapt(folder: ForeignFolder) -> Adapted:
    check_token_agrees(folder, "mask_token_id", MASK_TOKEN)
    config = _model_config(folder)
    require_mask(folder, config.mask_token_id, MASK_TOKEN)
    generation = dict(
        # generate.py's demo: gen_length 128, steps 128, block_length 32, temperature 0, low-confidence
        # remasking, i.e. one token per step, the most probable first [§2.1].
        policy="steps",
        max_new_tokens=128,
        block_size=32,
        steps_per_block=32,
        temperature=0.0,
        # Fast-dLLM v1's parallel setting for LLaDA-Instruct (block 32, threshold 0.9) [§2.3].
        threshold=0.9,
        # The Instruct model ends a turn with <|eot_id|> and pads the answer with EOS [§1.1, §2.1].
        **token_defaults(config, [first_present(folder.lookup(EOT_TOKEN), in_vocab(EOT_ID, config.vocab_size))]),
    )
    return Adapted(family="llada", config=config, rename=rename, generation_config=generation)
