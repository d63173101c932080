"""The sampler's command-line flags, shared by every command that decodes (generate, eval, serve, bench).

    from unmask.sampling.cli_args import add_sampler_arguments, sampler_config_from_args

    def register(subparsers, name, help_text):            # at start-up: argparse only
        p = subparsers.add_parser(name, help=help_text)
        add_sampler_arguments(p.add_argument_group("sampler"), exclude=("seed",))
        ...

    def run(args):                                          # after parsing
        lm = load_model(args.model)
        config = sampler_config_from_args(args, lm.generation_config, seed=args.seed)

Every flag defaults to None ("not given"): the model folder's generation_config.json supplies the
value, a flag that is given overrides it, and keyword overrides win over both. Bad values are one-line
UnmaskErrors that name the flag. This module imports only argparse (and SamplerConfig lazily), so that
`unmask --help` stays instant.
"""

from __future__ import annotations

import argparse
from typing import Any, Iterable

POLICY_CHOICES = ("steps", "threshold", "entropy")
ORDER_CHOICES = ("confidence", "random")
CACHE_CHOICES = ("auto", "none", "prefix", "dual", "dual-lazy", "block", "kv")

# argparse destination -> (flag, SamplerConfig field). The destinations are the names commands read.
SAMPLER_FLAGS = {
    "policy": ("--policy", "policy"),
    "threshold": ("--threshold", "threshold"),
    "entropy_bound": ("--entropy-bound", "entropy_bound"),
    "steps": ("--steps", "steps_per_block"),
    "order": ("--order", "order"),
    "block_length": ("--block-size", "block_length"),
    "cache": ("--cache", "cache"),
    "refresh_every": ("--refresh-every", "refresh_every"),
    "max_new_tokens": ("--max-new-tokens", "max_new_tokens"),
    "temperature": ("--temperature", "temperature"),
    "top_p": ("--top-p", "top_p"),
    "top_k": ("--top-k", "top_k"),
    "seed": ("--seed", "seed"),
    "stop": ("--stop", "stop"),
    "stop_token_ids": ("--stop-token-ids", "stop_token_ids"),
    "infill_length": ("--infill-length", "infill_length"),
    "token_healing": ("--no-token-healing", "token_healing"),
    "suffix_healing": ("--no-suffix-healing", "suffix_healing"),
    "frequency_penalty": ("--frequency-penalty", "frequency_penalty"),
    "presence_penalty": ("--presence-penalty", "presence_penalty"),
    "stop_at_block_end": ("--stop-at-block-end", "stop_at_block_end"),
}
_REGISTERED = "sampler_flags"  # namespace attribute: the destinations add_sampler_arguments added


