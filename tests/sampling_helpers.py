"""Helpers for the sampling tests: a byte-level tokenizer and tiny models trained in a few seconds.

The task is learnable by a two-layer model in a few hundred steps: each sequence repeats a random
motif of 4 letters (a-h), so every masked position can be read off the token 4 (or 8, ...) places
away. A trained diffusion model is then confident at many positions at once, which is what parallel
decoding needs; the autoregressive twin learns the same task with next-token training.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from tokenizers import Tokenizer, decoders, models, pre_tokenizers

from unmask.data.special_tokens import ENDOFTEXT_ID as EOS_ID, MASK_ID, PAD_ID, SPECIAL_TOKENS
from unmask.model import ModelConfig, Transformer

PERIOD = 4
LETTERS = "abcdefgh"


def byte_tokenizer(merges: list[tuple[str, str]] = ()) -> Tokenizer:
    """Byte-level tokenizer: the six special tokens at ids 0-5, then one token per byte, then one per merge
    (none by default)."""
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
    for ch in alphabet:
        vocab[ch] = len(vocab)
    for a, b in merges:
        vocab[a + b] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=list(merges)))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(SPECIAL_TOKENS)
    return tok


MERGES = [(")", ":"), ("):", "Ċ"), ("Ġ", "Ġ"), ("ĠĠ", "ĠĠ")]


def merged_tokenizer() -> Tokenizer:
    """Byte-level BPE like the project's: "):" and "):\\n" are single tokens, as is four-space indentation."""
    return byte_tokenizer(MERGES)


def letter_ids(tok: Tokenizer) -> list[int]:
    return [tok.token_to_id(c) for c in LETTERS]


def tiny_lm_config(attention: str = "bidirectional", shift_logits: bool = False, **overrides) -> ModelConfig:
    fields = dict(vocab_size=len(SPECIAL_TOKENS) + 256, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=4, intermediate_size=128, max_position_embeddings=96, attention=attention,
                  shift_logits=shift_logits, mask_token_id=MASK_ID, eos_token_id=EOS_ID, pad_token_id=PAD_ID)
    fields.update(overrides)
    return ModelConfig(**fields)


def random_lm(seed: int = 0, std: float = 0.2, **config) -> Transformer:
    model = Transformer(tiny_lm_config(**config))
    model.init_weights(std=std, seed=seed)
    return model.eval()


def motif_batch(letters: list[int], batch: int, length: int, gen: torch.Generator) -> torch.Tensor:
    """[batch, length] sequences repeating a random PERIOD-letter motif."""
    choice = torch.randint(len(letters), (batch, PERIOD), generator=gen)
    motif = torch.tensor(letters)[choice]
    return motif.repeat(1, length // PERIOD + 1)[:, :length]


@contextlib.contextmanager
def one_thread():
    """Tiny models run several times faster on one thread than on two busy shared cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def train_tiny(attention: str = "bidirectional", steps: int = 300, length: int = 24, batch: int = 32,
               seed: int = 0, lr: float = 5e-3) -> Transformer:
    """A tiny model trained on motif_batch: masked diffusion (t ~ U(0,1), loss 1/t-weighted) or next-token."""
    with one_thread():
        return _train(attention, steps, length, batch, seed, lr)


def _train(attention: str, steps: int, length: int, batch: int, seed: int, lr: float) -> Transformer:
    tok_letters = letter_ids(byte_tokenizer())
    torch.manual_seed(seed)
    model = Transformer(tiny_lm_config(attention=attention, shift_logits=attention == "causal"))
    model.init_weights(std=0.02, seed=seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    gen = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(steps):
        x = motif_batch(tok_letters, batch, length, gen)
        if attention == "causal":
            logits = model(x[:, :-1])
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1))
        else:
            t = torch.rand(batch, 1, generator=gen).clamp_min(0.05)
            masked = torch.rand(batch, length, generator=gen) < t
            logits = model(torch.where(masked, MASK_ID, x))
            nll = F.cross_entropy(logits.transpose(1, 2), x, reduction="none")
            loss = (nll * masked / t).sum() / (batch * length)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()
