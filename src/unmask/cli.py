"""The `unmask` command: one entry point, one subcommand per stage of the pipeline.

    unmask corpus build SRC... --out DIR      collect, filter, dedup, decontaminate source files
    unmask tokenizer train CORPUS --out DIR   train a byte-level BPE code tokenizer
    unmask corpus tokenize CORPUS ...         write flat token shards for training
    unmask train --config FILE.toml           train a diffusion model or its autoregressive twin
    unmask teacher --model M --shards S ...   a model's own answers as shards (self-distillation data)
    unmask generate PROMPT                    sample code from a model (the bundled default by default)
    unmask serve                              OpenAI-compatible HTTP server
    unmask eval TASK --model DIR              HumanEval, infilling, likelihood
    unmask bench                              speed, side by side with the vanilla sampler and the AR twin

Each stage defines its own flags in `<stage>/cli.py` (a `register(subparsers)` function); the
heavy imports happen only when a subcommand runs, so `unmask --help` is instant.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from . import __version__
from .cpu_threads import restore_threads
from .errors import UnmaskError

# (subcommand, module that registers it, one-line help). The order is the order of the pipeline.
SUBCOMMANDS = [
    ("corpus", "unmask.data.cli", "build a code corpus and tokenize it into shards"),
    ("tokenizer", "unmask.data.tokenizer_cli", "train a code tokenizer on a corpus"),
    ("train", "unmask.train.cli", "train a masked-diffusion, block-diffusion or autoregressive model"),
    ("teacher", "unmask.train.teacher_cli",
     "write a diffusion model's own answers as token shards, to distill it into a faster decoder"),
    ("generate", "unmask.sampling.cli", "generate code from a prompt (and an optional suffix)"),
    ("serve", "unmask.serve.cli", "run the OpenAI-compatible HTTP server"),
    ("eval", "unmask.evals.cli", "evaluate a model: HumanEval, infilling, likelihood"),
    ("bench", "unmask.bench.cli", "measure decoding speed against the vanilla sampler and the AR twin"),
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="unmask",
        description="Train, sample, serve and benchmark diffusion language models of code.",
        epilog="Run 'unmask SUBCOMMAND --help' for the options of each subcommand.",
    )
    parser.add_argument("--version", action="version", version=f"unmask {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="SUBCOMMAND")
    for name, module_name, help_text in SUBCOMMANDS:
        module = importlib.import_module(module_name)
        module.register(sub, name, help_text)
    return parser


def not_built(parser: argparse.ArgumentParser, issue: int) -> None:
    """Mark a subcommand whose work another issue builds: it says so plainly and exits 2."""

    def run(args: argparse.Namespace) -> int:
        print(f"unmask {args.command}: not built yet (tracked in issue #{issue})", file=sys.stderr)
        return 2

    parser.set_defaults(func=run)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0 if args.command is None else 2
    try:
        return int(args.func(args) or 0)
    except UnmaskError as e:
        if os.environ.get("UNMASK_DEBUG"):
            raise
        print(f"unmask {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"unmask {args.command}: interrupted", file=sys.stderr)
        return 130
    finally:
        restore_threads()


if __name__ == "__main__":
    sys.exit(main())
