"""Block-diffusion checkpoints: Fast-dLLM v2 (`Fast_dLLM_Qwen`) and SDAR (`sdar`).

Both are Qwen networks with block-causal attention (a query sees its own block and every earlier
one, blocks aligned to position 0), which is our `attention="block_causal"` with their block size:
- Fast-dLLM v2: Qwen2.5 (q/k/v bias), block `bd_size` (32), logits shifted like Dream;
- SDAR: Qwen3 (per-head q/k RMSNorm, no bias), block `block_size` (4 by default), logits not shifted.
Tensor names are exactly Qwen2's / Qwen3's, i.e. ours.

Sources: facts marked [§1.3] / [§1.4] / [§2.4] / [§2.5] come from our notes
shared/reference/formats-algorithms.md, which read them from NVlabs/Fast-dLLM@a9b81e4 (v2/README.md,
v2/generation_functions.py, v2/eval.py), a copy of Fast_dLLM_v2_7B's modeling.py, and JetAstra/SDAR
(README.md, generate.py).
"""

from __future__ import annotations

from .common import (Adapted, ForeignFolder, check_token_agrees, first_present, hf_decoder_fields, hf_rename,
                     in_vocab, make_config, require_mask, token_defaults)

MODEL_TYPES = ("Fast_dLLM_Qwen", "sdar")

# Fast-dLLM v2 [§1.3]: FAST_DLLM_MASK_ID = 151665 ("|<MASK>|"), FAST_DLLM_STOP_TOKEN = 151645 (<|im_end|>)
# in v2/generation_functions.py; finetune.py reads bd_size from the config.
FAST_DLLM_MASK_TOKEN, FAST_DLLM_MASK_ID = "|<MASK>|", 151665
TURN_END_TOKEN, TURN_END_ID = "<|im_end|>", 151645
ENDOFTEXT_TOKEN, ENDOFTEXT_ID = "<|endoftext|>", 151643
# SDAR [§1.4]: <|MASK|> 151669 (README's JetEngine example mask_token_id=151669), eos 151643.
SDAR_MASK_TOKEN, SDAR_MASK_ID = "<|MASK|>", 151669


def _fast_dllm_v2(folder: ForeignFolder) -> Adapted:
    check_token_agrees(folder, "mask_token_id", FAST_DLLM_MASK_TOKEN)
    fields = hf_decoder_fields(folder, default_theta=1_000_000.0, default_eps=1e-6)
    vocab = fields["vocab_size"]
    block = folder.positive_int("bd_size", 32)  # bd_size 32 in the released config [§1.3]
    turn_end = first_present(folder.lookup(TURN_END_TOKEN), in_vocab(TURN_END_ID, vocab))
    config = make_config(
        folder,
        **fields,
        attention_bias=True,  # Qwen2 layers: q/k/v with bias [§1.3]
        attention="block_causal",
        block_size=block,
        shift_logits=True,  # "each masked token is predicted using the logit of its preceding token" [§1.3]
        mask_token_id=first_present(*folder.token_ids("mask_token_id"), folder.lookup(FAST_DLLM_MASK_TOKEN),
                                    in_vocab(FAST_DLLM_MASK_ID, vocab)),
        eos_token_id=first_present(*folder.token_ids("eos_token_id"), turn_end),  # config eos = <|im_end|> [§1.3]
        # The config's pad is <|im_end|>, the tokenizer's <|endoftext|> (3rd-party registry) [§1.3]: pad with
        # the latter, so that padding never reads as the end of a turn.
        pad_token_id=first_present(folder.lookup(ENDOFTEXT_TOKEN), *folder.token_ids("pad_token_id")),
        bos_token_id=first_present(*folder.token_ids("bos_token_id")),
    )
    require_mask(folder, config.mask_token_id, FAST_DLLM_MASK_TOKEN)
    generation = dict(
        # v2/eval.py: block 32, threshold 0.9 (at least one token per step), temperature 0, top_p 0.95,
        # max_new_tokens 2048; stop at <|im_end|> [§2.4]. (Its sub-blocks of 8, decoded in order inside
        # a block, have no counterpart in unmask's sampler and are not carried over.)
        policy="threshold",
        threshold=0.9,
        block_size=block,
        max_new_tokens=2048,
        temperature=0.0,
        top_p=0.95,
        **token_defaults(config, [turn_end]),
    )
    return Adapted(family="fast_dllm_v2", config=config, rename=hf_rename(config), generation_config=generation)


def _sdar(folder: ForeignFolder) -> Adapted:
    check_token_agrees(folder, "mask_token_id", SDAR_MASK_TOKEN)
    # Qwen3 puts a bias on o_proj too when attention_bias is set; SDAR ships without [§1.4].
    folder.expect("attention_bias", (False,), False)
    fields = hf_decoder_fields(folder, default_theta=1_000_000.0, default_eps=1e-6)
    vocab = fields["vocab_size"]
    block = folder.positive_int("block_size", 4)  # block_length 4 is SDAR's default [§1.4]
    config = make_config(
        folder,
        **fields,
        qk_norm=True,  # Qwen3 per-head q_norm / k_norm before rotary [§1.4]
        attention="block_causal",
        block_size=block,
        shift_logits=False,  # generate.py reads the logits at the block's own positions [§1.4]
        mask_token_id=first_present(*folder.token_ids("mask_token_id"), folder.lookup(SDAR_MASK_TOKEN),
                                    in_vocab(SDAR_MASK_ID, vocab)),
        eos_token_id=first_present(*folder.token_ids("eos_token_id"), folder.lookup(ENDOFTEXT_TOKEN),
                                   in_vocab(ENDOFTEXT_ID, vocab)),
        pad_token_id=first_present(*folder.token_ids("pad_token_id")),
        bos_token_id=first_present(*folder.token_ids("bos_token_id")),
    )
    require_mask(folder, config.mask_token_id, SDAR_MASK_TOKEN)
    generation = dict(
        # README evaluation: greedy, block_length = the model's block, denoising_steps = block_length
        # (one token per step, most confident first) [§2.5].
        policy="steps",
        block_size=block,
        steps_per_block=block,
        temperature=0.0,
        # generate.py's low_confidence_dynamic threshold, for the threshold policy [§2.5].
        threshold=0.85,
        # generate.py's gen_length is 20480 (a long chain-of-thought budget); 256 is unmask's default.
        max_new_tokens=256,
        **token_defaults(config, [first_present(folder.lookup(TURN_END_TOKEN), in_vocab(TURN_END_ID, vocab))]),
    )
    return Adapted(family="sdar", config=config, rename=hf_rename(config), generation_config=generation)


def adapt(folder: ForeignFolder) -> Adapted:
    if folder.config.get("model_type") == "sdar":
        return _sdar(folder)
    return _fast_dllm_v2(folder)
