"""`unmask bench serve`: the load generator against the real server (uvicorn on a free loopback port, a tiny
model). Counts must add up, figures must agree with the per-request records, 401s are counted and an
unreachable server is a one-line error. No timing assertions."""

from __future__ import annotations

import json

import pytest

from serve_helpers import diffusion_folder, free_port, running_server
from unmask.bench.serve_run import base_url, percentile
from unmask.cli import main

ROW_FIELDS = {"concurrency", "requests", "succeeded", "failed", "errors", "first_error_messages", "wall_s",
              "requests_per_s", "output_tokens", "requests_without_usage", "output_tokens_per_s", "prompt_tokens",
              "time_to_first_token_s", "latency_s", "records"}


@pytest.fixture(scope="module")
def prompt_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("bench-serve") / "prompts.jsonl"
    path.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in ("abcdabcdab", "bcdabcdabc", "cdabcdabcd")))
    return path


def _bench(tmp_path, url, *flags) -> dict:
    out = tmp_path / "out"
    assert main(["bench", "serve", "--url", url, "--out", str(out), *flags]) == 0
    assert (out / "bench.md").read_text().startswith("## unmask bench serve")
    return json.loads((out / "bench.json").read_text())


def _check_row(row: dict, requests: int, concurrency: int, streamed: bool) -> None:
    assert set(row) == ROW_FIELDS
    assert row["concurrency"] == concurrency and row["requests"] == requests == len(row["records"])
    assert row["succeeded"] + row["failed"] == requests and row["failed"] == sum(row["errors"].values())
    ok = [r for r in row["records"] if r["status"] == "200"]
    assert len(ok) == row["succeeded"]
    assert row["output_tokens"] == sum(r["output_tokens"] for r in ok)
    assert row["requests_per_s"] == pytest.approx(row["succeeded"] / row["wall_s"])
    assert row["output_tokens_per_s"] == pytest.approx(row["output_tokens"] / row["wall_s"])
    if not ok:
        assert all(v is None for v in (*row["latency_s"].values(), *row["time_to_first_token_s"].values()))
        return
    lat = row["latency_s"]
    assert lat["p50"] <= lat["p90"] <= lat["p99"] <= max(r["latency_s"] for r in ok)
    assert lat["p50"] == pytest.approx(percentile([r["latency_s"] for r in ok], 50))
    if streamed:
        for r in ok:  # the first text arrives before the answer ends
            assert 0 < r["time_to_first_token_s"] <= r["latency_s"]
        assert row["time_to_first_token_s"]["p50"] <= row["time_to_first_token_s"]["p99"]
    else:
        assert all(r["time_to_first_token_s"] is None for r in ok) and row["time_to_first_token_s"]["p50"] is None


def test_load_generator_against_the_real_server(tmp_path, prompt_file):
    with running_server([str(diffusion_folder())], max_batch=4) as s:
        data = _bench(tmp_path, s.url + "/v1/", "--concurrency", "1,4", "--requests", "6", "--max-tokens", "8",
                      "--stream", "--prompt-file", str(prompt_file), "--seed", "3")
        plain = _bench(tmp_path, s.url, "--concurrency", "2", "--requests", "3", "--max-tokens", "8",
                       "--prompt-file", str(prompt_file), "--model", "diffusion")
    assert data["mode"] == "serve" and data["server_models"] == ["diffusion"]
    assert data["settings"]["url"] == s.url and data["settings"]["concurrency"] == [1, 4]
    assert data["settings"]["num_prompts"] == 3 and data["settings"]["stream"] is True
    assert {"cpu_model", "cpu_cores"} <= set(data["hardware"]) and "torch" in data["software"]
    for row, c in zip(data["rows"], (1, 4)):
        _check_row(row, 6, c, streamed=True)
        assert row["succeeded"] == 6 and row["errors"] == {}
        assert all(0 < r["output_tokens"] <= 8 for r in row["records"])
    assert [r["concurrency"] for r in plain["rows"]] == [2]
    _check_row(plain["rows"][0], 3, 2, streamed=False)
    assert plain["rows"][0]["succeeded"] == 3 and plain["settings"]["model"] == "diffusion"


def test_wrong_api_key_counts_401s(tmp_path, prompt_file, capsys):
    with running_server([str(diffusion_folder())], api_key="right-key") as s:
        data = _bench(tmp_path, s.url, "--api-key", "wrong-key", "--concurrency", "2", "--requests", "4",
                      "--prompt-file", str(prompt_file), "--max-tokens", "4", "--stream")
    row = data["rows"][0]
    _check_row(row, 4, 2, streamed=True)
    assert row["succeeded"] == 0 and row["errors"] == {"401": 4} and row["requests_per_s"] == 0
    assert data["server_models"] is None and "API key" in row["first_error_messages"]["401"]
    assert "401: 4" in capsys.readouterr().out


def test_unreachable_url_is_a_one_line_error(capsys):
    port = free_port()  # nothing listens there
    assert main(["bench", "serve", "--url", f"http://127.0.0.1:{port}", "--requests", "2"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "cannot reach the server" in err and str(port) in err


@pytest.mark.parametrize("argv, message", [
    (["bench", "serve"], "needs --url"),
    (["bench", "serve", "--url", "127.0.0.1:8000"], "http://"),
    (["bench", "serve", "--url", "http://x", "--concurrency", "0"], "--concurrency"),
    (["bench", "serve", "--url", "http://x", "--requests", "0"], "--requests"),
    (["bench", "--url", "http://x"], "serve mode"),
])
def test_bad_flags(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err


def test_base_url_and_percentile():
    assert base_url("http://h:1/v1/") == base_url("http://h:1") == "http://h:1"
    assert percentile([], 50) is None and percentile([3.0], 99) == 3.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5 and percentile([1.0, 2.0, 3.0, 4.0], 90) == pytest.approx(3.7)
