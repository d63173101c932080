"""The bundled models shipped in the package (issue #12): both names load, they are twins, they fit the size
limit, and the README's first command runs, is deterministic and, on the default, prints Python that parses
(generate ends the answer with the function's block; the answer before that point is the weights' own). The
twin's greedy answer to that prompt repeats `n, ` until the token limit (MODEL_CARD.md), so it is not parsed."""

import ast
import hashlib
import json

import pytest

from unmask.cli import main
from unmask.model import load_model
from unmask.model.loading import BUNDLED_MODELS_DIR

from sampling_helpers import one_thread

MAX_BYTES = 48 * 1024 * 1024  # the limit per model folder


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    with one_thread():
        yield


@pytest.mark.parametrize("name", ["default", "default-ar"])
def test_bundled_model_loads_and_fits_the_size_limit(name):
    lm = load_model(name)
    assert lm.name == name and lm.tokenizer is not None
    folder = BUNDLED_MODELS_DIR / name
    assert sum(f.stat().st_size for f in folder.iterdir()) <= MAX_BYTES
    # the card's provenance travels with the weights
    state = json.loads((folder / "trainer_state.json").read_text())
    assert state["step"] > 0 and state["total_tokens"] > 0


def test_the_twins_share_shapes_tokenizer_and_token_budget():
    diffusion, ar = (json.loads((BUNDLED_MODELS_DIR / n / "config.json").read_text())
                     for n in ("default", "default-ar"))
    shape_keys = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
                  "intermediate_size", "max_position_embeddings")
    assert {k: diffusion[k] for k in shape_keys} == {k: ar[k] for k in shape_keys}
    assert diffusion["attention"] == "bidirectional" and ar["attention"] == "causal"
    tokenizers = {hashlib.sha256((BUNDLED_MODELS_DIR / n / "tokenizer.json").read_bytes()).hexdigest()
                  for n in ("default", "default-ar")}
    assert len(tokenizers) == 1
    # The diffusion model's budget counts what it started from (inherited_tokens: the autoregressive phase and the
    # stages before its self-distillation): the same total as the twin's. The distillation's masked-diffusion term
    # read the corpus windows that come next in the twin's order (its mdlm_loader), the rest were its own answers.
    diffusion, ar = (json.loads((BUNDLED_MODELS_DIR / n / "trainer_state.json").read_text())
                     for n in ("default", "default-ar"))
    assert diffusion["total_tokens"] == ar["total_tokens"] > 0
    assert diffusion["inherited_tokens"] > 0 and diffusion["objective"] == "distill" and ar["objective"] == "ar"
    same_order = ("seed", "window_len", "global_batch")
    assert {k: diffusion["mdlm_loader"][k] for k in same_order} == {k: ar["loader"][k] for k in same_order}
    assert diffusion["mdlm_loader"]["step"] <= ar["loader"]["step"]


@pytest.mark.parametrize("name", ["default", "default-ar"])
def test_readme_command_runs_and_is_deterministic(name, capsys):
    outputs = []
    for _ in range(2):
        assert main(["generate", "def fibonacci(n):", "--model", name, "--stats"]) == 0
        outputs.append(capsys.readouterr())
    assert outputs[0].out.startswith("def fibonacci(n):") and len(outputs[0].out) > len("def fibonacci(n):\n")
    assert outputs[0].out == outputs[1].out
    assert "tokens/forward" in outputs[0].err
    if name == "default":
        ast.parse(outputs[0].out)


# A prompt whose greedy answer goes on past the function (the twin's to the README prompt never leaves it).
@pytest.mark.parametrize("name,prompt", [("default", "def fibonacci(n):"),
                                         ("default-ar", "def add(a, b):\n    return")])
def test_the_block_end_cuts_the_same_answer_short_and_streams_it_whole(name, prompt):
    from unmask.sampling import Request, SamplerConfig, generate, stream

    lm = load_model(name)
    config = SamplerConfig.from_generation_config(lm.generation_config)
    [whole] = generate(lm.model, lm.tokenizer, [prompt], config)
    block_config = config.replace(stop_at_block_end=True)
    [block] = generate(lm.model, lm.tokenizer, [prompt], block_config)
    # The model writes past the function; the block rule keeps exactly the function, in fewer forward passes.
    assert whole.text.startswith(block.text) and len(whole.text) > len(block.text)
    assert block.finish_reason == "stop" and block.stats.forward_passes < whole.stats.forward_passes
    ast.parse(prompt + block.text)
    streamed = "".join(e.text for e in stream(lm.model, lm.tokenizer, [Request(prompt, config=block_config)]))
    assert streamed == block.text
