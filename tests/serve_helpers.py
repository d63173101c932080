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
from dataclasses import dataclass
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

    args = build_parser().parse_args(["serve"] + (["--model", ",".join(models)] if models else []))
    for key, value in overrides.items():
        setattr(args, key, value)
    return args


@dataclass
class Server:
    """A running test server: its base URL and its engine (to reach the model behind it)."""

    url: str
    engine: object  # unmask.serve.engine.Engine

    def client(self, **kwargs):
        import openai

        return openai.OpenAI(base_url=self.url + "/v1", api_key=kwargs.pop("api_key", "none"), max_retries=0,
                             timeout=60, **kwargs)

    def metric(self, name: str) -> float:
        """The value of an unlabelled sample in /metrics."""
        for line in httpx.get(self.url + "/metrics", timeout=10).text.splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
        raise KeyError(name)


@contextlib.contextmanager
def running_server(models: list[str] | None, **overrides):
    """Yield a Server (uvicorn in a thread of this process) once /health says ok; stop it after."""
    import uvicorn

    from unmask.serve.cli import build_app

    args = serve_args(models, **overrides)
    app, engine = build_app(args)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                           timeout_graceful_shutdown=10))
    thread = threading.Thread(target=server.run, daemon=True)
    with one_thread():
        thread.start()
        url = f"http://127.0.0.1:{port}"
        try:
            wait_healthy(url)
            yield Server(url, engine)
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


class SlowModel:
    """Wraps a model's forward pass: it waits until `release()` (and then sleeps `delay` s per pass).

    Makes a request slow on purpose, so that a test can fill the queue or disconnect mid-stream
    deterministically; `entered` is set once a pass has begun. Use as a context manager.
    """

    def __init__(self, model, delay: float = 0.0, held: bool = True):
        self.model, self.delay = model, delay
        self.entered, self.opened = threading.Event(), threading.Event()
        if not held:
            self.opened.set()
        original = model.forward

        def forward(*args, **kwargs):
            self.entered.set()
            self.opened.wait(60)
            if self.delay:
                time.sleep(self.delay)
            return original(*args, **kwargs)

        model.forward = forward

    def release(self) -> None:
        self.opened.set()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.delay = 0.0
        self.opened.set()
        del self.model.forward  # back to the class's forward
