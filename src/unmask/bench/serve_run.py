"""Serve mode of `unmask bench`: a load generator against any OpenAI-compatible server.

    unmask bench serve --url http://127.0.0.1:8000 --concurrency 1,8,32 --requests 64 --max-tokens 64 --stream

For each concurrency C, C workers (asyncio tasks sharing one httpx.AsyncClient) send R requests in all to
`POST /v1/completions`, each worker starting its next request as soon as its last one is answered. Prompts
(HumanEval's by default) are used in turn. Per request it records the HTTP status, the end-to-end latency,
the time to the first streamed text (with --stream) and the output tokens the server reports in `usage`
(streamed: through `stream_options.include_usage`). A run reports requests/s and output tokens/s over its
wall time, latency percentiles over the successful requests, and error counts by status.

httpx comes with the `serve` extra and is imported inside the functions that need it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from dataclasses import asdict, dataclass
from itertools import cycle, islice

from ..errors import UnmaskError

NOTES = [
    "requests_per_s: successful requests / the run's wall time (first request sent to last answer); "
    "output_tokens_per_s: the usage.completion_tokens of successful requests / the same wall time",
    "latency_s: end-to-end, request sent to the last byte (streamed: to data: [DONE]); time_to_first_token_s: "
    "request sent to the first streamed chunk with text (streamed runs only); percentiles over successful "
    "requests, linear interpolation",
    "errors: failed requests by HTTP status, or 'connection', 'timeout', 'bad_response' (a 200 whose body is "
    "not the OpenAI shape)",
    "when the server runs on the machine that sends the load, both compete for its cores: the figures include "
    "that",
]


@dataclass
class Record:
    """One request's outcome."""

    status: str  # "200", "401", ..., "connection", "timeout", "bad_response"
    latency_s: float
    time_to_first_token_s: float | None = None
    output_tokens: int | None = None
    prompt_tokens: int | None = None
    error: str | None = None  # the server's error message (OpenAI error body), cut to 200 characters


def _error_message(r) -> str | None:
    try:
        return str(r.json()["error"]["message"])[:200]
    except (ValueError, KeyError, TypeError):
        return r.text[:200] or None


def base_url(url: str) -> str:
    """The server's root: `http://host:port` from that, with or without a trailing `/v1` or slash."""
    u = url.strip().rstrip("/")
    if u.endswith("/v1"):
        u = u[: -len("/v1")]
    if not u.startswith(("http://", "https://")):
        raise UnmaskError(f"--url {url}: give an http:// or https:// address such as http://127.0.0.1:8000")
    return u


