"""Tiny random checkpoints in other projects' exact on-disk formats, for adapter tests.

Each writer produces a folder like the real release: config.json with the real key names,
safetensors with the real tensor names in bfloat16 (what LLaDA, Dream, Fast-dLLM v2, SDAR, Qwen
and LLaMA ship), tokenizer.json with the family's special tokens, tokenizer_config.json with a
chat template. Only the sizes shrink: 2 layers of width 32.

Special-token ids are scaled down by a constant offset per vocabulary, keeping their order and gaps:
LLaDA ids - 126000 (mask 126336 -> 336, vocab 126464 -> 464); Qwen ids - 151500 (mask 151666 -> 166,
Qwen2.5 vocab 152064 -> 564, Qwen3 151936 -> 436); LLaMA 3 ids - 127800 (vocab 128256 -> 456).
Ordinary words get the lowest ids. The adapters find the scaled ids where they find the real ones
(config.json, tokenizer.json), so nothing in the code under test knows about the scaling.

Weights are written from a "canonical" state dict in Qwen2/LLaMA names (what transformers' own
modules load), renamed to the family's names by the table below: an independent restatement of
shared/reference/formats-algorithms.md §1, not the adapter's code.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file
from tokenizers import Tokenizer, models, pre_tokenizers

WORDS = ["def", "return", "x", "y", "(", ")", ":", "+", "print", "hello", "world", "the", "a", "=", "1", "2"]

# Per layer, canonical (Qwen2/LLaMA) name -> LLaDA name, from §1.1's mapping table.
LLADA_LAYER_NAMES = {
    "input_layernorm.weight": "attn_norm.weight",
    "self_attn.q_proj.weight": "q_proj.weight",
    "self_attn.k_proj.weight": "k_proj.weight",
    "self_attn.v_proj.weight": "v_proj.weight",
    "self_attn.o_proj.weight": "attn_out.weight",
    "post_attention_layernorm.weight": "ff_norm.weight",
    "mlp.gate_proj.weight": "ff_proj.weight",
    "mlp.up_proj.weight": "up_proj.weight",
    "mlp.down_proj.weight": "ff_out.weight",
}

TINY = dict(hidden=32, layers=2, heads=4, kv_heads=2, ffn=64)
BLOCK = 4  # the tiny block-diffusion checkpoints' block size


def tokenizer_with(specials: dict[str, int], vocab_size: int) -> Tokenizer:
    vocab = {w: i for i, w in enumerate(WORDS)}
    vocab.update(specials)
    assert max(vocab.values()) < vocab_size and len(set(vocab.values())) == len(vocab)
    unk = next(iter(specials))
    tok = Tokenizer(models.WordLevel(vocab, unk_token=unk))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.add_special_tokens(list(specials))
    return tok


def canonical_state_dict(vocab: int, *, kv_heads: int, qkv_bias: bool = False, qk_norm: bool = False,
                         tied: bool = False, layers: int = TINY["layers"], head_dim: int | None = None,
                         seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights in Qwen2/LLaMA names; norms random around 1 so a misplaced norm shows."""
    g = torch.Generator().manual_seed(seed)
    d, h, f = TINY["hidden"], TINY["heads"], TINY["ffn"]
    hd = head_dim or d // h

    def w(*shape, std=0.1):
        return torch.randn(*shape, generator=g) * std

    def norm(n):
        return 1.0 + w(n)

    sd = {"model.embed_tokens.weight": w(vocab, d, std=0.5), "model.norm.weight": norm(d)}
    if not tied:
        sd["lm_head.weight"] = w(vocab, d, std=0.5)
    for i in range(layers):
        p = f"model.layers.{i}."
        sd.update({
            p + "input_layernorm.weight": norm(d), p + "post_attention_layernorm.weight": norm(d),
            p + "self_attn.q_proj.weight": w(h * hd, d, std=0.3),
            p + "self_attn.k_proj.weight": w(kv_heads * hd, d, std=0.3),
            p + "self_attn.v_proj.weight": w(kv_heads * hd, d, std=0.3), p + "self_attn.o_proj.weight": w(d, h * hd),
            p + "mlp.gate_proj.weight": w(f, d), p + "mlp.up_proj.weight": w(f, d), p + "mlp.down_proj.weight": w(d, f),
        })
        if qkv_bias:
            sd.update({p + "self_attn.q_proj.bias": w(h * hd), p + "self_attn.k_proj.bias": w(kv_heads * hd),
                       p + "self_attn.v_proj.bias": w(kv_heads * hd)})
        if qk_norm:
            sd.update({p + "self_attn.q_norm.weight": norm(hd), p + "self_attn.k_norm.weight": norm(hd)})
    return {k: v.to(torch.bfloat16).float() for k, v in sd.items()}  # values exactly representable in bf16


