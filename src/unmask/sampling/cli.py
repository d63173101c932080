"""`unmask generate`: generate code with a diffusion model or its autoregressive twin.

    unmask generate 'def fibonacci(n):'                       # the bundled default model
    unmask generate --model runs/x/final --prompt-file p.py --policy threshold --threshold 0.9 --stats
    echo 'import os' | unmask generate --model DIR --watch    # prompt from stdin; watch the draft refine
    unmask generate 'def f(x):\n    return ' --suffix '\n' --model DIR   # infill between prompt and suffix

Sampler defaults come from the model folder's generation_config.json; flags (cli_args.py, shared with
`unmask eval`, `serve` and `bench`) override them. One default is generate's own: a Python completion ends
where the block the prompt opens or is inside ends (--no-stop-at-block-end writes on to the token budget).
The generated text goes to stdout (after the prompt, unless --only-new); --stats writes the
statistics to stderr; --json writes one JSON object instead.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..cpu_threads import HELP as THREADS_HELP
from .cli_args import CACHE_CHOICES, POLICY_CHOICES, add_sampler_arguments, sampler_config_from_args

__all__ = ["CACHE_CHOICES", "POLICY_CHOICES", "register", "run"]


def register(subparsers, name: str, help_text: str) -> argparse.ArgumentParser:
    p = subparsers.add_parser(name, help=help_text, description=help_text)
    p.add_argument("prompt", nargs="?", default=None,
                   help="the prompt; '-' or nothing (with a pipe) reads it from stdin")
    p.add_argument("--prompt-file", type=Path, help="read the prompt from this file")
    p.add_argument("--model", default=None, help="checkpoint folder or bundled name (default: the bundled 'default')")
    p.add_argument("--suffix", default=None, help="infill: the text after the gap (the prompt is the text before)")
    p.add_argument("--suffix-file", type=Path, help="infill: read the suffix from this file")
    add_sampler_arguments(p.add_argument_group("sampler (defaults: the model's generation_config.json, then these)"))
    # An interactive completion of 'def f(x):' should be the function, not the rest of a file cut at the token
    # budget: generate ends Python answers at the end of the prompt's block unless --no-stop-at-block-end.
    p.set_defaults(stop_at_block_end=True)
    o = p.add_argument_group("output")
    o.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:1, ...")
    o.add_argument("--threads", metavar="N", type=int, default=0, help=THREADS_HELP)
    o.add_argument("--watch", action="store_true", help="draw the draft as it refines")
    o.add_argument("--stats", action="store_true",
                   help="print forward passes, tokens per forward and tokens/s to stderr")
    o.add_argument("--only-new", action="store_true", help="print only the generated text, not the prompt")
    o.add_argument("--json", action="store_true", help="print the result as one JSON object")
    p.set_defaults(func=run)
    return p


def read_text(args: argparse.Namespace) -> tuple[str, str | None]:
    """(prompt, suffix) from the argument, a file or stdin; UnmaskError when there is none or it is empty."""
    from ..errors import UnmaskError

    if args.prompt is not None and args.prompt_file is not None:
        raise UnmaskError("give the prompt either as an argument or with --prompt-file, not both")
    if args.prompt_file is not None:
        prompt = _read_file(args.prompt_file, "--prompt-file")
    elif args.prompt is not None and args.prompt != "-":
        prompt = args.prompt
    elif args.prompt == "-" or not sys.stdin.isatty():
        prompt = sys.stdin.read()
    else:
        raise UnmaskError("no prompt: give PROMPT, --prompt-file FILE, or pipe it on stdin")
    if args.suffix is not None and args.suffix_file is not None:
        raise UnmaskError("give the suffix either with --suffix or with --suffix-file, not both")
    suffix = _read_file(args.suffix_file, "--suffix-file") if args.suffix_file is not None else args.suffix
    if not prompt.strip() and suffix is None:
        raise UnmaskError("the prompt is empty")
    return prompt, suffix


def _read_file(path: Path, flag: str) -> str:
    from ..errors import UnmaskError

    try:
        return path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise UnmaskError(f"{flag} {path}: cannot read it ({e.__class__.__name__})") from None


def run(args: argparse.Namespace) -> int:
    from ..cpu_threads import use_threads
    from ..errors import UnmaskError
    from ..model import load_model
    from .generate import Request, generate, stream

    prompt, suffix = read_text(args)
    use_threads(args.threads, args.device)
    lm = load_model(args.model, device=args.device)
    if lm.tokenizer is None:
        raise UnmaskError(f"{lm.path}: no tokenizer.json in the model folder")
    config = sampler_config_from_args(args, lm.generation_config)
    request = Request(prompt=prompt, suffix=suffix)
    if args.watch:
        view = _Watch(prompt if not args.only_new else "")
        for event in stream(lm.model, lm.tokenizer, [request], config, drafts=True):
            if event.draft is not None:
                view.draw(event.draft, event.step)
            if event.done:
                result = event.result
        view.clear()
    else:
        [result] = generate(lm.model, lm.tokenizer, [request], config)
    if args.json:
        print(json.dumps({"text": result.text, "finish_reason": result.finish_reason,
                          "prompt_tokens": result.prompt_tokens, "infill_length": result.infill_length,
                          "stats": result.stats.to_dict(), "config": config.to_dict()}))
    else:
        head = "" if args.only_new else prompt
        tail = "" if args.only_new or suffix is None else suffix
        sys.stdout.write(head + result.text + tail + ("" if (head + result.text + tail).endswith("\n") else "\n"))
    if args.stats:
        sys.stdout.flush()  # the answer before its stats line when both go to one terminal or file
        st = result.stats
        print(f"forward passes {st.forward_passes}, tokens {st.tokens}, {st.tokens_per_forward:.2f} tokens/forward, "
              f"{st.wall_time_s:.3f} s, {st.tokens_per_s:.1f} tokens/s ({result.finish_reason})", file=sys.stderr)
    return 0


class _Watch:
    """Redraws the prompt and the current draft in place on a terminal, or prints each draft otherwise."""

    def __init__(self, prompt: str):
        self.prompt = prompt
        self.tty = sys.stderr.isatty()
        self.lines = 0

    def draw(self, draft: str, step: int) -> None:
        text = f"{self.prompt}{draft}\n[step {step}]"
        if self.tty:
            if self.lines:
                sys.stderr.write(f"\x1b[{self.lines}F\x1b[J")
            sys.stderr.write(text + "\n")
            self.lines = text.count("\n") + 1
        else:
            sys.stderr.write(text + "\n")
        sys.stderr.flush()

    def clear(self) -> None:
        if self.tty and self.lines:
            sys.stderr.write(f"\x1b[{self.lines}F\x1b[J")
            sys.stderr.flush()
