"""`unmask bench`: decoding speed, side by side, in one run, on the same prompts and new-token budget.

    unmask bench --limit 8 --out runs/bench                  # bundled default vs vanilla vs default-ar
    unmask bench --model DIR --ar-model DIR2 --batch-sizes 1,8 --device cuda --out runs/bench-gpu
    unmask bench --shape llada-8b --random-weights --device cuda        # the engine alone, untrained weights
    unmask bench --shape llada-8b --random-weights --layers 2           # a truncated shape that fits a CPU
    unmask bench serve --url http://127.0.0.1:8000 --concurrency 1,8,32 --requests 64 --max-tokens 64 --stream

Decode mode measures the vanilla sampler, every fast policy and cache, and the autoregressive twin (cases.py);
shape mode measures forward passes per step type against the weight-read floor (shapes.py); serve mode is a
load generator against a running OpenAI-compatible server (serve_run.py). The table goes
to stdout; with --out, bench.md and bench.json (figures, hardware, software, settings) too.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..cpu_threads import HELP as THREADS_HELP


def register(subparsers, name: str, help_text: str) -> argparse.ArgumentParser:
    p = subparsers.add_parser(name, help=help_text, description=help_text,
                              usage="unmask bench [decode] [options]   (or --shape NAME --random-weights)\n"
                                    "       unmask bench serve --url URL [--concurrency C] [--requests R] [options]")
    p.add_argument("mode", nargs="?", choices=("decode", "serve"), default="decode",
                   help="decode (default): load models here and decode; serve: load-test a running server at --url")
    p.add_argument("--model", default=None, metavar="DIR|NAME",
                   help="diffusion model folder or bundled name (default: 'default'); serve mode: the request's "
                        "model field (default: none, the server's first)")
    p.add_argument("--ar-model", default=None, metavar="DIR|NAME|none",
                   help="autoregressive twin folder or bundled name; 'none' skips it (default: 'default-ar' "
                        "when --model is the bundled default, else none)")
    p.add_argument("--prompts", "--prompt-file", dest="prompts", default="humaneval", metavar="humaneval|FILE",
                   help="'humaneval' (default), a .jsonl file with a \"prompt\" per line, or a text file that is "
                        "one prompt")
    p.add_argument("--limit", type=int, default=None, metavar="N",
                   help="use the first N prompts (default 8; serve mode: all; 0: all)")
    p.add_argument("--max-new-tokens", "--max-tokens", dest="max_new_tokens", type=int, default=128, metavar="N",
                   help="new tokens per request (default 128)")
    p.add_argument("--batch-sizes", default=None, metavar="B1,B2,...",
                   help="comma-separated batch sizes (default 1,8; shape mode 1,8,32)")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:1, ...")
    p.add_argument("--threads", metavar="N", type=int, default=0, help=THREADS_HELP)
    p.add_argument("--dtype", choices=("auto", "float32", "bfloat16"), default="auto",
                   help="auto: bfloat16 on a GPU; on a CPU the stored dtype (shape mode: float32)")
    p.add_argument("--repeats", type=int, default=3, metavar="N",
                   help="timed runs per case; the median is reported. Decode mode runs them in rounds, one "
                        "run of every case per round, so a drifting machine biases no case (default 3)")
    p.add_argument("--warmup", type=int, default=1, metavar="N",
                   help="untimed runs before timing (default 1; shape mode makes at least one, to size its runs)")
    p.add_argument("--threshold", type=float, default=None, metavar="P",
                   help="threshold policy setting (default: the model's)")
    p.add_argument("--entropy-bound", type=float, default=None, metavar="NATS",
                   help="entropy policy bound (default: the model's)")
    p.add_argument("--out", type=Path, default=None, metavar="DIR",
                   help="write bench.md and bench.json into this folder")
    p.add_argument("--seed", type=int, default=0, metavar="N", help="seed for sampling and random weights (default 0)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    s = p.add_argument_group("shape mode (the engine without trained weights)")
    s.add_argument("--shape", default=None, metavar="NAME",
                   help="llada-8b, dream-7b, default, or dD-lN[-vV] (e.g. d256-l6)")
    s.add_argument("--random-weights", action="store_true", help="required with --shape: weights are random")
    s.add_argument("--layers", type=int, default=None, metavar="N",
                   help="build only N of the shape's layers (figures labelled truncated)")
    s.add_argument("--context", type=int, default=256, metavar="L",
                   help="canvas / cache length in tokens (default 256)")
    s.add_argument("--block", type=int, default=32, metavar="N",
                   help="block length of the block steps in tokens (default 32)")
    s.add_argument("--tokens-per-forward", type=Path, default=None, metavar="BENCH_JSON",
                   help="a decode-mode bench.json of a trained model: derive tokens/s = forwards/s x its "
                        "measured tokens per forward")
    v = p.add_argument_group("serve mode (unmask bench serve: requests to POST /v1/completions)")
    v.add_argument("--url", default=None, help="the server's address, e.g. http://127.0.0.1:8000 (a /v1 suffix is "
                                                "accepted)")
    v.add_argument("--concurrency", default="8", metavar="C[,C2,...]",
                   help="requests in flight at once; a comma-separated list runs each in turn (default 8)")
    v.add_argument("--requests", type=int, default=64, metavar="R", help="requests per concurrency level (default 64)")
    v.add_argument("--stream", action="store_true", help="stream the answers (measures time to first token)")
    v.add_argument("--api-key", default=None, metavar="KEY", help="bearer key (default: env UNMASK_API_KEY, else none)")
    v.add_argument("--temperature", type=float, default=None, metavar="T",
                   help="sent with each request (default: not sent, the server's default)")
    v.add_argument("--timeout", type=float, default=600.0, metavar="S", help="per-request timeout (default 600)")
    p.set_defaults(func=run)
    return p


def parse_batch_sizes(text: str | None, default: list[int]) -> list[int]:
    from ..errors import UnmaskError

    if text is None:
        return default
    try:
        sizes = [int(x) for x in text.split(",")]
    except ValueError:
        sizes = []
    if not sizes or any(b < 1 for b in sizes):
        raise UnmaskError(f"--batch-sizes must be comma-separated positive integers such as 1,8, got {text!r}")
    return sorted(set(sizes))


def _device(name: str):
    import torch

    from ..errors import UnmaskError

    try:
        device = torch.device(name)
    except RuntimeError:
        raise UnmaskError(f"--device {name}: not a device name (cpu, cuda, cuda:1, ...)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UnmaskError(f"--device {name}: no CUDA device is available")
    if device.type not in ("cpu", "cuda"):
        raise UnmaskError(f"--device {name}: only cpu and cuda are supported")
    return device


def _check_counts(args: argparse.Namespace) -> None:
    from ..errors import UnmaskError

    for flag, value, low in (("--repeats", args.repeats, 1), ("--warmup", args.warmup, 0), ("--limit", args.limit, 0),
                             ("--max-new-tokens", args.max_new_tokens, 1)):
        if value < low:
            raise UnmaskError(f"{flag} must be >= {low}, got {value}")


def run(args: argparse.Namespace) -> int:
    from ..cpu_threads import use_threads
    from ..errors import UnmaskError

    if args.mode == "serve":
        if args.shape is not None or args.random_weights:
            raise UnmaskError("--shape / --random-weights belong to decode mode, not unmask bench serve")
        if args.limit is not None and args.limit < 0:
            raise UnmaskError(f"--limit must be >= 0, got {args.limit}")
        from .serve_run import run_serve

        return run_serve(args)
    if args.url is not None:
        raise UnmaskError("--url is for serve mode: unmask bench serve --url URL")
    if args.limit is None:
        args.limit = 8
    import torch

    _check_counts(args)
    if args.shape is not None and not args.random_weights:
        raise UnmaskError("--shape measures untrained weights; add --random-weights")
    if args.random_weights and args.shape is None:
        raise UnmaskError("--random-weights needs --shape NAME")
    device = _device(args.device)
    use_threads(args.threads, args.device)
    torch.manual_seed(args.seed)
    if args.shape is not None:
        from .shape_run import run_shape

        return run_shape(args, device)
    from .decode_run import run_decode

    return run_decode(args, device)
