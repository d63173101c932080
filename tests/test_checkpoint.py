"""Checkpoint folders: bit-exact round trips, shards, atomic writes and clear errors."""

import json
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from unmask.model import CheckpointError, from_pretrained, load_generation_config, save_pretrained
from unmask.model import checkpoint as ckpt

from conftest import tiny_model

QWEN_NAMES = {"model.embed_tokens.weight", "model.norm.weight", "lm_head.weight",
              "model.layers.0.self_attn.q_proj.weight", "model.layers.1.mlp.gate_proj.weight",
              "model.layers.0.input_layernorm.weight", "model.layers.0.post_attention_layernorm.weight"}


def test_round_trip_is_bit_exact(tmp_path):
    model = tiny_model(attention="block_causal", block_size=4)
    save_pretrained(model, tmp_path / "ck", generation_config={"policy": "threshold", "threshold": 0.9})
    loaded = from_pretrained(tmp_path / "ck")
    for (n1, a), (n2, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert n1 == n2 and torch.equal(a, b)
    assert loaded.config == model.config
    x = torch.randint(2, 60, (2, 9))
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))
    names = set(load_file(tmp_path / "ck" / "model.safetensors"))
    assert QWEN_NAMES <= names
    gen = load_generation_config(tmp_path / "ck")
    assert gen["threshold"] == 0.9 and gen["mask_token_id"] == 63


@pytest.mark.parametrize("meta_above", [0, 10**12], ids=["built-on-meta", "built-on-cpu"])
@pytest.mark.parametrize("tied", [False, True])
def test_both_build_devices_load_the_stored_weights(tmp_path, monkeypatch, meta_above, tied):
    # Large models are built on the meta device, small ones on the CPU (then overwritten): same result.
    model = tiny_model(tie_word_embeddings=tied)
    save_pretrained(model, tmp_path / "ck")
    monkeypatch.setattr(ckpt, "META_BUILD_MIN_PARAMETERS", meta_above)
    loaded = from_pretrained(tmp_path / "ck")
    stored = dict(model.state_dict())
    for name, t in loaded.state_dict().items():
        assert t.device.type == "cpu" and torch.equal(t, stored.pop(name)), name
    assert not stored
    assert (loaded.lm_head.weight is loaded.model.embed_tokens.weight) == tied


def test_small_model_missing_a_tensor_still_errors(tmp_path):
    # Built on the CPU, a tensor the file lacks would keep its random initial value: the check must catch it.
    save_pretrained(tiny_model(), tmp_path / "ck")
    tensors = load_file(tmp_path / "ck" / "model.safetensors")
    del tensors["model.norm.weight"]
    save_file(tensors, tmp_path / "ck" / "model.safetensors")
    with pytest.raises(CheckpointError, match="missing tensor.*model.norm.weight"):
        from_pretrained(tmp_path / "ck")


def test_tied_embeddings_stored_once(tmp_path):
    model = tiny_model(tie_word_embeddings=True)
    save_pretrained(model, tmp_path / "ck")
    assert "lm_head.weight" not in load_file(tmp_path / "ck" / "model.safetensors")
    loaded = from_pretrained(tmp_path / "ck")
    assert loaded.lm_head.weight is loaded.model.embed_tokens.weight


