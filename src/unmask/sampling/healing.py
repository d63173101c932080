"""Token healing: let the answer's first token re-choose how the prompt's last token is merged.

A BPE tokenizer merges across the spot where a prompt ends and its continuation starts. Our code
tokenizer has one token for "):\n", so in training text a function header is almost never followed by
the token "):" alone; a prompt that ends in "):" puts the model somewhere it has rarely been, and small
models answer it on the same line. Healing removes the prompt's last token and constrains the first
answer token to the tokens whose text starts with the removed one ("):" itself, "):\n", "):\n\n");
the answer's text then drops that known beginning again, so the caller sees only what follows its
prompt. (The technique is Microsoft guidance's "token healing".)

Healing applies only where it is exact: a byte-level BPE tokenizer (byte strings map one-to-one onto its
token strings, so "text starts with" is "token string starts with"), a last token that is an ordinary
token, decodes to whole characters and has at least one longer extension in the vocabulary.
"""

from __future__ import annotations

import bisect
import functools
from dataclasses import dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class Healing:
    """The prompt's removed last token: the ids the answer's first token may take, and its text."""

    allowed_ids: tuple[int, ...]
    text: str

    def vocab_mask(self, vocab_size: int, device) -> torch.Tensor:
        """bool [vocab_size]: True where the first answer token may go."""
        mask = torch.zeros(vocab_size, dtype=torch.bool)
        mask[[i for i in self.allowed_ids if i < vocab_size]] = True
        return mask.to(device)

    def strip(self, text: str) -> str:
        """The answer's text without the healed prefix (which the prompt already ends with)."""
        return text[len(self.text):] if text.startswith(self.text) else text


class TokenHealer:
    """Finds a prompt's healing, for one tokenizer (a `tokenizers.Tokenizer`)."""

    def __init__(self, tokenizer: Any):
        self.tokenizer = tokenizer
        self.enabled = _is_byte_level(tokenizer)
        self._strings: list[str] = []
        self._ids: list[int] = []
        self._special: set[int] = set()
        if self.enabled:
            vocab = tokenizer.get_vocab(with_added_tokens=False)
            added = tokenizer.get_added_tokens_decoder() if hasattr(tokenizer, "get_added_tokens_decoder") else {}
            self._special = set(added)
            pairs = sorted((s, i) for s, i in vocab.items() if i not in self._special)
            self._strings = [s for s, _ in pairs]
            self._ids = [i for _, i in pairs]

    def heal(self, prompt_ids: list[int]) -> tuple[list[int], Healing] | None:
        """(prompt without its last token, the healing), or None where healing does not apply."""
        if not self.enabled or len(prompt_ids) < 2:
            return None
        last = prompt_ids[-1]
        if last in self._special:
            return None
        raw = self.tokenizer.id_to_token(last)
        if raw is None:
            return None
        text = self.tokenizer.decode([last], skip_special_tokens=False)
        if not text or "\ufffd" in text:
            return None  # a token inside a multi-byte character: its text is not a clean prefix
        lo = bisect.bisect_left(self._strings, raw)
        hi = bisect.bisect_left(self._strings, raw + "\U0010ffff")
        allowed = tuple(sorted(self._ids[lo:hi]))
        if len(allowed) < 2:
            return None  # nothing extends it: healing would change nothing
        return list(prompt_ids[:-1]), Healing(allowed, text)


@functools.lru_cache(maxsize=4)
def healer_for(tokenizer: Any) -> TokenHealer:
    """The healer of a tokenizer, built once: indexing a 150k vocabulary takes ~0.65 s, and generate() makes a
    new runner per call (an evaluation calls it once per batch)."""
    return TokenHealer(tokenizer)


def _is_byte_level(tokenizer: Any) -> bool:
    try:
        from tokenizers import decoders
    except ImportError:  # pragma: no cover - tokenizers is a core dependency
        return False
    return isinstance(getattr(tokenizer, "decoder", None), decoders.ByteLevel) and hasattr(tokenizer, "get_vocab")