def percentile(values: list[float], q: float) -> float | None:
    """The q-th percentile (0-100) with linear interpolation between order statistics; None when empty."""
    if not values:
        return None
    xs = sorted(values)
    pos = (len(xs) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def _headers(api_key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


async def _one(client, url: str, body: dict, headers: dict, stream: bool) -> Record:
    import httpx

    t0 = time.perf_counter()
    try:
        if not stream:
            r = await client.post(url, json=body, headers=headers)
            latency = time.perf_counter() - t0
            if r.status_code != 200:
                return Record(str(r.status_code), latency, error=_error_message(r))
            usage = r.json().get("usage") or {}
            return Record("200", latency, None, usage.get("completion_tokens"), usage.get("prompt_tokens"))
        first, usage, done = None, {}, False
        async with client.stream("POST", url, json=body, headers=headers) as r:
            if r.status_code != 200:
                await r.aread()
                return Record(str(r.status_code), time.perf_counter() - t0, error=_error_message(r))
            async for line in r.aiter_lines():
                if not line.startswith("data:"):
                    continue
                payload = line[len("data:"):].strip()
                if payload == "[DONE]":
                    done = True
                    break
                chunk = json.loads(payload)
                if first is None and any(c.get("text") for c in chunk.get("choices") or []):
                    first = time.perf_counter() - t0
                usage = chunk.get("usage") or usage
        latency = time.perf_counter() - t0
        if not done:
            return Record("bad_response", latency)
        return Record("200", latency, first, usage.get("completion_tokens"), usage.get("prompt_tokens"))
    except httpx.TimeoutException:
        return Record("timeout", time.perf_counter() - t0)
    except httpx.TransportError:
        return Record("connection", time.perf_counter() - t0)
    except (ValueError, AttributeError, TypeError):  # a body that is not JSON, or not the OpenAI shape
        return Record("bad_response", time.perf_counter() - t0)


async def _load(root: str, prompts: list[str], concurrency: int, requests: int, settings: dict,
                api_key: str | None, timeout: float) -> tuple[list[Record], float]:
    import httpx

    bodies = []
    for i, prompt in enumerate(islice(cycle(prompts), requests)):
        body = {"prompt": prompt, "max_tokens": settings["max_tokens"], "seed": settings["seed"] + i}
        if settings["model"] is not None:
            body["model"] = settings["model"]
        if settings["temperature"] is not None:
            body["temperature"] = settings["temperature"]
        if settings["stream"]:
            body |= {"stream": True, "stream_options": {"include_usage": True}}
        bodies.append(body)
    queue = iter(bodies)
    records: list[Record] = []
    headers = _headers(api_key)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)

    async def worker(client) -> None:
        for body in queue:  # one shared iterator: each body is taken by exactly one worker
            records.append(await _one(client, root + "/v1/completions", body, headers, settings["stream"]))

    async with httpx.AsyncClient(timeout=timeout, limits=limits) as client:
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
        wall = time.perf_counter() - t0
    return records, wall


def summarize(records: list[Record], wall_s: float, concurrency: int) -> dict:
    """A row: throughput over the wall time, latency percentiles over successful requests, errors by status."""
    ok = [r for r in records if r.status == "200"]
    errors: dict[str, int] = {}
    messages: dict[str, str | None] = {}
    for r in records:
        if r.status != "200":
            errors[r.status] = errors.get(r.status, 0) + 1
            messages.setdefault(r.status, r.error)
    tokens = [r.output_tokens for r in ok if r.output_tokens is not None]
    ttft = [r.time_to_first_token_s for r in ok if r.time_to_first_token_s is not None]
    latency = [r.latency_s for r in ok]
    row = {
        "concurrency": concurrency, "requests": len(records), "succeeded": len(ok), "failed": len(records) - len(ok),
        "errors": dict(sorted(errors.items())), "first_error_messages": dict(sorted(messages.items())),
        "wall_s": wall_s,
        "requests_per_s": len(ok) / wall_s if wall_s > 0 else None,
        "output_tokens": sum(tokens), "requests_without_usage": len(ok) - len(tokens),
        "output_tokens_per_s": sum(tokens) / wall_s if wall_s > 0 else None,
        "prompt_tokens": sum(r.prompt_tokens or 0 for r in ok),
    }
    for name, values in (("time_to_first_token_s", ttft), ("latency_s", latency)):
        row[name] = {f"p{q}": percentile(values, q) for q in (50, 90, 99)} | {
            "mean": sum(values) / len(values) if values else None}
    return row


def serve_table(rows: list[dict]) -> str:
    def ms(x):
        return "-" if x is None else f"{1e3 * x:,.0f}"

    def num(x, digits=2):
        return "-" if x is None else f"{x:,.{digits}f}"

    head = ["concurrency", "requests", "ok", "errors", "requests/s", "output tokens/s", "TTFT p50/p90/p99 ms",
            "latency p50/p90/p99 ms"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        t, lat = r["time_to_first_token_s"], r["latency_s"]
        errs = ", ".join(f"{k}: {v}" for k, v in r["errors"].items()) or "0"
        cells = [str(r["concurrency"]), str(r["requests"]), str(r["succeeded"]), errs, num(r["requests_per_s"]),
                 num(r["output_tokens_per_s"], 1), " / ".join(ms(t[k]) for k in ("p50", "p90", "p99")),
                 " / ".join(ms(lat[k]) for k in ("p50", "p90", "p99"))]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _server_models(root: str, api_key: str | None, timeout: float) -> list[str] | None:
    """The server's model ids (GET /v1/models), None when it answers otherwise; a one-line error if unreachable."""
    import httpx

    try:
        r = httpx.get(root + "/v1/models", headers=_headers(api_key), timeout=min(timeout, 30.0))
    except httpx.TransportError as e:
        raise UnmaskError(f"--url {root}: cannot reach the server ({e.__class__.__name__}: {e})") from None
    try:
        return [m["id"] for m in r.json()["data"]] if r.status_code == 200 else None
    except (ValueError, KeyError, TypeError):
        return None


def parse_concurrency(text: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",")]
    except ValueError:
        values = []
    if not values or any(c < 1 for c in values):
        raise UnmaskError(f"--concurrency must be positive integers such as 8 or 1,8,32, got {text!r}")
    return values


def run_serve(args: argparse.Namespace) -> int:
    try:
        import httpx  # noqa: F401
    except ImportError:
        raise UnmaskError("unmask bench serve needs httpx: pip install 'unmask[serve]'") from None
    from .hardware import device_info, software_info
    from .prompts import load_prompts
    from .report import write_outputs

    if args.url is None:
        raise UnmaskError("unmask bench serve needs --url (the server, e.g. http://127.0.0.1:8000)")
    root = base_url(args.url)
    levels = parse_concurrency(args.concurrency)
    for flag, value in (("--requests", args.requests), ("--max-new-tokens/--max-tokens", args.max_new_tokens)):
        if value < 1:
            raise UnmaskError(f"{flag} must be >= 1, got {value}")
    if args.timeout <= 0:
        raise UnmaskError(f"--timeout must be > 0, got {args.timeout}")
    api_key = args.api_key if args.api_key is not None else os.environ.get("UNMASK_API_KEY") or None
    prompts = load_prompts(args.prompts, args.limit or None)
    served = _server_models(root, api_key, args.timeout)
    settings = {"url": root, "model": args.model, "concurrency": levels, "requests": args.requests,
                "prompts": args.prompts, "num_prompts": len(prompts), "max_tokens": args.max_new_tokens,
                "stream": args.stream, "temperature": args.temperature, "seed": args.seed,
                "timeout_s": args.timeout, "api_key_set": api_key is not None, "endpoint": "/v1/completions"}
    rows = []
    for c in levels:
        records, wall = asyncio.run(_load(root, prompts, c, args.requests, settings, api_key, args.timeout))
        rows.append(summarize(records, wall, c))
        rows[-1]["records"] = [asdict(r) for r in records]
        print(f"concurrency {c}: {rows[-1]['succeeded']}/{len(records)} ok in {wall:.1f} s", file=sys.stderr)
        for status, message in rows[-1]["first_error_messages"].items():
            print(f"  {status}: {message}", file=sys.stderr)
    import torch

    hardware = device_info(torch.device("cpu"))
    data = {"mode": "serve", "settings": settings, "server_models": served, "hardware": hardware,
            "software": software_info(), "rows": rows, "notes": NOTES}
    title = (f"unmask bench serve: {root}" + (f" ({args.model})" if args.model else "") +
             f", {args.requests} requests per level, {args.max_new_tokens} max tokens, "
             f"{'streamed' if args.stream else 'not streamed'}, prompts {args.prompts}")
    where = (f"Load generator on {hardware['cpu_model']}, {hardware['cpu_cores']} cores; server models: "
             f"{', '.join(served) if served else 'unknown'}.")
    markdown = "\n\n".join([f"## {title}", where, serve_table(rows)])
    print(markdown)
    if args.out is not None:
        write_outputs(args.out, markdown, data)
        print(f"\nwrote {args.out / 'bench.md'} and {args.out / 'bench.json'}", file=sys.stderr)
    return 0
