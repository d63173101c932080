"""The server under load: a full queue answers 429 at once, a client that disconnects leaves its batch,
64 concurrent requests all get their own right answer, and SIGTERM exits cleanly (tiny models)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import signal
import subprocess
import sys
import time

import httpx
import openai
import pytest

from serve_helpers import SlowModel, diffusion_folder, free_port, running_server, wait_healthy
from unmask.model import load_model
from unmask.sampling import Request, SamplerConfig, generate

PROMPT = "abcdabcdab"


def eventually(condition, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


def test_a_full_queue_answers_429_at_once():
    with running_server([str(diffusion_folder())], max_batch=1, max_queue=1) as s:
        url = s.url + "/v1/completions"
        body = {"prompt": PROMPT, "max_tokens": 8}
        with SlowModel(s.engine.models["diffusion"].loaded.model) as slow, \
                concurrent.futures.ThreadPoolExecutor(2) as pool:
            running = pool.submit(httpx.post, url, json=body, timeout=60)
            assert slow.entered.wait(30)  # the first request is in the batch, its forward pass held
            waiting = pool.submit(httpx.post, url, json=body, timeout=60)
            assert eventually(lambda: s.engine.queue_depth == 1)
            # The model is held, so this answer cannot have waited for it.
            full = httpx.post(url, json=body, timeout=60)
            assert full.status_code == 429
            assert full.json()["error"]["type"] == "rate_limit_error"
            with pytest.raises(openai.RateLimitError):
                s.client().completions.create(model="diffusion", prompt=PROMPT, max_tokens=8)
            assert httpx.get(s.url + "/health").status_code == 200  # answers while the model is busy
            slow.release()
            assert running.result().status_code == 200 and waiting.result().status_code == 200
        assert s.metric("unmask_queue_depth") == 0
        text = httpx.get(s.url + "/metrics").text
        assert 'unmask_requests_total{route="/v1/completions",status="429"} 2.0' in text


def test_a_client_that_disconnects_leaves_the_batch():
    with running_server([str(diffusion_folder())], max_tokens=80) as s:
        model = s.engine.models["diffusion"].loaded.model
        body = {"prompt": "ab", "max_tokens": 80, "threshold": 1.5}  # one token per forward pass
        with SlowModel(model, delay=0.02, held=False):
            with httpx.stream("POST", s.url + "/v1/completions", json={**body, "stream": True}, timeout=60) as r:
                for line in r.iter_lines():
                    if line.startswith("data: {"):
                        break  # hang up after the first chunk
            assert eventually(lambda: s.metric("unmask_cancelled_requests_total") == 1)
            assert eventually(lambda: s.engine.rows_running == 0)
            # A non-streaming client that gives up is dropped too.
            with pytest.raises(httpx.ReadTimeout):
                httpx.post(s.url + "/v1/completions", json=body, timeout=0.3)
            assert eventually(lambda: s.metric("unmask_cancelled_requests_total") == 2)
            assert eventually(lambda: s.engine.rows_running == 0 and s.engine.queue_depth == 0)
        assert httpx.get(s.url + "/health").status_code == 200
        done = s.client().completions.create(model="diffusion", prompt=PROMPT, max_tokens=6)
        assert done.usage.completion_tokens == 6 or done.choices[0].finish_reason == "stop"


def test_64_concurrent_requests_each_get_their_own_answer():
    prompts = ["abcdabcd", "hgfehgfe", "aabbaabb", "cdcdcdcd", "efghefgh", "bbbbbbbb", "acegaceg", "dcbadcba"]
    jobs = [(prompts[i % 8], 6 + i % 5) for i in range(64)]
    lm = load_model(diffusion_folder())
    expected = {}
    for prompt, max_tokens in sorted(set(jobs)):
        config = SamplerConfig.from_generation_config(lm.generation_config, max_new_tokens=max_tokens)
        [result] = generate(lm.model, lm.tokenizer, [Request(prompt)], config)
        expected[prompt, max_tokens] = result.text
    with running_server([str(diffusion_folder())], max_batch=16, max_queue=64) as s:
        async def run_all():
            client = openai.AsyncOpenAI(base_url=s.url + "/v1", api_key="none", max_retries=0, timeout=120)
            calls = [client.completions.create(model="diffusion", prompt=p, max_tokens=m) for p, m in jobs]
            return await asyncio.gather(*calls)

        answers = asyncio.run(run_all())
        assert [a.choices[0].text for a in answers] == [expected[j] for j in jobs]
        assert len({a.id for a in answers}) == 64


def test_sigterm_finishes_the_request_in_flight_and_exits_0():
    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "unmask.cli", "serve", "--model", str(diffusion_folder()),
                             "--port", str(port), "--max-tokens", "80"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_healthy(url)
        body = {"prompt": "ab", "max_tokens": 80, "threshold": 1.5, "stream": True}
        lines = []
        with httpx.stream("POST", url + "/v1/completions", json=body, timeout=60) as r:
            for line in filter(None, r.iter_lines()):
                if not lines:
                    proc.send_signal(signal.SIGTERM)  # mid-stream
                lines.append(line)
        assert lines[-1] == "data: [DONE]"  # the request in flight was finished, not cut off
        assert '"finish_reason": "length"' in lines[-2] and len(lines) > 3
        assert proc.wait(30) == 0
        with pytest.raises(httpx.ConnectError):
            httpx.get(url + "/health")
    finally:
        if proc.poll() is None:
            proc.kill()
        _, err = proc.communicate()
    assert "Traceback" not in err, err


def test_health_says_loading_until_the_models_are_loaded():
    import threading

    import uvicorn

    from serve_helpers import serve_args
    from unmask.serve.app import create_app
    from unmask.serve.cli import loader
    from unmask.serve.engine import Engine

    load, loaded = loader([str(diffusion_folder())], serve_args([])), threading.Event()

    def slow_load():
        assert loaded.wait(60)
        return load()

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(Engine(slow_load)), host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    try:
        assert eventually(lambda: server.started)
        assert httpx.get(url + "/health").json() == {"status": "loading"}
        assert httpx.get(url + "/health").status_code == 503
        r = httpx.post(url + "/v1/completions", json={"prompt": PROMPT})
        assert r.status_code == 503 and r.json()["error"]["code"] == "loading"
        assert httpx.get(url + "/metrics").status_code == 200
        loaded.set()
        wait_healthy(url)
        assert httpx.post(url + "/v1/completions", json={"prompt": PROMPT, "max_tokens": 3}).status_code == 200
    finally:
        loaded.set()
        server.should_exit = True
        thread.join(30)


def test_a_failing_batch_answers_500_and_the_server_keeps_serving():
    with running_server([str(diffusion_folder())]) as s:
        model = s.engine.models["diffusion"].loaded.model

        def broken(*args, **kwargs):
            raise RuntimeError("device lost")

        model.forward = broken
        try:
            with pytest.raises(openai.InternalServerError, match="device lost"):
                s.client().completions.create(model="diffusion", prompt=PROMPT, max_tokens=4)
            body = {"prompt": PROMPT, "max_tokens": 4, "stream": True}
            with httpx.stream("POST", s.url + "/v1/completions", json=body, timeout=60) as r:
                events = list(filter(None, r.iter_lines()))
            assert "device lost" in events[-2] and events[-1] == "data: [DONE]"
        finally:
            del model.forward
        assert s.client().completions.create(model="diffusion", prompt=PROMPT, max_tokens=4).choices[0].text
        assert s.engine.rows_running == 0


def test_a_short_request_joins_a_long_one_and_finishes_first():
    with running_server([str(diffusion_folder())], max_tokens=80) as s:
        model = s.engine.models["diffusion"].loaded.model
        long_body = {"prompt": "ab", "max_tokens": 80, "threshold": 1.5, "stream": True}  # 80 forward passes
        with SlowModel(model, delay=0.03, held=False), \
                httpx.stream("POST", s.url + "/v1/completions", json=long_body, timeout=60) as long_stream:
            lines = filter(None, long_stream.iter_lines())
            assert next(lines).startswith("data: {")  # the long request is decoding
            short = s.client().completions.create(model="diffusion", prompt=PROMPT, max_tokens=4, extra_body={
                "threshold": 1.5})
            assert s.engine.rows_running == 1  # the long request is still decoding: the short one did not wait
            assert short.usage.completion_tokens == 4 or short.choices[0].finish_reason == "stop"
            rest = list(lines)
            assert rest[-1] == "data: [DONE]" and '"finish_reason": "length"' in rest[-2]
