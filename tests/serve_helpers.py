"""Helpers for the server tests: tiny model folders and a real uvicorn server on a free loopback port."""

from __future__ import annotations

import argparse
import atexit
import contextlib
import functools
import shutil
import socket
import tempfile
import threading
import time
from pathlib import Path

import httpx

from sampling_helpers import byte_tokenizer, one_thread, random_lm, train_tiny
from unmask.model import save_pretrained

_ROOT = Path(tempfile.mkdtemp(prefix="unmask-serve-tests-"))
atexit.register(shutil.rmtree, _ROOT, ignore_errors=True)


@functools.lru_cache(maxsize=None)
def diffusion_folder() -> Path:
    """The motif-trained diffusion model (continues 'abcd' with 'abcd...'), saved once per test session."""
    path = _ROOT / "diffusion"
    save_pretrained(train_tiny("bidirectional", steps=300), path, tokenizer=byte_tokenizer(),
                    generation_config={"max_new_tokens": 16, "threshold": 0.9})
    return path


@functools.lru_cache(maxsize=None)
def ar_folder() -> Path:
    """An untrained autoregressive model (a second name to route requests to)."""
    path = _ROOT / "ar"
    save_pretrained(random_lm(seed=1, attention="causal", shift_logits=True), path, tokenizer=byte_tokenizer(),
                    generation_config={"max_new_tokens": 16})
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve_args(models: list[str], **overrides) -> argparse.Namespace:
    from unmask.cli import build_parser

    args = build_parser().parse_args(["serve", "--model", ",".join(models)])
    for key, value in overrides.items():
        setattr(args, key, value)
    return args


@contextlib.contextmanager
def running_server(models: list[str], **overrides):
    """Yield the base URL of a server (in a thread of this process) once /health says ok; stop it after."""
    import uvicorn

    from unmask.serve.cli import build_app

    args = serve_args(models, **overrides)
    app, engine = build_app(args)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    with one_thread():
        thread.start()
        url = f"http://127.0.0.1:{port}"
        try:
            wait_healthy(url)
            yield url
        finally:
            server.should_exit = True
            thread.join(30)
    assert not thread.is_alive()


def wait_healthy(url: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url + "/health", timeout=5).status_code == 200:
                return
        time.sleep(0.05)
    raise TimeoutError(f"{url}/health did not become ready")
