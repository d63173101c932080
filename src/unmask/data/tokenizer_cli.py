"""`unmask tokenizer train CORPUS --vocab-size N --out DIR`: train the byte-level BPE code tokenizer.

Trains on the training split of a corpus folder (optionally a seeded sample of it, `--max-bytes`)
and writes DIR/tokenizer.json plus DIR/tokenizer_training.json (what it was trained on), atomically.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def register(subparsers, name: str, help_text: str) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(name, help=help_text, description=help_text)
    actions = parser.add_subparsers(dest="tokenizer_action", metavar="ACTION")

    def usage(args: argparse.Namespace) -> int:
        parser.print_help()
        return 2

    parser.set_defaults(func=usage)
    train = actions.add_parser(
        "train", help="train a byte-level BPE tokenizer on a corpus' training split",
        description="Train a byte-level BPE tokenizer (tokenizers library) on the training split of a corpus "
                    "folder. Ids 0-5 are <|endoftext|>, <|mask|>, <|pad|>, <|fim_prefix|>, <|fim_suffix|>, "
                    "<|fim_middle|>; every text round-trips byte for byte.")
    train.add_argument("corpus", metavar="CORPUS", help="corpus folder written by 'unmask corpus build'")
    train.add_argument("--vocab-size", type=int, required=True, help="vocabulary size, special tokens included")
    train.add_argument("--out", required=True, help="folder to write tokenizer.json into (replaced atomically)")
    train.add_argument("--min-frequency", type=int, default=2, help="fewest occurrences of a merged pair (default 2)")
    train.add_argument("--max-bytes", type=int, default=None,
                       help="train on a seeded random sample of about this many bytes of the training split")
    train.add_argument("--seed", type=int, default=0, help="seed of the --max-bytes sample (default 0)")
    train.add_argument("--no-progress", action="store_true", help="no progress bar")
    train.set_defaults(func=run_train)
    return parser


def run_train(args: argparse.Namespace) -> int:
    from ..errors import UnmaskError
    from .corpus import in_hash_sample, iter_corpus_records, read_corpus_index
    from .output import output_folder
    from .tokenizer import TOKENIZER_FILE, check_vocab_size, save_tokenizer, tokenizer_sha256, train_tokenizer

    check_vocab_size(args.vocab_size)
    if args.max_bytes is not None and args.max_bytes <= 0:
        raise UnmaskError(f"--max-bytes {args.max_bytes}: must be positive")
    index = read_corpus_index(args.corpus)
    entries = index["splits"].get("train", [])
    total_docs = sum(e["num_docs"] for e in entries)
    total_bytes = sum(e["num_bytes"] for e in entries)
    if total_docs == 0:
        raise UnmaskError(f"CORPUS {args.corpus}: the training split is empty")
    fraction = 1.0 if args.max_bytes is None else min(1.0, args.max_bytes / total_bytes)
    used = {"docs": 0, "bytes": 0}

    def texts():
        for record in iter_corpus_records(args.corpus, "train"):
            if fraction < 1.0 and not in_hash_sample(record["sha256"], fraction, f"tokenizer:{args.seed}"):
                continue
            used["docs"] += 1
            used["bytes"] += len(record["text"].encode("utf-8"))
            yield record["text"]

    start = time.time()
    with output_folder(args.out, TOKENIZER_FILE) as tmp:
        tok = train_tokenizer(texts(), args.vocab_size, min_frequency=args.min_frequency,
                              show_progress=not args.no_progress,
                              length=total_docs if fraction == 1.0 else None)
        save_tokenizer(tok, tmp)
        info = {"corpus": str(Path(args.corpus).resolve()), "vocab_size": tok.get_vocab_size(),
                "requested_vocab_size": args.vocab_size, "min_frequency": args.min_frequency,
                "max_bytes": args.max_bytes, "seed": args.seed, "num_docs": used["docs"],
                "num_bytes": used["bytes"], "elapsed_s": round(time.time() - start, 2),
                "sha256": tokenizer_sha256(tok)}
        (tmp / "tokenizer_training.json").write_text(json.dumps(info, indent=2) + "\n")
    print(f"tokenizer: {Path(args.out) / TOKENIZER_FILE}  ({info['vocab_size']} tokens, trained on "
          f"{used['docs']:,} files / {used['bytes'] / 1e6:,.1f} MB in {info['elapsed_s']:.0f} s)")
    return 0