def test_shards_and_index_load(tmp_path):
    model = tiny_model()
    save_pretrained(model, tmp_path / "ck", max_shard_bytes=16_000)
    files = sorted(p.name for p in (tmp_path / "ck").glob("model-*.safetensors"))
    assert len(files) > 1 and files[0] == f"model-00001-of-{len(files):05d}.safetensors"
    index = json.loads((tmp_path / "ck" / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"]) == set(model.state_dict())
    loaded = from_pretrained(tmp_path / "ck", dtype=torch.bfloat16)
    assert loaded.lm_head.weight.dtype == torch.bfloat16
    torch.testing.assert_close(loaded.lm_head.weight.float(), model.lm_head.weight.bfloat16().float())


def test_tokenizer_copied(tmp_path):
    tok = tmp_path / "tokenizer.json"
    tok.write_text('{"version": "1.0"}')
    save_pretrained(tiny_model(), tmp_path / "ck", tokenizer=tok)
    assert (tmp_path / "ck" / "tokenizer.json").read_text() == '{"version": "1.0"}'


def test_failed_write_leaves_previous_checkpoint_intact(tmp_path, monkeypatch):
    target = tmp_path / "ck"
    good = tiny_model(seed=1)
    save_pretrained(good, target)
    calls = []

    def crash(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise OSError("disk full")
        return save_file(*args, **kwargs)

    monkeypatch.setattr(ckpt, "save_file", crash)
    with pytest.raises(OSError):
        save_pretrained(tiny_model(seed=2), target, max_shard_bytes=16_000)
    assert sorted(os.listdir(tmp_path)) == ["ck"], "temporary folder left behind"
    loaded = from_pretrained(target)
    assert torch.equal(loaded.lm_head.weight, good.lm_head.weight)


def test_overwrite_replaces_whole_folder(tmp_path):
    save_pretrained(tiny_model(), tmp_path / "ck", max_shard_bytes=16_000)
    save_pretrained(tiny_model(), tmp_path / "ck")
    assert not list((tmp_path / "ck").glob("model-*.safetensors"))
    from_pretrained(tmp_path / "ck")


@pytest.fixture
def saved(tmp_path) -> Path:
    d = tmp_path / "ck"
    save_pretrained(tiny_model(), d)
    return d


def _edit_config(d: Path, **changes):
    cfg = json.loads((d / "config.json").read_text())
    for k, v in changes.items():
        if v is None:
            cfg.pop(k)
        else:
            cfg[k] = v
    (d / "config.json").write_text(json.dumps(cfg))


def corrupt_missing_config(d):
    (d / "config.json").unlink()


def corrupt_bad_json(d):
    (d / "config.json").write_text("{not json")


def corrupt_unknown_field(d):
    _edit_config(d, hidden_sise=32)


def corrupt_missing_field(d):
    _edit_config(d, hidden_size=None)


def corrupt_missing_weights(d):
    (d / "model.safetensors").unlink()


def corrupt_truncated(d):
    data = (d / "model.safetensors").read_bytes()
    (d / "model.safetensors").write_bytes(data[: len(data) // 2])


def corrupt_garbage(d):
    (d / "model.safetensors").write_bytes(b"\x00" * 100)


def corrupt_wrong_shape(d):
    sd = load_file(d / "model.safetensors")
    sd["model.layers.0.mlp.up_proj.weight"] = torch.zeros(3, 3)
    save_file(sd, d / "model.safetensors")


def corrupt_missing_tensor(d):
    sd = load_file(d / "model.safetensors")
    del sd["model.norm.weight"]
    save_file(sd, d / "model.safetensors")


def corrupt_unexpected_tensor(d):
    sd = load_file(d / "model.safetensors")
    sd["model.layers.9.mlp.up_proj.weight"] = torch.zeros(3, 3)
    save_file(sd, d / "model.safetensors")


def corrupt_bad_value(d):
    _edit_config(d, attention="sideways")


@pytest.mark.parametrize("corrupt, file, words", [
    (corrupt_missing_config, "config.json", "missing"),
    (corrupt_bad_json, "config.json", "not valid JSON"),
    (corrupt_unknown_field, "config.json", "unknown field(s) 'hidden_sise' (did you mean 'hidden_size'?)"),
    (corrupt_missing_field, "config.json", "missing field(s) 'hidden_size'"),
    (corrupt_bad_value, "config.json", "attention must be one of"),
    (corrupt_missing_weights, "ck", "no model.safetensors"),
    (corrupt_truncated, "model.safetensors", "truncated or corrupt"),
    (corrupt_garbage, "model.safetensors", "truncated or corrupt"),
    (corrupt_wrong_shape, "model.safetensors", "'model.layers.0.mlp.up_proj.weight' has shape (3, 3)"),
    (corrupt_missing_tensor, "ck", "missing tensor(s) model.norm.weight"),
    (corrupt_unexpected_tensor, "model.safetensors", "unexpected tensor 'model.layers.9.mlp.up_proj.weight'"),
])
def test_corrupt_checkpoint_errors_name_file_and_problem(saved, corrupt, file, words):
    corrupt(saved)
    with pytest.raises(CheckpointError) as info:
        from_pretrained(saved)
    message = str(info.value)
    assert file in message and words in message, message
    assert "\n" not in message


def test_missing_shard_listed_in_index(tmp_path):
    d = tmp_path / "ck"
    save_pretrained(tiny_model(), d, max_shard_bytes=16_000)
    next(d.glob("model-00002-of-*.safetensors")).unlink()
    with pytest.raises(CheckpointError, match=r"model-00002-of-\d+\.safetensors: missing"):
        from_pretrained(d)


def test_not_a_folder(tmp_path):
    with pytest.raises(CheckpointError, match="not a folder"):
        from_pretrained(tmp_path / "nope")


def test_load_model_reads_folder_and_tokenizer(tmp_path):
    from tokenizers import Tokenizer, models

    from unmask.model import load_model
    tok = Tokenizer(models.WordLevel({"a": 0, "b": 1, "[UNK]": 2}, unk_token="[UNK]"))
    tok.save(str(tmp_path / "tok.json"))
    save_pretrained(tiny_model(), tmp_path / "ck", tokenizer=tmp_path / "tok.json")
    loaded = load_model(tmp_path / "ck")
    assert loaded.tokenizer.token_to_id("b") == 1 and loaded.name == "ck"


def test_load_model_unknown_name(tmp_path):
    from unmask.errors import UnmaskError
    from unmask.model import load_model
    with pytest.raises(UnmaskError, match="no such model folder"):
        load_model(tmp_path / "missing")