def add_sampler_arguments(group, *, exclude: Iterable[str] = ()) -> None:
    """Add the sampler flags to an argparse parser or argument group.

    exclude: destinations (keys of SAMPLER_FLAGS, e.g. "seed", "infill_length") that the command defines
    itself with another meaning; sampler_config_from_args then leaves those fields alone.
    """
    exclude = set(exclude)
    unknown = exclude - set(SAMPLER_FLAGS)
    assert not unknown, f"not sampler flags: {sorted(unknown)}"
    specs = {
        "policy": dict(choices=POLICY_CHOICES, help="which masked positions a step reveals"),
        "threshold": dict(type=float, metavar="TAU",
                          help="threshold policy: reveal every position whose confidence is >= TAU, in (0, 1]"),
        "entropy_bound": dict(type=float, metavar="NATS", help="entropy policy: summed-entropy bound in nats"),
        "steps": dict(type=int, metavar="N", help="steps policy: steps per block (default: one token per step)"),
        "order": dict(choices=ORDER_CHOICES, help="steps policy: reveal order"),
        "block_length": dict(type=int, metavar="N",
                             help="semi-autoregressive block length in tokens (0: the whole answer at once; "
                                  "default 32, or a block-diffusion model's own block size)"),
        "cache": dict(choices=CACHE_CHOICES,
                      help="key/value cache (auto: the best exact or fast one for the model; dual-lazy: dual without "
                           "the whole-canvas pass at each later block's start)"),
        "refresh_every": dict(type=int, metavar="N",
                              help="prefix/dual/dual-lazy cache: also refresh it every N steps inside a block "
                                   "(0: never)"),
        "max_new_tokens": dict(type=int, metavar="N", help="answer length limit in tokens"),
        "temperature": dict(type=float, metavar="T", help="sampling temperature (0: greedy)"),
        "top_p": dict(type=float, metavar="P", help="nucleus sampling: keep this much probability mass, in (0, 1]"),
        "top_k": dict(type=int, metavar="K", help="keep only the K most likely tokens (0: all)"),
        "seed": dict(type=int, metavar="N", help="seed of the sampling noise (default 0)"),
        "stop": dict(action="append", metavar="TEXT", help="stop string (repeatable)"),
        "stop_token_ids": dict(metavar="IDS",
                               help="comma-separated token ids that end an answer, or 'none' (run to "
                                    "--max-new-tokens); default: the model's end-of-text ids"),
        "infill_length": dict(type=int, metavar="N",
                              help="infill: the middle's length in tokens (default: try several, keep the best)"),
        "token_healing": dict(action="store_const", const=False,
                              help="keep the prompt's last token as tokenized (default: the answer's first token may "
                                   "re-merge it, e.g. '):' + newline, as in training text)"),
        "suffix_healing": dict(action="store_const", const=False,
                               help="infill: keep a suffix's leading newline in the suffix (default: the middle gets "
                                    "it, so its last token may merge it, e.g. '):' + newline, as in training text)"),
        "frequency_penalty": dict(type=float, metavar="F",
                                  help="lower each token's logit by F times its count in the answer so far, in "
                                       "[-2, 2] (OpenAI's; default 0)"),
        "presence_penalty": dict(type=float, metavar="P",
                                 help="lower the logit of every token already in the answer by P, in [-2, 2] "
                                      "(OpenAI's; default 0)"),
        "stop_at_block_end": dict(action=argparse.BooleanOptionalAction,
                                  help="Python prompts: end the answer where the indented block the prompt opens "
                                       "(e.g. 'def f(x):') or is inside ends, before the next line indented no "
                                       "deeper than its header (default: off; on for `unmask generate`)"),
    }
    added = []
    for dest, (flag, _) in SAMPLER_FLAGS.items():
        if dest in exclude:
            continue
        aliases = ("--block-length",) if dest == "block_length" else ()
        group.add_argument(flag, *aliases, dest=dest, default=None, **specs[dest])
        added.append(dest)
    group.set_defaults(**{_REGISTERED: tuple(added)})


def sampler_config_from_args(args: argparse.Namespace, generation_config: dict[str, Any] | None = None,
                             **overrides: Any):
    """A SamplerConfig: `generation_config`'s defaults, then the flags given on the command line, then
    `overrides` (keyword arguments named as SamplerConfig fields; None values are ignored).

    Raises UnmaskError naming the flag for a bad flag value.
    """
    from ..errors import UnmaskError
    from .config import SamplerConfig

    base = SamplerConfig.from_generation_config(generation_config)
    dests = getattr(args, _REGISTERED, None)
    if dests is None:  # a namespace built by hand: every sampler destination it has
        dests = [d for d in SAMPLER_FLAGS if hasattr(args, d)]
    flags: dict[str, Any] = {}
    for dest in dests:
        value = getattr(args, dest, None)
        if value is None:
            continue
        flag, name = SAMPLER_FLAGS[dest]
        if dest == "threshold" and not 0 < value <= 1:
            raise UnmaskError(f"{flag} must be in (0, 1], got {value}")
        if dest == "stop":
            value = tuple(value)
        if dest == "stop_token_ids":
            value = _token_ids(value, flag)
        flags[name] = value
    try:
        config = base.replace(**flags)
    except UnmaskError as e:
        # SamplerConfig names the field first; on the command line, the flag is the name the user knows.
        field = str(e).split(" ", 1)[0]
        flag = next((f for f, n in SAMPLER_FLAGS.values() if n == field), None)
        raise UnmaskError(f"{flag}{str(e)[len(field):]}" if flag else str(e)) from None
    given = {k: v for k, v in overrides.items() if v is not None}
    return config.replace(**given) if given else config


def _token_ids(text: str, flag: str) -> tuple[int, ...]:
    from ..errors import UnmaskError

    if text.strip().lower() == "none":
        return ()
    try:
        ids = tuple(int(t) for t in text.split(",") if t.strip())
    except ValueError:
        raise UnmaskError(f"{flag} {text!r}: expected comma-separated token ids such as 2,7 (or 'none')") from None
    if not ids:
        raise UnmaskError(f"{flag} {text!r}: expected comma-separated token ids such as 2,7 (or 'none')")
    return ids
