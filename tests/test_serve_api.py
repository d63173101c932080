"""`unmask serve` over HTTP with the official openai client: completions, FIM, chat, streaming, n, stop,
seeds, usage, auth, bad requests, /health, /metrics and the bundled model names (tiny models)."""

from __future__ import annotations

import concurrent.futures

import httpx
import openai
import pytest

from serve_helpers import ar_folder, diffusion_folder, running_server
from unmask.cli import main
from unmask.errors import UnmaskError
from unmask.model import load_model
from unmask.sampling import SamplerConfig, generate

PROMPT = "abcdabcdab"


@pytest.fixture(scope="module")
def server():
    with running_server([str(diffusion_folder()), str(ar_folder())], max_n=4, max_tokens=64) as s:
        yield s


@pytest.fixture(scope="module")
def client(server):
    return server.client()


def test_models_health_and_default_model(server, client):
    assert [m.id for m in client.models.list().data] == ["diffusion", "ar"]
    assert client.models.retrieve("ar").id == "ar"
    health = httpx.get(server.url + "/health").json()
    assert health["status"] == "ok" and health["models"] == ["diffusion", "ar"]
    r = httpx.post(server.url + "/v1/completions", json={"prompt": PROMPT, "max_tokens": 4}).json()
    assert r["model"] == "diffusion"  # the first model answers requests that name none


def test_completion_matches_generate_and_counts_usage(client):
    r = client.completions.create(model="diffusion", prompt=PROMPT, max_tokens=12)
    assert r.object == "text_completion" and r.id.startswith("cmpl-") and r.created > 0
    [choice] = r.choices
    lm = load_model(diffusion_folder())
    config = SamplerConfig.from_generation_config(lm.generation_config, max_new_tokens=12)
    [expected] = generate(lm.model, lm.tokenizer, [PROMPT], config)
    assert choice.text == expected.text and choice.finish_reason == expected.finish_reason
    # One byte per token with the test tokenizer.
    assert r.usage.prompt_tokens == len(PROMPT)
    assert r.usage.completion_tokens == len(choice.text.encode()) == len(expected.token_ids)
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    assert r.usage.model_extra["forward_passes"] == expected.stats.forward_passes


def test_streaming_equals_the_plain_answer_and_ends_with_done(server, client):
    kwargs = dict(model="diffusion", prompt=PROMPT, max_tokens=16, temperature=1.0, seed=7)
    plain = client.completions.create(**kwargs)
    chunks = list(client.completions.create(stream=True, stream_options={"include_usage": True}, **kwargs))
    assert all(c.id == chunks[0].id for c in chunks)
    text_chunks, usage_chunk = chunks[:-1], chunks[-1]
    assert "".join(c.choices[0].text for c in text_chunks) == plain.choices[0].text
    assert [c.choices[0].finish_reason for c in text_chunks][-1] == plain.choices[0].finish_reason
    assert all(c.choices[0].finish_reason is None for c in text_chunks[:-1])
    assert all(c.usage is None for c in text_chunks)
    assert usage_chunk.choices == [] and usage_chunk.usage.completion_tokens == plain.usage.completion_tokens
    with httpx.stream("POST", server.url + "/v1/completions", json={**kwargs, "stream": True}) as raw:
        events = [line for line in raw.iter_lines() if line]
    assert events[-1] == "data: [DONE]" and all(e.startswith("data: {") for e in events[:-1])


def test_diffusing_stream_sends_whole_drafts(client):
    chunks = list(client.completions.create(model="diffusion", prompt=PROMPT, max_tokens=16, stream=True,
                                            extra_body={"diffusing": True}))
    plain = client.completions.create(model="diffusion", prompt=PROMPT, max_tokens=16)
    drafts = [c.choices[0].text for c in chunks]
    assert drafts[-1] == plain.choices[0].text
    assert any("\u2591" in d for d in drafts[:-1])  # a draft with masked positions left
    assert all(len(d) == 16 for d in drafts[:-1])  # every draft is the whole answer, masks included


def test_chat_plain_template_blocking_and_streaming(client):
    messages = [{"role": "system", "content": "letters"}, {"role": "user", "content": "abcd"}]
    r = client.chat.completions.create(model="diffusion", messages=messages, max_tokens=8, seed=3)
    assert r.object == "chat.completion" and r.id.startswith("chatcmpl-")
    assert r.choices[0].message.role == "assistant"
    assert r.usage.prompt_tokens == len("### System:\nletters\n\n### User:\nabcd\n\n### Assistant:\n")
    chunks = list(client.chat.completions.create(model="diffusion", messages=messages, max_tokens=8, seed=3,
                                                 stream=True))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == r.choices[0].message.content
    assert chunks[-1].choices[0].finish_reason == r.choices[0].finish_reason
    assert all(c.object == "chat.completion.chunk" for c in chunks)


