"""Corpus -> token shards: `unmask corpus tokenize CORPUS --tokenizer DIR --out SHARDS`.

Every document of a split is encoded (special-token strings inside documents stay plain text, see
tokenizer.document_encoder) and followed by <|endoftext|> (id 0), and the ids are appended to the
flat shards of shards.py. Encoding runs on `workers` processes over batches of about 1 MB of text,
in corpus order, so the output is the same for any number of workers.

index.json records, besides the shard list: num_bytes per split (UTF-8 bytes of the documents, so a
trainer can turn a loss per token into bits per byte), num_docs and num_tokens (separators included)
per split, tokens_per_byte (separators left out: the tokenizer's compression), the tokenizer's
sha256 and the corpus folder.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterator

import numpy as np
from tokenizers import Tokenizer

from ..errors import UnmaskError
from .corpus import SPLITS, iter_corpus_records, read_corpus_index
from .output import output_folder
from .parallel import Progress, ordered_map
from .shards import INDEX_FILE, ShardWriter, write_index
from .special_tokens import ENDOFTEXT_ID
from .tokenizer import check_special_tokens, document_encoder, load_tokenizer, tokenizer_sha256

BATCH_BYTES = 1 << 20

_ENCODER: dict[str, Any] = {}


def _init_encoder(tokenizer_json: str, in_pool: bool) -> None:
    if in_pool:
        # One process per core already; the library's own threads would only oversubscribe the cores.
        os.environ["TOKENIZERS_PARALLELISM"] = "false"
    _ENCODER["tok"] = document_encoder(Tokenizer.from_str(tokenizer_json))


def encode_documents(texts: list[str]) -> tuple[np.ndarray, int, int]:
    """(ids of every text each followed by <|endoftext|>, UTF-8 bytes of the texts, number of texts)."""
    eos = np.array([ENDOFTEXT_ID], dtype=np.int64)
    pieces = []
    for enc in _ENCODER["tok"].encode_batch(texts, add_special_tokens=False):
        pieces += [np.array(enc.ids, dtype=np.int64), eos]
    return np.concatenate(pieces), sum(len(t.encode("utf-8")) for t in texts), len(texts)


def _text_batches(corpus_dir: str | os.PathLike, split: str) -> Iterator[list[str]]:
    batch: list[str] = []
    size = 0
    for record in iter_corpus_records(corpus_dir, split):
        batch.append(record["text"])
        size += len(record["text"])
        if size >= BATCH_BYTES:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


def tokenize_corpus(corpus_dir: str | os.PathLike, tokenizer: Tokenizer | str | os.PathLike,
                    out_dir: str | os.PathLike, *, workers: int = 1, shard_tokens: int = 50_000_000,
                    progress: bool = True) -> dict[str, Any]:
    """Write token shards of both splits of `corpus_dir` to `out_dir` (atomically); returns the index."""
    corpus_index = read_corpus_index(corpus_dir)
    tokenizer_path = None
    if not isinstance(tokenizer, Tokenizer):
        tokenizer_path = str(Path(tokenizer).resolve())
        tokenizer = load_tokenizer(tokenizer)
    check_special_tokens(tokenizer, tokenizer_path or "the tokenizer")
    total_bytes = sum(e["num_bytes"] for split in SPLITS for e in corpus_index["splits"].get(split, []))
    if total_bytes == 0:
        raise UnmaskError(f"CORPUS {corpus_dir}: no documents to tokenize")
    vocab_size = tokenizer.get_vocab_size(with_added_tokens=True)
    splits, num_bytes, num_docs, num_tokens = {}, {}, {}, {}
    with output_folder(out_dir, INDEX_FILE) as tmp, \
            Progress("corpus tokenize", unit="B", unit_scale=True, total=total_bytes, enabled=progress) as bar:
        for split in SPLITS:
            writer = ShardWriter(tmp, split, vocab_size, shard_tokens=shard_tokens)
            num_bytes[split] = num_docs[split] = 0
            batches = ordered_map(encode_documents, _text_batches(corpus_dir, split), workers,
                                  initializer=_init_encoder, initargs=(tokenizer.to_str(), workers > 1))
            for ids, batch_bytes, batch_docs in batches:
                writer.add(ids)
                num_bytes[split] += batch_bytes
                num_docs[split] += batch_docs
                bar.update(batch_bytes)
            num_tokens[split] = writer.num_tokens
            splits[split] = writer.close()
        provenance = {
            "num_bytes": num_bytes, "num_docs": num_docs, "num_tokens": num_tokens,
            # The tokenizer's compression: document tokens (separators left out) per UTF-8 byte.
            "tokens_per_byte": {s: round((num_tokens[s] - num_docs[s]) / num_bytes[s], 5)
                                for s in SPLITS if num_bytes[s]},
            "tokenizer_sha256": tokenizer_sha256(tokenizer), "tokenizer": tokenizer_path,
            "corpus": str(Path(corpus_dir).resolve()),
        }
        write_index(tmp, vocab_size, ENDOFTEXT_ID, splits, **provenance)
    return {"vocab_size": vocab_size, "splits": splits, **provenance}
