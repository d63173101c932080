"""Dream-family checkpoints (`model_type: "Dream"`): Dream-v0 7B, Dream-Coder, DiffuCoder, DreamOn.

All four are Qwen2.5 networks (q/k/v with bias) turned into masked-diffusion models: attention is
bidirectional and the logit at position i predicts token i + 1 (Dream keeps the autoregressive
shift of the model it was adapted from). Tensor names are exactly Qwen2's, i.e. ours.

DiffuCoder is told apart by its extra `<|dlm_pad|>` token; Dream, Dream-Coder and DreamOn share
every default we use. DreamOn's expand/delete length control is not implemented: it loads as Dream.

Sources: facts marked [§1.2] / [§2.2] / [§2.3] / [§2.12] come from our notes
shared/reference/formats-algorithms.md, which read them from HKUNLP/Dream (README.md, eval/eval.py),
the copies of Dream's HF files in NVlabs/Fast-dLLM (v1/dream/model/configuration_dream.py,
modeling_dream.py, generation_utils.py) and apple/ml-diffucoder (README.md).
"""

from __future__ import annotations

from .common import (Adapted, ForeignFolder, check_token_agrees, first_present, hf_decoder_fields, hf_rename,
                     in_vocab, make_config, require_mask, token_defaults)

MODEL_TYPES = ("Dream",)

# Special tokens [§1.2]: Qwen2.5's vocabulary plus <|beginoftext|> 151665 and <|mask|> 151666
# (configuration_dream.py defaults; tokenization_dream.py); eos/pad <|endoftext|> 151643.
MASK_TOKEN, MASK_ID = "<|mask|>", 151666
EOS_TOKEN, EOS_ID = "<|endoftext|>", 151643
BOS_TOKEN = "<|beginoftext|>"
TURN_END_TOKEN = "<|im_end|>"  # ChatML turn end, 151645 [§1.2]
DIFFUCODER_PAD_TOKEN = "<|dlm_pad|>"  # 151667; DiffuCoder splits its output on it [§1.2]


def adapt(folder: ForeignFolder) -> Adapted:
    check_token_agrees(folder, "mask_token_id", MASK_TOKEN)
    fields = hf_decoder_fields(folder, default_theta=1_000_000.0, default_eps=1e-6)
    vocab = fields["vocab_size"]
    diffucoder = folder.lookup(DIFFUCODER_PAD_TOKEN) is not None
    # Each id: config.json or tokenizer.json, else the id Dream's code hard-codes (real vocabulary only).
    eos = first_present(*folder.token_ids("eos_token_id"), folder.lookup(EOS_TOKEN), in_vocab(EOS_ID, vocab))
    # DiffuCoder's config says pad 151643 but its tokenizer pads with <|dlm_pad|> [§1.2]: the
    # tokenizer's declaration wins because that is the token the model was trained to emit.
    pad = first_present(folder.lookup(DIFFUCODER_PAD_TOKEN), *folder.token_ids("pad_token_id"), eos)
    config = make_config(
        folder,
        **fields,
        attention_bias=True,  # Qwen2: q/k/v projections with bias, o_proj without [§1.2]
        attention="bidirectional",  # is_causal = False hard-coded in modeling_dream.py [§1.2]
        shift_logits=True,  # consumers right-shift: position i is predicted from hidden state i-1 [§1.2]
        mask_token_id=first_present(*folder.token_ids("mask_token_id"), folder.lookup(MASK_TOKEN),
                                    folder.declared("mask_token"), in_vocab(MASK_ID, vocab)),
        eos_token_id=eos,
        pad_token_id=pad,
        bos_token_id=first_present(folder.lookup(BOS_TOKEN), *folder.token_ids("bos_token_id")),
    )
    require_mask(folder, config.mask_token_id, MASK_TOKEN)
    # DiffuCoder README: max_new_tokens 256, steps 256, temperature 0.2 (Base), top_p 0.95, alg "entropy"
    # [§2.12]. Dream README: max_new_tokens 512, steps 512, temperature 0.2, top_p 0.95, alg "entropy" [§2.2].
    length = 256 if diffucoder else 512
    generation = dict(
        # One token per step over the whole answer as one block (Dream decodes without blocks; a block as
        # long as the answer is the same thing). alg "entropy" ranks masked positions by entropy, where
        # unmask's "steps" policy ranks them by probability: the closest policy, not the identical one [§2.2].
        policy="steps",
        max_new_tokens=length,
        block_size=length,
        steps_per_block=length,
        temperature=0.2,
        top_p=0.95,
        # Fast-dLLM v1's parallel setting for Dream: confidence threshold 0.9 [§2.3].
        threshold=0.9,
        **token_defaults(config, [folder.lookup(TURN_END_TOKEN), folder.lookup(DIFFUCODER_PAD_TOKEN)]),
    )
    family = "diffucoder" if diffucoder else "dream"
    return Adapted(family=family, config=config, rename=hf_rename(config), generation_config=generation)