def test_fim_routes_return_the_middle_alone(client):
    prefix, suffix = "abcdabcdab", "cdabcd"
    via_suffix = client.completions.create(model="diffusion", prompt=prefix, suffix=suffix, max_tokens=8)
    fim = client.post("/fim/completions", body={"model": "diffusion", "prompt": prefix, "suffix": suffix,
                                                  "max_tokens": 8}, cast_to=openai.types.Completion)
    assert fim.choices[0].text == via_suffix.choices[0].text
    middle = via_suffix.choices[0].text
    assert middle and not middle.startswith(prefix) and not middle.endswith(suffix)
    assert set(middle) <= set("abcdefgh")  # the motif task's letters, never a re-decoded prefix or suffix
    ar = client.completions.create(model="ar", prompt=prefix, suffix=suffix, max_tokens=5)
    assert ar.usage.prompt_tokens == len(prefix) + len(suffix) + 3  # the three FIM tokens
    # Suffix healing (sampling/infill.py): a suffix's leading newline goes to the middle, so the model sees (and
    # the usage counts) the suffix from the next line on, for both kinds of model.
    for model, extra in (("diffusion", 0), ("ar", 3)):
        healed = client.completions.create(model=model, prompt=prefix, suffix="\n" + suffix, max_tokens=5)
        assert healed.usage.prompt_tokens == len(prefix) + len(suffix) + extra


def test_n_choices_seeds_and_stop(client):
    kwargs = dict(model="diffusion", prompt=PROMPT, max_tokens=16, temperature=1.5)
    r = client.completions.create(n=3, seed=11, **kwargs)
    assert [c.index for c in r.choices] == [0, 1, 2]
    texts = [c.text for c in r.choices]
    assert len(set(texts)) > 1  # each choice draws its own noise
    again = client.completions.create(n=3, seed=11, **kwargs)
    assert [c.text for c in again.choices] == texts
    alone = client.completions.create(seed=11, **kwargs)
    assert alone.choices[0].text == texts[0]  # choice 0 uses the request's seed itself
    full = client.completions.create(model="diffusion", prompt=PROMPT, max_tokens=16).choices[0].text
    assert "a" in full[1:]
    cut = full.index("a", 1)
    stopped = client.completions.create(model="diffusion", prompt=PROMPT, max_tokens=16,
                                        stop=["xyz", full[cut:cut + 2]])
    assert stopped.choices[0].text == full[:cut] and stopped.choices[0].finish_reason == "stop"
    batch = client.completions.create(model="diffusion", prompt=[PROMPT, "efghefgh"], n=2, max_tokens=4)
    assert [c.index for c in batch.choices] == [0, 1, 2, 3]


def test_greedy_answers_do_not_depend_on_the_batch(client):
    prompts = ["abcdabcdab", "hgfehgfe", "aabbaabbaa", "cdcdcd", "efgh" * 5, "bad"]
    alone = [client.completions.create(model="diffusion", prompt=p, max_tokens=12 + i).choices[0].text
             for i, p in enumerate(prompts)]
    with concurrent.futures.ThreadPoolExecutor(len(prompts)) as pool:
        together = list(pool.map(lambda ip: client.completions.create(
            model="diffusion", prompt=ip[1], max_tokens=12 + ip[0]).choices[0].text, enumerate(prompts)))
    assert together == alone


