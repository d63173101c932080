"""The FastAPI app: OpenAI-compatible routes over an Engine, with auth, limits, errors and metrics.

Routes: GET /v1/models, GET /v1/models/{id}, POST /v1/completions (a `suffix` fills the middle),
POST /v1/fim/completions (prompt + suffix, answered as a text completion), POST /v1/chat/completions,
GET /health (503 until the models are loaded), GET /metrics (Prometheus text).

Every error is OpenAI-shaped (`{"error": {"message", "type", "param", "code"}}`): 400 for a malformed
body, a wrong or missing field, a value out of range or over the server's limits, or a prompt over the
model's context (OpenAI answers 400 for all of these, so its clients raise BadRequestError); 401 for a
missing or wrong API key on /v1 routes; 404 for an unknown model or route; 429 when the queue is full;
503 while loading or shutting down.

Streaming (SSE) sends `data: {chunk}` events in OpenAI's shapes, each with the text that became final
since the previous one (never revised), and ends with `data: [DONE]`. With `stream_options.include_usage`
every chunk has `"usage": null` and a last chunk with no choices carries the usage. The extension flag
`diffusing: true` instead sends, at every step, each choice's whole current draft (masked positions as
the placeholder character of sampling/streaming.py) in `text` (completions) or `delta.content` (chat): a
client replaces its view with each chunk. Usage carries an extension field `forward_passes`.

Fields a request leaves out take the model folder's generation_config.json defaults, then the server's
flags (so a request without `temperature` is greedy unless the model's defaults say otherwise, unlike
OpenAI's default of 1); `max_tokens` defaults to the model's `max_new_tokens`, capped by --max-tokens.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import random
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..errors import UnmaskError
from ..sampling.generate import Request as SampleRequest
from ..sampling.runner import plan_rows
from . import chat
from .engine import ChoiceResult, Engine, Job, QueueFull, ServedModel, ShuttingDown, choice_seed
from .metrics import Metrics
from .protocol import (ChatCompletionRequest, CompletionRequest, FIMCompletionRequest, error_body, new_id, now,
                       usage)

ROUTES = ("/v1/models", "/v1/completions", "/v1/fim/completions", "/v1/chat/completions", "/health", "/metrics")


class APIError(Exception):
    def __init__(self, status: int, message: str, type_: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type_, param, code


@dataclass
class Limits:
    max_tokens: int = 512  # per choice
    max_n: int = 8  # choices per request (n times the number of prompts)


def create_app(engine: Engine, *, api_key: str | None = None, limits: Limits | None = None, seed: int = 0,
               metrics: Metrics | None = None) -> FastAPI:
    """The app; the engine is started by the app's lifespan and stopped when the server shuts down."""
    from contextlib import asynccontextmanager

    limits = limits or Limits()
    metrics = metrics or engine.metrics or Metrics()
    seeds = random.Random(seed)  # requests without a seed draw one: the server is reproducible from --seed

    @asynccontextmanager
    async def lifespan(_app):
        engine.start()
        yield
        await asyncio.to_thread(engine.stop)

    app = FastAPI(title="unmask", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    if api_key is not None:
        app.add_middleware(_RequireKey, api_key=api_key)
    app.add_middleware(_CountStatus, metrics=metrics)  # outermost: it also counts the 401s

    @app.exception_handler(APIError)
    async def _api_error(_request, e: APIError):
        return JSONResponse(error_body(e.message, e.type, e.param, e.code), status_code=e.status)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request, e: RequestValidationError):
        first = e.errors()[0] if e.errors() else {}
        loc = [str(p) for p in first.get("loc", ()) if p != "body"]
        if first.get("type") == "json_invalid":
            message, param = "the request body is not valid JSON", None
        else:
            message = f"{'.'.join(loc) or 'body'}: {first.get('msg', 'invalid value')}"
            param = loc[0] if loc else None
        return JSONResponse(error_body(message, param=param), status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_request, e: StarletteHTTPException):
        type_ = "not_found_error" if e.status_code == 404 else "invalid_request_error"
        return JSONResponse(error_body(str(e.detail), type_), status_code=e.status_code)

    @app.exception_handler(Exception)
    async def _bug(_request, e: Exception):
        return JSONResponse(error_body(f"internal error: {type(e).__name__}: {e}", "server_error"), status_code=500)

    @app.get("/health")
    async def health():
        if engine.load_error is not None:
            return JSONResponse({"status": "error", "error": str(engine.load_error)}, status_code=503)
        if not engine.ready.is_set():
            return JSONResponse({"status": "loading"}, status_code=503)
        return {"status": "ok", "models": list(engine.models), "queue_depth": engine.queue_depth}

    @app.get("/metrics")
    async def prometheus():
        body, content_type = metrics.render()
        return Response(body, media_type=content_type)

    @app.get("/v1/models")
    async def list_models():
        served = _models(engine)
        return {"object": "list", "data": [_model_card(m) for m in served.values()]}

    @app.get("/v1/models/{model_id}")
    async def get_model(model_id: str):
        return _model_card(_pick(engine, model_id))

    @app.post("/v1/completions")
    async def completions(body: CompletionRequest, request: Request):
        if body.logprobs is not None:
            raise APIError(400, "logprobs are not supported", param="logprobs")
        prompts = [body.prompt] if isinstance(body.prompt, str) else list(body.prompt)
        if not prompts:
            raise APIError(400, "prompt: give a string or a non-empty list of strings", param="prompt")
        return await _complete(request, body, prompts, body.suffix, echo=body.echo)

    @app.post("/v1/fim/completions")
    async def fim_completions(body: FIMCompletionRequest, request: Request):
        return await _complete(request, body, [body.prompt], body.suffix, echo=False)

    @app.post("/v1/chat/completions")
    async def chat_completions(body: ChatCompletionRequest, request: Request):
        served = _pick(engine, body.model)
        messages = [(m.role, m.text()) for m in body.messages]
        special = {}
        tok = served.loaded.tokenizer
        if tok is not None:
            special = {"bos_token": _token_text(tok, served.loaded.model.config.bos_token_id),
                       "eos_token": _token_text(tok, served.loaded.model.config.eos_token_id)}
        try:
            prompt, stops = chat.render(messages, served.loaded.chat_template, special)
        except UnmaskError as e:
            raise APIError(400, str(e), param="messages") from None
        tokens = body.max_completion_tokens or body.max_tokens
        # A folder's template writes its own special tokens (LLaDA's starts with <|startoftext|>, ChatML none).
        job = _plan(served, body, [prompt], None, tokens, stops, add_bos=served.loaded.chat_template is None)
        return await _run(request, job, body, served, prompts=[prompt], kind="chat", echo=False)

    async def _complete(request: Request, body, prompts: list[str], suffix: str | None, echo: bool):
        served = _pick(engine, body.model)
        job = _plan(served, body, prompts, suffix, body.max_tokens, ())
        return await _run(request, job, body, served, prompts=prompts, kind="text", echo=echo)

    def _plan(served: ServedModel, body, prompts: list[str], suffix: str | None, max_tokens: int | None,
              extra_stops: tuple[str, ...], add_bos: bool = True) -> Job:
        if len(prompts) * body.n > limits.max_n:
            raise APIError(400, f"n ({body.n}) times the number of prompts ({len(prompts)}) is over this server's "
                                f"limit of {limits.max_n} choices", param="n")
        if max_tokens is not None and max_tokens > limits.max_tokens:
            raise APIError(400, f"max_tokens ({max_tokens}) is over this server's limit of {limits.max_tokens}",
                           param="max_tokens")
        if suffix is not None and served.loaded.tokenizer is None:
            raise APIError(400, "this model has no tokenizer", param="model")
        seed = (body.seed if body.seed is not None else seeds.randrange(1 << 31)) & ((1 << 63) - 1)
        overrides = dict(temperature=body.temperature, top_p=body.top_p, top_k=body.top_k, policy=body.policy,
                         threshold=body.threshold, entropy_bound=body.entropy_bound, block_length=body.block_length,
                         presence_penalty=getattr(body, "presence_penalty", None),
                         frequency_penalty=getattr(body, "frequency_penalty", None),
                         stop_at_block_end=getattr(body, "stop_at_block_end", None),
                         max_new_tokens=max_tokens or min(served.defaults.max_new_tokens, limits.max_tokens),
                         # The model's own stop strings (generation_config.json) stay: they are part of its format.
                         stop=tuple(dict.fromkeys(served.defaults.stop + tuple(body.stop) + extra_stops)))
        overrides = {k: v for k, v in overrides.items() if v is not None}
        job = engine.new_job(served, [], drafts=bool(body.stream and body.diffusing))
        try:
            for p, prompt in enumerate(prompts):
                for j in range(body.n):
                    index = p * body.n + j
                    config = served.defaults.replace(seed=choice_seed(seed, j), **overrides)
                    job.choices.append(plan_rows(served.loaded.model, served.codec, (job.id, index),
                                                 SampleRequest(prompt=prompt, suffix=suffix, add_bos=add_bos), config))
        except UnmaskError as e:
            raise APIError(400, str(e)) from None
        return job

    async def _run(request: Request, job: Job, body, served: ServedModel, *, prompts: list[str], kind: str,
                   echo: bool):
        try:
            engine.submit(job)
        except QueueFull as e:
            raise APIError(429, str(e), type_="rate_limit_error", code="queue_full") from None
        except ShuttingDown as e:
            raise APIError(503, str(e), type_="server_error", code="shutting_down") from None
        meta = {"id": new_id("chatcmpl" if kind == "chat" else "cmpl"), "created": now(), "model": served.name,
                "prompt_tokens": sum(len(job.choices[p * body.n][0].prompt_ids)
                                     + len(job.choices[p * body.n][0].suffix_ids) for p in range(len(prompts)))}
        if body.stream:
            include_usage = bool(body.stream_options and body.stream_options.include_usage)
            stream = _sse(engine, job, meta, kind, include_usage, prompts if echo else None, body.n)
            return StreamingResponse(stream, media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        results = await _collect(engine, job, request)
        choices = []
        for index in range(len(job.choices)):
            r = results[index]
            text = (prompts[index // body.n] + r.text) if echo else r.text
            if kind == "chat":
                choices.append({"index": index, "message": {"role": "assistant", "content": text},
                                "logprobs": None, "finish_reason": r.finish_reason})
            else:
                choices.append({"text": text, "index": index, "logprobs": None, "finish_reason": r.finish_reason})
        return {"id": meta["id"], "object": "chat.completion" if kind == "chat" else "text_completion",
                "created": meta["created"], "model": served.name, "choices": choices,
                "usage": _usage(meta["prompt_tokens"], results.values())}

    return app


def _models(engine: Engine) -> dict[str, ServedModel]:
    if engine.load_error is not None:
        raise APIError(503, f"the models failed to load: {engine.load_error}", type_="server_error")
    if not engine.ready.is_set():
        raise APIError(503, "the models are still loading; retry shortly", type_="server_error", code="loading")
    return engine.models


def _pick(engine: Engine, name: str | None) -> ServedModel:
    served = _models(engine)
    if name is None or name == "":
        return next(iter(served.values()))
    if name not in served:
        raise APIError(404, f"the model '{name}' does not exist (served: {', '.join(served)})", param="model",
                       code="model_not_found")
    return served[name]


def _model_card(m: ServedModel) -> dict[str, Any]:
    return {"id": m.name, "object": "model", "created": 0, "owned_by": "unmask"}


def _token_text(tok, token_id: int | None) -> str:
    return "" if token_id is None else (tok.id_to_token(token_id) or "")


def _usage(prompt_tokens: int, results) -> dict[str, int]:
    results = list(results)
    u = usage(prompt_tokens, sum(r.completion_tokens for r in results))
    u["forward_passes"] = sum(r.forward_passes for r in results)
    return u


async def _collect(engine: Engine, job: Job, request: Request) -> dict[int, ChoiceResult]:
    """Wait for every choice; cancel the job if the client goes away first."""

    async def watch() -> None:
        while not await request.is_disconnected():
            await asyncio.sleep(0.2)
        engine.cancel(job)

    watcher = asyncio.create_task(watch())
    results: dict[int, ChoiceResult] = {}
    try:
        async for kind, index, payload in job.messages():
            if kind == "error":
                status, message = payload
                raise APIError(status, message, type_="server_error")
            if kind == "done":
                results[index] = payload
    except asyncio.CancelledError:
        engine.cancel(job)
        raise
    finally:
        watcher.cancel()
    return results


async def _sse(engine: Engine, job: Job, meta: dict, kind: str, include_usage: bool, echo: list[str] | None, n: int):
    """Server-sent events of one streamed request; a client that disconnects cancels the job."""
    chat_kind = kind == "chat"
    obj = "chat.completion.chunk" if chat_kind else "text_completion"

    def chunk(choices: list[dict], usage_value: Any = None, with_usage: bool = include_usage) -> str:
        body = {"id": meta["id"], "object": obj, "created": meta["created"], "model": meta["model"],
                "choices": choices}
        if with_usage:
            body["usage"] = usage_value
        return f"data: {json.dumps(body)}\n\n"

    def choice(index: int, text: str | None, finish: str | None = None, role: bool = False) -> dict:
        if chat_kind:
            delta: dict[str, Any] = {"role": "assistant", "content": ""} if role else {}
            if text is not None:
                delta["content"] = text
            return {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}
        return {"text": text or "", "index": index, "logprobs": None, "finish_reason": finish}

    results: dict[int, ChoiceResult] = {}
    try:
        if chat_kind:
            yield chunk([choice(i, "", role=True) for i in range(len(job.choices))])
        if echo is not None:
            yield chunk([choice(i, echo[i // n]) for i in range(len(job.choices))])
        async for what, index, payload in job.messages():
            if what == "error":
                err = error_body(payload[1], "server_error")
                yield f"data: {json.dumps(err)}\n\n"
                break
            if what == "delta" and not job.drafts:
                yield chunk([choice(index, payload)])
            elif what == "draft":
                yield chunk([choice(index, payload)])
            elif what == "done":
                results[index] = payload
                text = payload.text if job.drafts else payload.final_delta
                if chat_kind:
                    if text:
                        yield chunk([choice(index, text)])
                    yield chunk([choice(index, None, payload.finish_reason)])
                else:
                    yield chunk([choice(index, text, payload.finish_reason)])
        if include_usage and len(results) == len(job.choices):
            yield chunk([], _usage(meta["prompt_tokens"], results.values()))
        yield "data: [DONE]\n\n"
    finally:
        if len(results) < len(job.choices):
            engine.cancel(job)


class _CountStatus:
    """ASGI middleware: count responses by route and status code (unknown paths as 'other')."""

    def __init__(self, app, metrics: Metrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope.get("path", "")
        route = path if path in ROUTES else ("/v1/models" if path.startswith("/v1/models/") else "other")

        async def counting_send(message):
            if message["type"] == "http.response.start":
                self.metrics.requests.labels(route=route, status=str(message["status"])).inc()
            await send(message)

        return await self.app(scope, receive, counting_send)


class _RequireKey:
    """ASGI middleware: every /v1 route needs `Authorization: Bearer KEY` (compared in constant time), checked
    before the body is read, so that nobody without the key learns anything from a validation error."""

    def __init__(self, app, api_key: str):
        self.app, self.key = app, api_key.encode()

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and (scope.get("path", "") + "/").startswith("/v1/"):
            headers = dict(scope.get("headers") or [])
            scheme, _, token = headers.get(b"authorization", b"").partition(b" ")
            if not (scheme.lower() == b"bearer" and hmac.compare_digest(token.strip(), self.key)):
                body = error_body("missing or incorrect API key (send 'Authorization: Bearer KEY')",
                                  code="invalid_api_key")
                response = JSONResponse(body, status_code=401, headers={"WWW-Authenticate": "Bearer"})
                return await response(scope, receive, send)
        return await self.app(scope, receive, send)
