"""Open-weight folders through `unmask bench --model DIR` and `unmask serve --model DIR` (issue #10): tiny
random checkpoints in each family's on-disk format (tests/foreign_formats.py), driven through the CLI and
the official openai client. The chat test checks that the folder's own template shaped the prompt: the
server's prompt_tokens equal the token count of that template rendered here with jinja2."""

from __future__ import annotations

import json

import pytest

import foreign_formats as ff
from sampling_helpers import one_thread
from serve_helpers import running_server
from unmask.cli import main

PROMPT = "def x ( y ) : return y + 1"


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("open-weights")
    for name, write in (("llada", ff.write_llada), ("dream", ff.write_dream), ("sdar", ff.write_sdar),
                        ("fast-dllm-v2", ff.write_fast_dllm_v2), ("qwen2", ff.write_qwen_ar)):
        write(root / name)
    return root


@pytest.mark.parametrize("name, attention", [("llada", "bidirectional"), ("sdar", "block_causal"),
                                             ("fast-dllm-v2", "block_causal")])
def test_bench_decodes_open_weight_folders(folders, tmp_path, name, attention):
    out = tmp_path / "bench"
    with one_thread():
        code = main(["bench", "--model", str(folders / name), "--ar-model", str(folders / "qwen2"), "--limit", "2",
                     "--max-new-tokens", "8", "--repeats", "1", "--warmup", "0", "--batch-sizes", "1",
                     "--no-progress", "--out", str(out)])
    assert code == 0
    data = json.loads((out / "bench.json").read_text())
    models = data["models"]
    assert models["diffusion"]["path"] == str(folders / name) and models["diffusion"]["attention"] == attention
    assert models["ar"]["attention"] == "causal"
    kinds = {r["kind"] for r in data["rows"]}
    assert {"vanilla", "ar"} <= kinds and len(kinds) > 2
    for r in data["rows"]:
        assert r["requests"] == 2 and 0 < r["tokens"] <= 16 and r["forward_passes"] > 0


def _template_tokens(folder, messages) -> int:
    """The folder's chat template rendered with jinja2 here, then counted with its tokenizer."""
    import jinja2
    from tokenizers import Tokenizer

    cfg = json.loads((folder / "tokenizer_config.json").read_text())
    text = jinja2.Template(cfg["chat_template"]).render(messages=messages, add_generation_prompt=True,
                                                        bos_token=cfg.get("bos_token", ""))
    return len(Tokenizer.from_file(str(folder / "tokenizer.json")).encode(text, add_special_tokens=False).ids)


def test_server_serves_dream_and_llada_folders(folders):
    with running_server([str(folders / "dream"), str(folders / "llada")]) as s:
        client = s.client()
        assert [m.id for m in client.models.list().data] == ["dream", "llada"]
        messages = [{"role": "user", "content": "print hello world"}]
        for name in ("dream", "llada"):
            done = client.completions.create(model=name, prompt=PROMPT, max_tokens=6, seed=1)
            assert done.model == name and done.choices[0].finish_reason in ("stop", "length")
            # every word is in the tiny vocabulary; both families declare a beginning-of-text token, prepended
            assert done.usage.prompt_tokens == len(PROMPT.split()) + 1
            assert 0 < done.usage.completion_tokens <= 6
            again = client.completions.create(model=name, prompt=PROMPT, max_tokens=6, seed=1)
            assert again.choices[0].text == done.choices[0].text
            chat = client.chat.completions.create(model=name, messages=messages, max_tokens=6, seed=1)
            assert chat.choices[0].message.role == "assistant" and chat.usage.completion_tokens <= 6
            assert chat.usage.prompt_tokens == _template_tokens(folders / name, messages)
            chunks = list(client.completions.create(model=name, prompt=PROMPT, max_tokens=6, seed=1, stream=True))
            assert "".join(c.choices[0].text for c in chunks if c.choices) == done.choices[0].text