def test_bad_requests_get_openai_errors_and_the_server_keeps_serving(server, client):
    url = server.url + "/v1/completions"
    cases = [
        (dict(content=b"{not json", headers={"content-type": "application/json"}), 400, None),
        (dict(json={"model": "diffusion"}), 400, "prompt"),
        (dict(json={"prompt": PROMPT, "max_tokens": "many"}), 400, "max_tokens"),
        (dict(json={"prompt": PROMPT, "max_tokens": 65}), 400, "max_tokens"),
        (dict(json={"prompt": PROMPT, "n": 5}), 400, "n"),
        (dict(json={"prompt": PROMPT, "temperature": 2.5}), 400, "temperature"),
        (dict(json={"prompt": PROMPT, "top_p": 0}), 400, "top_p"),
        (dict(json={"prompt": "a" * 200}), 400, None),  # over the 96-token context
        (dict(json={"prompt": PROMPT, "stop": ["a", "b", "c", "d", "e"]}), 400, "stop"),
        (dict(json={"prompt": PROMPT, "unknown_field": 1}), 400, "unknown_field"),
        (dict(json={"prompt": PROMPT, "presence_penalty": 2.5}), 400, "presence_penalty"),
        (dict(json={"prompt": PROMPT, "model": "gpt-5"}), 404, "model"),
    ]
    for kwargs, status, param in cases:
        r = httpx.post(url, **kwargs)
        assert r.status_code == status, (kwargs, r.text)
        error = r.json()["error"]
        assert set(error) == {"message", "type", "param", "code"} and error["message"]
        assert error["param"] == param, (kwargs, error)
    chat = httpx.post(server.url + "/v1/chat/completions", json={"messages": []})
    assert chat.status_code == 400 and chat.json()["error"]["param"] == "messages"
    assert httpx.get(server.url + "/v1/nothing").status_code == 404
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="nope", prompt=PROMPT)
    with pytest.raises(openai.BadRequestError):
        client.completions.create(model="diffusion", prompt="x" * 500)
    assert client.completions.create(model="diffusion", prompt=PROMPT, max_tokens=4).choices[0].text


def test_metrics_report_requests_and_throughput(server, client):
    client.completions.create(model="diffusion", prompt=PROMPT, max_tokens=8)
    text = httpx.get(server.url + "/metrics").text
    for name in ("unmask_requests_total", "unmask_queue_depth", "unmask_batch_size",
                 "unmask_time_to_first_token_seconds_count", "unmask_request_latency_seconds_count",
                 "unmask_output_tokens_total", "unmask_forward_passes_total", "unmask_tokens_per_forward_pass_count",
                 "unmask_request_output_tokens_per_second_count", "process_resident_memory_bytes"):
        assert name in text
    assert 'unmask_requests_total{route="/v1/completions",status="200"}' in text
    assert server.metric("unmask_output_tokens_total") >= 8


def test_api_key_guards_v1_routes(monkeypatch):
    monkeypatch.setenv("UNMASK_API_KEY", "sesame")
    with running_server([str(diffusion_folder())]) as s:
        for key in ("none", "sesame2", "sesam"):
            with pytest.raises(openai.AuthenticationError):
                s.client(api_key=key).models.list()
        assert httpx.post(s.url + "/v1/completions", json={"prompt": PROMPT}).status_code == 401
        bad_body = httpx.post(s.url + "/v1/completions", content=b"{", headers={"content-type": "application/json"})
        assert bad_body.status_code == 401  # the key is checked before the body
        r = httpx.get(s.url + "/v1/models", headers={"Authorization": "Basic sesame"})
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
        assert httpx.get(s.url + "/health").status_code == 200  # probes need no key
        answer = s.client(api_key="sesame").completions.create(model="diffusion", prompt=PROMPT, max_tokens=4)
        assert answer.choices[0].text
    with running_server([str(diffusion_folder())], api_key="flag-wins") as s:
        assert s.client(api_key="flag-wins").models.list().data[0].id == "diffusion"


def test_bundled_names_are_served_and_listed(monkeypatch, tmp_path):
    import shutil

    import unmask.model.loading as loading

    for name, folder in (("default", diffusion_folder()), ("default-ar", ar_folder())):
        shutil.copytree(folder, tmp_path / name)
    monkeypatch.setattr(loading, "BUNDLED_MODELS_DIR", tmp_path)
    with running_server(None) as s:
        client = s.client()
        assert [m.id for m in client.models.list().data] == ["default", "default-ar"]
        assert client.completions.create(model="default-ar", prompt=PROMPT, max_tokens=3).model == "default-ar"
        r = httpx.post(s.url + "/v1/completions", json={"prompt": PROMPT, "max_tokens": 3})
        assert r.json()["model"] == "default"  # the default answers requests that name no model


