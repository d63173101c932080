"""The OpenAI-compatible completer against a stub /v1/completions server on the loopback."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from unmask.errors import UnmaskError
from unmask.evals.completers import CompletionRequest, OpenAICompleter, weights_sha256

pytest.importorskip("openai")


class _Stub(BaseHTTPRequestHandler):
    received: list = []

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        _Stub.received.append((self.path, body))
        if body["prompt"] == "fail":
            self.send_response(400)
            payload = {"error": {"message": "bad prompt", "type": "invalid_request_error", "param": None, "code": None}}
        else:
            self.send_response(200)
            payload = {"id": "cmpl-1", "object": "text_completion", "created": 0, "model": body["model"],
                       "choices": [{"index": 0, "text": "    return 1\n", "finish_reason": "stop", "logprobs": None}],
                       "usage": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7, "forward_passes": 2}}
        data = json.dumps(payload).encode()
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Stub)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    _Stub.received.clear()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_completions_request_and_response(server):
    completer = OpenAICompleter(server, "tiny", max_tokens=16, temperature=0.2)
    [c] = completer.complete([CompletionRequest(prompt="def f():\n", suffix="\n", seed=7,
                                                stop=("\nclass", "\ndef", "\n#", "\nif", "\nprint"))])
    path, body = _Stub.received[0]
    assert path == "/v1/completions"
    assert body["model"] == "tiny" and body["prompt"] == "def f():\n" and body["suffix"] == "\n"
    assert body["max_tokens"] == 16 and body["temperature"] == 0.2 and body["seed"] == 7
    assert len(body["stop"]) == 4  # OpenAI's limit; the runner cuts at the fifth itself
    assert (c.text, c.num_tokens, c.num_forwards) == ("    return 1\n", 4, 2)
    assert completer.identity() == {"url": server + "/v1", "model": "tiny"}


def test_server_errors_become_one_line_errors(server):
    completer = OpenAICompleter(server + "/v1/", "tiny")
    with pytest.raises(UnmaskError, match="completions failed"):
        completer.complete([CompletionRequest(prompt="fail")])


def test_oracle_length_is_refused_for_a_server(server):
    with pytest.raises(UnmaskError, match="oracle"):
        OpenAICompleter(server, "tiny").complete([CompletionRequest(prompt="x", suffix="y", infill_length=3)])


def test_weights_hash_covers_every_shard(tmp_path):
    (tmp_path / "model-00001-of-00002.safetensors").write_bytes(b"a")
    (tmp_path / "model-00002-of-00002.safetensors").write_bytes(b"b")
    first = weights_sha256(tmp_path)["sha256"]
    (tmp_path / "model-00002-of-00002.safetensors").write_bytes(b"c")
    assert weights_sha256(tmp_path)["sha256"] != first
    with pytest.raises(UnmaskError, match="no \\*.safetensors"):
        weights_sha256(tmp_path / "missing")


def test_long_prompts_and_suffixes_are_cut_to_fit_the_context(tmp_path):
    """HumanEval prompts can be longer than a small model's context: the completer keeps a completion prompt's
    last tokens so that prompt + max_new_tokens fit (96 positions here), and an infill's prefix end and suffix
    start so that 64 new tokens fit, instead of failing the whole run."""
    from sampling_helpers import byte_tokenizer, one_thread, random_lm
    from unmask.evals.completers import UnmaskCompleter
    from unmask.model import save_pretrained
    from unmask.sampling import SamplerConfig

    save_pretrained(random_lm(attention="causal", shift_logits=True), tmp_path / "m", tokenizer=byte_tokenizer())
    completer = UnmaskCompleter(str(tmp_path / "m"), SamplerConfig(max_new_tokens=16, stop_token_ids=(), cache="kv"))
    long_prompt, long_suffix = "x = 1\n" * 30, "y = 2\n" * 30  # 180 byte tokens each > 96
    decode = completer.lm.tokenizer.decode
    with one_thread():
        [c, m] = completer.complete([CompletionRequest(prompt=long_prompt, seed=0),
                                     CompletionRequest(prompt=long_prompt, suffix=long_suffix, seed=0)])
    assert c.num_tokens == 16 and m.num_tokens <= 16
    assert completer._fitted_ids(CompletionRequest(prompt="x = 1\n", seed=0)) == (None, None)
    assert completer._fitted_ids(CompletionRequest(prompt="x = 1\n", suffix="y\n", seed=0)) == (None, None)
    prompt_ids, suffix_ids = completer._fitted_ids(CompletionRequest(prompt=long_prompt, seed=0))
    assert suffix_ids is None and len(prompt_ids) == 96 - 16 and decode(prompt_ids) == long_prompt[-80:]
    # infill: 96 - 3 FIM markers - min(16, 64) new tokens = 77 tokens, the suffix's first half and the prefix's end
    prompt_ids, suffix_ids = completer._fitted_ids(CompletionRequest(prompt=long_prompt, suffix=long_suffix, seed=0))
    assert len(prompt_ids) + len(suffix_ids) == 77 and len(suffix_ids) == 38
    assert decode(prompt_ids) == long_prompt[-39:] and decode(suffix_ids) == long_suffix[:38]
    # a short prefix leaves its room to the suffix
    prompt_ids, suffix_ids = completer._fitted_ids(CompletionRequest(prompt="x = 1\n", suffix=long_suffix, seed=0))
    assert prompt_ids == completer.lm.tokenizer.encode("x = 1\n", add_special_tokens=False).ids
    assert len(suffix_ids) == 77 - 6
