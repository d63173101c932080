"""Several stop tokens: any of a request's stop_token_ids ends its answer (instruct models end a turn with a
token other than end-of-text), defaulting to config.json's eos plus generation_config.json's list."""

import json

import pytest
import torch

from unmask.errors import UnmaskError
from unmask.model import load_model, save_pretrained
from unmask.sampling import Request, SamplerConfig, generate

import foreign_formats as ff
from sampling_helpers import one_thread, random_lm

PROMPTS = [[40, 41, 42], [50, 51, 52, 53, 54, 55, 56]]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    with one_thread():
        yield


def ids(*seqs, config=None):
    return [Request(prompt_ids=list(s), config=config) for s in seqs]


def _probe(model, prompt, n=16):
    """The greedy answer when nothing stops it, one token per step."""
    cfg = SamplerConfig(max_new_tokens=n, threshold=2.0, stop_token_ids=())
    result = generate(model, None, ids(prompt), cfg)[0]
    assert len(result.token_ids) == n and result.finish_reason == "length"
    return result.token_ids


def test_autoregressive_stops_at_the_first_of_several_stop_ids():
    model = random_lm(attention="causal", shift_logits=True)
    probe = _probe(model, PROMPTS[1])
    stops = (probe[9], probe[4])  # the later one listed first: the earliest occurrence in the answer wins
    cut = next(i for i, t in enumerate(probe) if t in stops)
    result = generate(model, None, ids(PROMPTS[1]), SamplerConfig(max_new_tokens=16, stop_token_ids=stops))[0]
    assert result.token_ids == probe[:cut] and result.finish_reason == "stop"
    assert result.stats.forward_passes == cut + 1  # no step after the stop token


@pytest.mark.parametrize("attention", ["bidirectional", "block_causal"])
def test_diffusion_stops_at_any_stop_id_and_spends_no_step_after_it(attention):
    model = random_lm(attention=attention, block_size=4 if attention == "block_causal" else None)
    probe = _probe(model, PROMPTS[1])
    stops = (probe[12], probe[5])
    assert model.config.eos_token_id not in probe  # only the listed ids can end this answer
    result = generate(model, None, ids(PROMPTS[1]), SamplerConfig(max_new_tokens=16, threshold=2.0,
                                                                  stop_token_ids=stops))[0]
    assert result.finish_reason == "stop" and not set(stops) & set(result.token_ids)
    assert len(result.token_ids) + 1 <= result.stats.forward_passes < 16
    # The end-of-text id alone (the default without a generation config) does not stop it.
    alone = generate(model, None, ids(PROMPTS[1]), SamplerConfig(max_new_tokens=16, threshold=2.0))[0]
    assert alone.token_ids == probe and alone.finish_reason == "length"


def test_empty_stop_list_runs_to_the_budget_past_end_of_text():
    model = random_lm(attention="causal", shift_logits=True)
    probe = _probe(model, PROMPTS[0])
    model.config.eos_token_id = probe[3]
    assert len(generate(model, None, ids(PROMPTS[0]), SamplerConfig(max_new_tokens=16))[0].token_ids) < 16
    ignore = generate(model, None, ids(PROMPTS[0]), SamplerConfig(max_new_tokens=16, stop_token_ids=()))[0]
    assert ignore.token_ids == probe and ignore.finish_reason == "length"


@pytest.mark.parametrize("attention", ["bidirectional", "causal"])
def test_rows_with_different_stop_lists_decode_as_alone(attention):
    model = random_lm(attention=attention, shift_logits=attention == "causal")
    probes = [_probe(model, p) for p in PROMPTS]
    configs = [SamplerConfig(max_new_tokens=16, threshold=2.0, stop_token_ids=(probes[0][6], probes[0][2], 7)),
               SamplerConfig(max_new_tokens=16, threshold=2.0, stop_token_ids=(probes[1][8],))]
    together = generate(model, None, [Request(prompt_ids=p, config=c) for p, c in zip(PROMPTS, configs)])
    alone = [generate(model, None, ids(p, config=c))[0] for p, c in zip(PROMPTS, configs)]
    for t, a in zip(together, alone):
        assert t.token_ids == a.token_ids and t.finish_reason == a.finish_reason == "stop"


