"""The special tokens of every unmask tokenizer, and the ids they take (the first ids of the vocabulary).

Fixing the ids keeps model configs, shards and samplers in agreement without a lookup: a tokenizer
trained by `unmask tokenizer train` always has these six at ids 0-5.
"""

ENDOFTEXT = "<|endoftext|>"  # joins documents in the shards; the end of an answer
MASK = "<|mask|>"  # the diffusion mask
PAD = "<|pad|>"  # padding (also what a variable-length infill may fill surplus positions with)
FIM_PREFIX = "<|fim_prefix|>"
FIM_SUFFIX = "<|fim_suffix|>"
FIM_MIDDLE = "<|fim_middle|>"

SPECIAL_TOKENS = [ENDOFTEXT, MASK, PAD, FIM_PREFIX, FIM_SUFFIX, FIM_MIDDLE]
ENDOFTEXT_ID, MASK_ID, PAD_ID, FIM_PREFIX_ID, FIM_SUFFIX_ID, FIM_MIDDLE_ID = range(len(SPECIAL_TOKENS))