def to_llada_names(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for name, t in sd.items():
        if name == "model.embed_tokens.weight":
            out["model.transformer.wte.weight"] = t
        elif name == "model.norm.weight":
            out["model.transformer.ln_f.weight"] = t
        elif name == "lm_head.weight":
            out["model.transformer.ff_out.weight"] = t
        else:
            _, _, layer, rest = name.split(".", 3)
            out[f"model.transformer.blocks.{layer}.{LLADA_LAYER_NAMES[rest]}"] = t
    return out


def write_weights(folder: Path, tensors: dict[str, torch.Tensor], shards: int = 1) -> None:
    """bf16 safetensors: one model.safetensors, or `shards` files plus the HF index."""
    tensors = {k: v.to(torch.bfloat16).contiguous() for k, v in tensors.items()}
    names = list(tensors)
    if shards == 1:
        save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
        return
    weight_map, per = {}, -(-len(names) // shards)
    for s in range(shards):
        file = f"model-{s + 1:05d}-of-{shards:05d}.safetensors"
        part = {n: tensors[n] for n in names[s * per:(s + 1) * per]}
        save_file(part, str(folder / file), metadata={"format": "pt"})
        weight_map.update({n: file for n in part})
    total = sum(t.numel() * t.element_size() for t in tensors.values())
    (folder / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}))


def _write_folder(folder: Path, config: dict, tensors: dict, tokenizer: Tokenizer, tokenizer_config: dict,
                  shards: int, generation_config: dict | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    tokenizer.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps(tokenizer_config, indent=2))
    if generation_config is not None:
        (folder / "generation_config.json").write_text(json.dumps(generation_config, indent=2))
    write_weights(folder, tensors, shards)
    return folder


# ---- LLaDA (§1.1) -----------------------------------------------------------------------------

LLADA_VOCAB = 464
LLADA_SPECIALS = {"<|endoftext|>": 81, "<|startoftext|>": 80, "<|mdm_mask|>": 336,
                  "<|start_header_id|>": 346, "<|end_header_id|>": 347, "<|eot_id|>": 348}
LLADA_TEMPLATE = ("{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n"
                  "{{ m['content'] }}<|eot_id|>{% endfor %}<|start_header_id|>assistant<|end_header_id|>\n\n")


def llada_config(vocab: int = LLADA_VOCAB, layers: int = TINY["layers"]) -> dict:
    """LLaDA-8B's config.json key set (OLMo names) with tiny sizes and scaled special ids."""
    return {
        "model_type": "llada", "architectures": ["LLaDAModelLM"],
        "auto_map": {"AutoConfig": "configuration_llada.LLaDAConfig",
                     "AutoModelForCausalLM": "modeling_llada.LLaDAModelLM"},
        "d_model": TINY["hidden"], "n_layers": layers, "n_heads": TINY["heads"], "n_kv_heads": TINY["heads"],
        "mlp_hidden_size": TINY["ffn"], "mlp_ratio": 4, "activation_type": "silu", "block_type": "llama",
        "layer_norm_type": "rms", "rms_norm_eps": 1e-5, "layer_norm_with_affine": True,
        "bias_for_layer_norm": False, "attention_layer_norm": False, "attention_layer_norm_with_affine": True,
        "rope": True, "rope_theta": 500000.0, "rope_full_precision": True, "alibi": False, "alibi_bias_max": 8.0,
        "max_sequence_length": 4096, "vocab_size": vocab, "embedding_size": vocab, "weight_tying": False,
        "include_bias": False, "include_qkv_bias": False, "input_emb_norm": False, "scale_logits": False,
        "clip_qkv": None, "multi_query_attention": None, "flash_attention": False, "init_device": "meta",
        "mask_token_id": 336, "eos_token_id": 81, "pad_token_id": 81, "use_cache": False,
        "torch_dtype": "bfloat16", "transformers_version": "4.46.3",
    }