def test_a_missing_model_is_a_one_line_error(tmp_path, capsys):
    assert main(["serve", "--model", str(tmp_path / "nothing"), "--port", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("unmask serve: error:") and "no such model folder" in err and "\n" not in err


def test_echo_returns_the_prompt_and_the_answer(client):
    plain = client.completions.create(model="diffusion", prompt=PROMPT, max_tokens=6)
    echoed = client.completions.create(model="diffusion", prompt=PROMPT, max_tokens=6, echo=True)
    assert echoed.choices[0].text == PROMPT + plain.choices[0].text


def test_chat_templates_from_the_model_folder_or_plain():
    from unmask.serve import chat

    messages = [("system", "be brief"), ("user", "hi"), ("assistant", "hello"), ("user", "bye")]
    prompt, stops = chat.render(messages, None)
    assert prompt == ("### System:\nbe brief\n\n### User:\nhi\n\n### Assistant:\nhello\n\n### User:\nbye\n\n"
                      "### Assistant:\n") and stops == (chat.PLAIN_STOP,)
    template = ("{{ bos_token }}{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}</s>{% endfor %}"
                "{% if add_generation_prompt %}<assistant>{% endif %}")
    prompt, stops = chat.render(messages[:2], template, {"bos_token": "<s>"})
    assert prompt == "<s><system>be brief</s><user>hi</s><assistant>" and stops == ()
    with pytest.raises(UnmaskError, match="rejected"):
        chat.render(messages, "{{ raise_exception('no system role') }}")


def test_a_model_that_fails_to_load_stops_the_server_with_a_one_line_error(tmp_path, capsys):
    from serve_helpers import free_port

    (tmp_path / "config.json").write_text("{not json")
    assert main(["serve", "--model", str(tmp_path), "--port", str(free_port())]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("unmask serve: error:") and "config.json" in err


def test_the_evals_openai_completer_reads_forward_passes(server):
    from unmask.evals.completers import CompletionRequest, OpenAICompleter

    completer = OpenAICompleter(server.url, "diffusion", max_tokens=8)
    [plain, infill] = completer.complete([CompletionRequest(PROMPT, seed=3),
                                          CompletionRequest("abcdab", suffix="abcd", stop=("\n",))])
    lm = load_model(diffusion_folder())
    config = SamplerConfig.from_generation_config(lm.generation_config, max_new_tokens=8, seed=3)
    [expected] = generate(lm.model, lm.tokenizer, [PROMPT], config)
    assert plain.text == expected.text and plain.num_forwards == expected.stats.forward_passes
    assert plain.num_tokens == len(expected.token_ids)
    assert isinstance(infill.num_forwards, int) and infill.num_forwards > 0


def test_openai_penalties_reach_the_sampler(client):
    lm = load_model(diffusion_folder())
    config = SamplerConfig.from_generation_config(lm.generation_config, max_new_tokens=12, frequency_penalty=1.5,
                                                  presence_penalty=0.5)
    [expected] = generate(lm.model, lm.tokenizer, [PROMPT], config)
    r = client.completions.create(model="diffusion", prompt=PROMPT, max_tokens=12, frequency_penalty=1.5,
                                  presence_penalty=0.5)
    assert r.choices[0].text == expected.text
    chat = client.chat.completions.create(model="diffusion", messages=[{"role": "user", "content": "abc"}],
                                          max_tokens=4, presence_penalty=1.0)
    assert chat.choices[0].message.content is not None


def test_stop_at_block_end_is_an_extra_of_completions():
    """Off unless asked for (an API completion runs to its stops and budget); asked for, the bundled model's
    answer ends with the prompt's function, as `unmask generate` prints it, streamed or not."""
    import ast

    from unmask.model.loading import BUNDLED_MODELS_DIR

    prompt = "def fibonacci(n):"
    lm = load_model("default")
    config = SamplerConfig.from_generation_config(lm.generation_config, max_new_tokens=64, seed=1)
    [expected] = generate(lm.model, lm.tokenizer, [prompt], config.replace(stop_at_block_end=True))
    with running_server([str(BUNDLED_MODELS_DIR / "default")]) as s:
        client = s.client()
        kwargs = dict(model="default", prompt=prompt, max_tokens=64, seed=1)
        plain = client.completions.create(**kwargs).choices[0]
        block = client.completions.create(extra_body={"stop_at_block_end": True}, **kwargs).choices[0]
        streamed = "".join(c.choices[0].text for c in client.completions.create(
            stream=True, extra_body={"stop_at_block_end": True}, **kwargs) if c.choices)
        with pytest.raises(openai.BadRequestError):
            client.completions.create(extra_body={"stop_at_block_end": "sometimes"}, **kwargs)
    assert block.text == streamed == expected.text and block.finish_reason == "stop"
    assert plain.text.startswith(block.text) and len(plain.text) > len(block.text)
    ast.parse(prompt + block.text)
