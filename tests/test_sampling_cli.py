"""`unmask generate`: prompt sources, output modes and one-line errors, on tiny random checkpoints."""

import io
import json

import pytest

from unmask.cli import main
from unmask.model import save_pretrained

from sampling_helpers import byte_tokenizer, one_thread, random_lm


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    with one_thread():
        yield


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("models") / "diffusion"
    save_pretrained(random_lm(), path, tokenizer=byte_tokenizer(),
                    generation_config={"policy": "threshold", "threshold": 0.5, "max_new_tokens": 6, "block_length": 4})
    return path


@pytest.fixture(scope="module")
def block_model_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("models") / "block"
    save_pretrained(random_lm(attention="block_causal", block_size=4), path, tokenizer=byte_tokenizer())
    return path


def run(capsys, *argv):
    code = main(["generate", *map(str, argv)])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_prompt_argument_prints_prompt_and_answer(model_dir, capsys):
    code, out, err = run(capsys, "def f(x):", "--model", model_dir)
    assert code == 0 and out.startswith("def f(x):") and err == ""


def test_stats_json_and_only_new(model_dir, capsys):
    code, out, err = run(capsys, "abc", "--model", model_dir, "--stats", "--only-new")
    assert code == 0 and not out.startswith("abc")
    assert "tokens/forward" in err and "tokens/s" in err and "forward passes" in err
    code, out, _ = run(capsys, "abc", "--model", model_dir, "--json", "--max-new-tokens", "3")
    payload = json.loads(out)
    assert code == 0 and payload["stats"]["tokens"] <= 3
    assert payload["config"]["threshold"] == 0.5  # from generation_config.json
    assert payload["config"]["max_new_tokens"] == 3  # the flag wins


def test_prompt_from_file_and_stdin(model_dir, tmp_path, capsys, monkeypatch):
    prompt = tmp_path / "p.py"
    prompt.write_text("import os\n")
    code, out, _ = run(capsys, "--prompt-file", prompt, "--model", model_dir)
    assert code == 0 and out.startswith("import os\n")
    monkeypatch.setattr("sys.stdin", io.StringIO("from stdin"))
    code, out, _ = run(capsys, "--model", model_dir)
    assert code == 0 and out.startswith("from stdin")


def test_suffix_infills_between_prompt_and_suffix(model_dir, capsys):
    code, out, _ = run(capsys, "def f(x):\n    return ", "--suffix", "\n\nprint(f(2))\n", "--model", model_dir,
                       "--infill-length", "3")
    assert code == 0 and out.startswith("def f(x):\n    return ") and out.endswith("\n\nprint(f(2))\n")


def test_watch_draws_the_draft(model_dir, capsys):
    code, out, err = run(capsys, "abc", "--model", model_dir, "--watch", "--threshold", "1")
    assert code == 0 and "[step 1]" in err and "\u2591" in err and out.startswith("abc")


def test_same_seed_same_output(model_dir, capsys):
    argv = ("abc", "--model", model_dir, "--temperature", "1.0", "--seed", "11", "--max-new-tokens", "8")
    assert run(capsys, *argv)[1] == run(capsys, *argv)[1]


@pytest.mark.parametrize("argv, message", [
    (["", "--model", "{model}"], "the prompt is empty"),
    (["x" * 200, "--model", "{model}"], "does not fit the model's context of 96 tokens"),
    (["abc", "--model", "{model}", "--threshold", "1.5"], "--threshold must be in (0, 1]"),
    (["abc", "--model", "{model}", "--threshold", "0"], "--threshold must be in (0, 1]"),
    (["abc", "--model", "{block}", "--suffix", "x"], "cannot infill"),
    (["abc", "--model", "{tmp}"], "config.json: missing"),
    (["abc", "--model", "{tmp}/nowhere"], "no such model folder"),
    (["--prompt-file", "{tmp}/missing.py", "--model", "{model}"], "--prompt-file"),
    (["abc", "--model", "{model}", "--max-new-tokens", "0"], "--max-new-tokens must be an integer >= 1"),
    (["abc", "--model", "{model}", "--top-p", "1.5"], "--top-p must be in (0, 1]"),
    (["abc", "--model", "{model}", "--stop-token-ids", "2,x"], "--stop-token-ids '2,x': expected"),
    (["abc", "--model", "{model}", "--cache", "kv"], "cache 'kv' does not apply"),
])
def test_bad_input_is_one_line_error(argv, message, model_dir, block_model_dir, tmp_path, capsys):
    argv = [a.format(model=model_dir, block=block_model_dir, tmp=tmp_path) for a in argv]
    code, out, err = run(capsys, *argv)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("unmask generate: error: ") and message in err


def test_an_install_without_the_bundled_model_says_so(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("unmask.model.loading.BUNDLED_MODELS_DIR", tmp_path)
    code, out, err = run(capsys, "abc")
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "the bundled model 'default' is not in this install" in err