def write_llada(folder: Path, *, shards: int = 1, layers: int = TINY["layers"], seed: int = 0):
    sd = canonical_state_dict(LLADA_VOCAB, kv_heads=TINY["heads"], layers=layers, seed=seed)
    tok = tokenizer_with(LLADA_SPECIALS, LLADA_VOCAB)
    tok_cfg = {"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>",
               "chat_template": LLADA_TEMPLATE}
    return _write_folder(folder, llada_config(layers=layers), to_llada_names(sd), tok, tok_cfg, shards), sd


# ---- Qwen-based families (§1.2-§1.5) ----------------------------------------------------------

QWEN25_VOCAB, QWEN3_VOCAB = 564, 436
QWEN3_HEAD_DIM = 16  # != 32 / 4 heads: Qwen3 configs set head_dim explicitly, so the tiny one does too
QWEN_SPECIALS = {"<|endoftext|>": 143, "<|im_start|>": 144, "<|im_end|>": 145}
CHATML_TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
                   "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def qwen2_config(model_type: str, vocab: int = QWEN25_VOCAB, **extra) -> dict:
    """Qwen2.5's config.json key set with tiny sizes."""
    return {
        "model_type": model_type, "architectures": ["Qwen2ForCausalLM"], "hidden_act": "silu",
        "hidden_size": TINY["hidden"], "num_hidden_layers": TINY["layers"], "num_attention_heads": TINY["heads"],
        "num_key_value_heads": TINY["kv_heads"], "intermediate_size": TINY["ffn"], "vocab_size": vocab,
        "max_position_embeddings": 32768, "rms_norm_eps": 1e-6, "rope_theta": 1000000.0, "rope_scaling": None,
        "sliding_window": 131072, "use_sliding_window": False, "max_window_layers": 28,
        "tie_word_embeddings": False, "initializer_range": 0.02, "attention_dropout": 0.0, "use_cache": True,
        "bos_token_id": 143, "eos_token_id": 143, "torch_dtype": "bfloat16", "transformers_version": "4.46.2",
        **extra,
    }


def qwen3_config(model_type: str, **extra) -> dict:
    extra = {"architectures": ["Qwen3ForCausalLM"], "head_dim": QWEN3_HEAD_DIM, "attention_bias": False, **extra}
    cfg = qwen2_config(model_type, vocab=QWEN3_VOCAB, **extra)
    del cfg["max_window_layers"]
    return cfg


def write_dream(folder: Path, *, diffucoder: bool = False, seed: int = 0):
    specials = {**QWEN_SPECIALS, "<|beginoftext|>": 165, "<|mask|>": 166}
    if diffucoder:
        specials["<|dlm_pad|>"] = 167
    config = qwen2_config("Dream", architectures=["DreamModel"], mask_token_id=166, pad_token_id=143,
                          auto_map={"AutoConfig": "configuration_dream.DreamConfig",
                                    "AutoModel": "modeling_dream.DreamModel"})
    sd = canonical_state_dict(QWEN25_VOCAB, kv_heads=TINY["kv_heads"], qkv_bias=True, seed=seed)
    tok_cfg = {"bos_token": "<|beginoftext|>", "eos_token": "<|endoftext|>", "mask_token": "<|mask|>",
               "pad_token": "<|dlm_pad|>" if diffucoder else "<|endoftext|>", "chat_template": CHATML_TEMPLATE}
    return _write_folder(folder, config, sd, tokenizer_with(specials, QWEN25_VOCAB), tok_cfg, 1), sd


def write_fast_dllm_v2(folder: Path, *, seed: int = 0):
    specials = {**QWEN_SPECIALS, "|<MASK>|": 165}
    config = qwen2_config("Fast_dLLM_Qwen", architectures=["Fast_dLLM_QwenForCausalLM"], bd_size=BLOCK,
                          eos_token_id=145, pad_token_id=145,
                          auto_map={"AutoConfig": "configuration.Fast_dLLM_QwenConfig",
                                    "AutoModelForCausalLM": "modeling.Fast_dLLM_QwenForCausalLM"})
    sd = canonical_state_dict(QWEN25_VOCAB, kv_heads=TINY["kv_heads"], qkv_bias=True, seed=seed)
    tok_cfg = {"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>", "chat_template": CHATML_TEMPLATE}
    return _write_folder(folder, config, sd, tokenizer_with(specials, QWEN25_VOCAB), tok_cfg, 1), sd


