"""`unmask serve`: serve models over an OpenAI-compatible HTTP API (FastAPI + uvicorn, the `serve` extra).

    unmask serve                                   # the bundled 'default' (and 'default-ar' when installed)
    unmask serve --model runs/x/final --port 8000 --api-key KEY --max-batch 16 --max-queue 64
    unmask serve --model default,default-ar        # the `model` field of a request picks one

It binds to 127.0.0.1 unless --host says otherwise. Sampler defaults come from each model folder's
generation_config.json, then the flags below; a request's own fields override both. SIGTERM (or Ctrl-C)
stops admitting, lets in-flight requests finish for up to --graceful-timeout seconds, cancels the rest
and exits 0.
"""

from __future__ import annotations

import argparse
import os

from ..cpu_threads import HELP as THREADS_HELP
from ..sampling.cli_args import add_sampler_arguments


def register(subparsers, name: str, help_text: str) -> argparse.ArgumentParser:
    p = subparsers.add_parser(name, help=help_text, description=help_text)
    p.add_argument("--model", action="append", default=None, metavar="NAME_OR_DIR",
                   help="model to serve: a checkpoint folder or a bundled name; repeatable or comma-separated "
                        "(default: 'default', plus 'default-ar' when it is installed); the first is used when a "
                        "request names none")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", metavar="PORT", type=int, default=8000, help="port (default 8000)")
    p.add_argument("--api-key", metavar="KEY", default=None,
                   help="require 'Authorization: Bearer KEY' on /v1 routes (default: env UNMASK_API_KEY, else none)")
    p.add_argument("--max-batch", metavar="N", type=int, default=16, help="rows decoding at once (default 16)")
    p.add_argument("--max-queue", metavar="N", type=int, default=64,
                   help="requests waiting for a batch before new ones get 429 (default 64)")
    p.add_argument("--max-tokens", metavar="N", type=int, default=512,
                   help="the largest max_tokens a request may ask (default 512)")
    p.add_argument("--max-n", metavar="N", type=int, default=8,
                   help="the most choices (n x prompts) per request (default 8)")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:1, ...")
    p.add_argument("--threads", metavar="N", type=int, default=0, help=THREADS_HELP)
    p.add_argument("--seed", metavar="N", type=int, default=0,
                   help="seeds the seeds of requests that give none (default 0); a request's seed is its own")
    p.add_argument("--graceful-timeout", metavar="S", type=float, default=30.0,
                   help="on SIGTERM, seconds to let in-flight requests finish (default 30)")
    s = p.add_argument_group("sampler defaults (each model's generation_config.json, then these; a request's own "
                             "fields win; --max-new-tokens: for requests without max_tokens)")
    add_sampler_arguments(s, exclude=("seed", "stop", "infill_length"))
    p.set_defaults(func=run)
    return p


def model_names(values: list[str] | None) -> list[str]:
    """The --model values as a list of names or folders; the bundled ones by default."""
    from ..errors import UnmaskError
    from ..model.loading import BUNDLED_MODELS_DIR

    if not values:
        names = ["default"]
        if (BUNDLED_MODELS_DIR / "default-ar" / "config.json").is_file():
            names.append("default-ar")
        return names
    names = [n.strip() for v in values for n in v.split(",") if n.strip()]
    if not names:
        raise UnmaskError("--model: give a model folder or a bundled name")
    return names


def loader(names: list[str], args: argparse.Namespace):
    """A function that loads every model (run on the engine's thread) after resolving them up front here."""
    from ..errors import UnmaskError
    from ..model.loading import load_model, resolve_model_path
    from ..sampling.cli_args import sampler_config_from_args
    from .engine import ServedModel

    resolved = [resolve_model_path(n) for n in names]  # a missing model is a one-line error before binding
    served_names = [name for name, _ in resolved]
    if len(set(served_names)) != len(served_names):
        raise UnmaskError(f"--model: two models would be served under the same name ({', '.join(served_names)})")

    def load() -> list[ServedModel]:
        models = []
        for name, path in resolved:
            lm = load_model(path, device=args.device)
            lm.model.eval()
            defaults = sampler_config_from_args(args, lm.generation_config)
            models.append(ServedModel(name, lm, defaults))
        return models

    return load


def build_app(args: argparse.Namespace):
    """(app, engine) for these arguments; nothing is loaded until the app starts."""
    from ..errors import UnmaskError

    try:
        from .app import Limits, create_app
        from .engine import Engine
        from .metrics import Metrics
    except ImportError as e:
        raise UnmaskError(f"unmask serve needs the serve extra ({e.name} is missing): "
                          "pip install 'unmask[serve]'") from None
    for flag, value in (("--max-batch", args.max_batch), ("--max-queue", args.max_queue),
                        ("--max-tokens", args.max_tokens), ("--max-n", args.max_n)):
        if value < 1:
            raise UnmaskError(f"{flag} must be at least 1, got {value}")
    api_key = args.api_key if args.api_key is not None else os.environ.get("UNMASK_API_KEY") or None
    metrics = Metrics()
    engine = Engine(loader(model_names(args.model), args), max_batch=args.max_batch, max_queue=args.max_queue,
                    metrics=metrics)
    app = create_app(engine, api_key=api_key, limits=Limits(args.max_tokens, args.max_n), seed=args.seed,
                     metrics=metrics)
    return app, engine


def run(args: argparse.Namespace) -> int:
    import signal
    import sys
    import threading

    from ..cpu_threads import use_threads
    from ..errors import UnmaskError

    use_threads(args.threads, args.device)
    app, engine = build_app(args)
    api_key = args.api_key if args.api_key is not None else os.environ.get("UNMASK_API_KEY") or None
    import uvicorn

    config = uvicorn.Config(app, host=args.host, port=args.port, log_level="info",
                            timeout_graceful_shutdown=args.graceful_timeout)
    server = uvicorn.Server(config)

    def stop_on_load_error() -> None:
        engine.ready.wait()
        if engine.load_error is not None:
            server.should_exit = True
        else:
            print(f"unmask serve: ready, serving {', '.join(engine.models)}", file=sys.stderr)

    threading.Thread(target=stop_on_load_error, daemon=True).start()
    if api_key is None and args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"unmask serve: warning: listening on {args.host} without an API key (set --api-key or "
              "UNMASK_API_KEY)", file=sys.stderr)
    print(f"unmask serve: loading {', '.join(model_names(args.model))}; http://{args.host}:{args.port}/v1",
          file=sys.stderr)
    # uvicorn shuts down gracefully on SIGTERM, then re-raises the signal to the handler it found: make
    # that one a no-op so that a clean shutdown exits 0.
    main_thread = threading.current_thread() is threading.main_thread()  # signals belong to the main thread
    previous = signal.signal(signal.SIGTERM, lambda *_: None) if main_thread else None
    try:
        server.run()
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous)
    if engine.load_error is not None:
        e = engine.load_error
        raise UnmaskError(str(e) if isinstance(e, UnmaskError) else f"loading failed: {type(e).__name__}: {e}")
    return 0