def test_stop_token_ids_validation():
    assert SamplerConfig(stop_token_ids=[3, 4]).stop_token_ids == (3, 4)
    assert SamplerConfig(stop_token_ids=5).stop_token_ids == (5,)
    for bad in ((-1,), ("a",), (1.5,), "7"):
        with pytest.raises(UnmaskError, match="stop_token_ids"):
            SamplerConfig(stop_token_ids=bad)
    model = random_lm()
    with pytest.raises(UnmaskError, match="stop_token_ids: 9999 is outside the model's vocabulary"):
        generate(model, None, ids(PROMPTS[0]), SamplerConfig(stop_token_ids=(0, 9999)))


def test_generation_config_eos_list_extends_the_default_stops(tmp_path):
    model = random_lm(attention="causal", shift_logits=True)
    probe = _probe(model, PROMPTS[1])
    save_pretrained(model, tmp_path / "ck", generation_config={"eos_token_id": [probe[4], model.config.eos_token_id]})
    loaded = load_model(tmp_path / "ck")
    eos = model.config.eos_token_id
    assert loaded.generation_config["stop_token_ids"] == [eos, probe[4]]  # config eos first, no repeats
    cfg = SamplerConfig.from_generation_config(loaded.generation_config, max_new_tokens=16)
    assert cfg.stop_token_ids == (eos, probe[4])
    result = generate(loaded.model, None, ids(PROMPTS[1]), cfg)[0]
    assert result.finish_reason == "stop" and result.token_ids == probe[:probe.index(probe[4])]
    # Hugging Face's single-id form, read without load_model.
    assert SamplerConfig.from_generation_config({"eos_token_id": 9}).stop_token_ids == (9,)
    assert SamplerConfig.from_generation_config({}).stop_token_ids is None


def test_open_weight_folders_add_their_generation_config_eos_ids(tmp_path):
    folder, _ = ff.write_dream(tmp_path / "dream")
    assert load_model(folder).generation_config["stop_token_ids"] == [143, 145]  # <|endoftext|>, <|im_end|>
    (folder / "generation_config.json").write_text(json.dumps({"eos_token_id": [145, 150]}))
    loaded = load_model(folder)
    assert loaded.generation_config["stop_token_ids"] == [143, 145, 150]
    assert SamplerConfig.from_generation_config(loaded.generation_config).stop_token_ids == (143, 145, 150)
    (folder / "generation_config.json").write_text(json.dumps({"eos_token_id": "x"}))
    with pytest.raises(Exception, match="eos_token_id"):
        load_model(folder)


def test_llada_instruct_turn_end_stops_generation(tmp_path):
    """LLaDA's <|eot_id|> (not its EOS) ends an answer: plant it as the model's certain first answer token."""
    folder, _ = ff.write_llada(tmp_path / "llada")
    loaded = load_model(folder, dtype=torch.float32)
    eot = loaded.tokenizer.token_to_id("<|eot_id|>")
    assert eot in loaded.generation_config["stop_token_ids"] and eot != loaded.model.config.eos_token_id
    forward = loaded.model.forward

    def planted(*args, **kwargs):  # every position predicts <|eot_id|> with certainty
        logits = forward(*args, **kwargs)
        logits[..., eot] = logits.abs().amax() + 30.0
        return logits

    loaded.model.forward = planted
    cfg = SamplerConfig.from_generation_config(loaded.generation_config, policy="threshold", max_new_tokens=8)
    result = generate(loaded.model, loaded.tokenizer, ids([10, 11, 12]), cfg)[0]
    assert result.token_ids == [] and result.finish_reason == "stop" and result.stats.forward_passes == 1