def write_sdar(folder: Path, *, seed: int = 0):
    specials = {**QWEN_SPECIALS, "<think>": 167, "</think>": 168, "<|MASK|>": 169}
    config = qwen3_config("sdar", architectures=["SDARForCausalLM"], block_size=BLOCK, mask_token_id=169,
                          fuse_cross_entropy=True, auto_map={"AutoModelForCausalLM": "modeling_sdar.SDARForCausalLM"})
    sd = canonical_state_dict(QWEN3_VOCAB, kv_heads=TINY["kv_heads"], qk_norm=True, head_dim=QWEN3_HEAD_DIM, seed=seed)
    tok_cfg = {"eos_token": "<|endoftext|>", "chat_template": CHATML_TEMPLATE}
    return _write_folder(folder, config, sd, tokenizer_with(specials, QWEN3_VOCAB), tok_cfg, 1), sd


def write_qwen_ar(folder: Path, model_type: str = "qwen2", *, tied: bool = False, store_tied_head: bool = False,
                  seed: int = 0):
    """A plain Qwen2.5 / Qwen3 instruct checkpoint (with the authors' generation_config.json)."""
    qwen3 = model_type == "qwen3"
    config = (qwen3_config if qwen3 else qwen2_config)(model_type, tie_word_embeddings=tied)
    vocab = config["vocab_size"]
    sd = canonical_state_dict(vocab, kv_heads=TINY["kv_heads"], qkv_bias=not qwen3, qk_norm=qwen3, tied=tied,
                              head_dim=QWEN3_HEAD_DIM if qwen3 else None, seed=seed)
    stored = dict(sd, **({"lm_head.weight": sd["model.embed_tokens.weight"]} if store_tied_head else {}))
    gen = {"bos_token_id": 143, "pad_token_id": 143, "do_sample": True, "eos_token_id": [145, 143],
           "repetition_penalty": 1.05, "temperature": 0.7, "top_p": 0.8, "top_k": 20}
    tok_cfg = {"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>", "chat_template": CHATML_TEMPLATE}
    return _write_folder(folder, config, stored, tokenizer_with(QWEN_SPECIALS, vocab), tok_cfg, 1, gen), sd


def write_open_dcoder(folder: Path, *, seed: int = 0):
    specials = {**QWEN_SPECIALS, "<M>": 165}
    config = qwen2_config("qwen2", tie_word_embeddings=True)
    sd = canonical_state_dict(QWEN25_VOCAB, kv_heads=TINY["kv_heads"], qkv_bias=True, tied=True, seed=seed)
    tok_cfg = {"eos_token": "<|endoftext|>", "mask_token": "<M>", "pad_token": "<|endoftext|>"}
    return _write_folder(folder, config, sd, tokenizer_with(specials, QWEN25_VOCAB), tok_cfg, 1), sd


# ---- LLaMA 3.1 (rope scaling "llama3") ----------------------------------------------------------

LLAMA_VOCAB = 456
LLAMA_SPECIALS = {"<|begin_of_text|>": 200, "<|end_of_text|>": 201, "<|eot_id|>": 209}


def llama_config(**extra) -> dict:
    return {
        "model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_act": "silu",
        "hidden_size": TINY["hidden"], "num_hidden_layers": TINY["layers"], "num_attention_heads": TINY["heads"],
        "num_key_value_heads": TINY["kv_heads"], "intermediate_size": TINY["ffn"], "vocab_size": LLAMA_VOCAB,
        "max_position_embeddings": 131072, "rms_norm_eps": 1e-5, "rope_theta": 500000.0,
        # original 8192 -> 256 so that the tiny head's 4 frequencies (wavelengths 6, 167, 4453 and 118k
        # positions) fall in all three bands: kept (< 64), interpolated (64..256) and stretched (> 256).
        "rope_scaling": {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                         "original_max_position_embeddings": 256, "rope_type": "llama3"},
        "attention_bias": False, "mlp_bias": False, "pretraining_tp": 1, "tie_word_embeddings": False,
        "bos_token_id": 200, "eos_token_id": [201, 209], "torch_dtype": "bfloat16", **extra,
    }


def write_llama(folder: Path, *, seed: int = 0):
    sd = canonical_state_dict(LLAMA_VOCAB, kv_heads=TINY["kv_heads"], seed=seed)
    gen = {"bos_token_id": 200, "eos_token_id": [201, 209], "do_sample": True, "temperature": 0.6, "top_p": 0.9}
    return _write_folder(folder, llama_config(), sd, tokenizer_with(LLAMA_SPECIALS, LLAMA_VOCAB), {}, 1, gen), sd
