"""Training on a small real corpus (standard-library modules as bytes): each objective learns,
resume is bit-identical, signals save a checkpoint, AR-initialised adaptation, and bad input."""

import json
import math
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from byte_corpus import VOCAB_SIZE, write_byte_shards
from unmask.cli import main
from unmask.errors import ConfigError, UnmaskError
from unmask.model import from_pretrained
from unmask.train import load_config, train
from unmask.train.checkpointing import list_checkpoints
from unmask.train.config import nearest_key
from unmask.train.progress import read_log

ROOT = Path(__file__).resolve().parent.parent
TINY = ROOT / "configs" / "tiny-cpu.toml"
FAST = ["data.window_len=64", "data.batch_size=8", "model.max_position_embeddings=64", "optim.warmup_steps=5",
        "system.progress=false", "system.log_every=1", "eval.windows=8", "eval.bound_samples=2", "eval.every=0",
        "checkpoint.every=0", "system.threads=1"]  # one thread: far faster than two on a shared 2-core CPU


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return write_byte_shards(tmp_path_factory.mktemp("shards"))


def config_for(out_dir, shards, *extra):
    return load_config(TINY, [f"data.shards={shards}", f"out_dir={out_dir}", *FAST, *extra])


def weights(checkpoint):
    return load_file(str(Path(checkpoint) / "model.safetensors"))


def assert_same_weights(a, b):
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for name in wa:
        assert torch.equal(wa[name], wb[name]), name


# ---------------------------------------------------------------- configs


def test_every_shipped_config_loads():
    paths = sorted((ROOT / "configs").glob("*.toml"))
    assert TINY in paths and len(paths) >= 3
    for path in paths:
        load_config(path)


def test_gpu_twins_differ_only_in_objective():
    diffusion = load_config(ROOT / "configs" / "gpu-mdlm.toml").to_dict()
    twin = load_config(ROOT / "configs" / "gpu-ar.toml").to_dict()
    assert (diffusion["objective"], twin["objective"]) == ("mdlm", "ar")
    for key in ("model", "data", "optim", "seed"):
        if key == "model":
            assert {k: v for k, v in diffusion[key].items() if k not in ("attention", "shift_logits")} == \
                   {k: v for k, v in twin[key].items() if k not in ("attention", "shift_logits")}
        else:
            assert diffusion[key] == twin[key], key


def test_unknown_keys_name_the_nearest_valid_one(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text('objective = "mdlm"\n[data]\nshards = "x"\nbatchsize = 4\n')
    with pytest.raises(ConfigError, match=r"unknown key 'data.batchsize' \(did you mean 'data.batch_size'\?\)"):
        load_config(path)
    with pytest.raises(ConfigError, match=r"'lr'.*did you mean 'optim.lr'"):
        load_config(TINY, ["lr=1e-3"])
    with pytest.raises(ConfigError, match=r"model.hiden_size.*did you mean 'model.hidden_size'"):
        load_config(TINY, ["model.hiden_size=32"])
    assert nearest_key("checkpoint.evry") == "checkpoint.every"


def test_bad_values_are_named():
    with pytest.raises(ConfigError, match="optim.lr must be float"):
        load_config(TINY, ["optim.lr=fast"])
    with pytest.raises(ConfigError, match="objective must be one of"):
        load_config(TINY, ["objective=gan"])
    with pytest.raises(ConfigError, match="model.attention"):
        load_config(TINY, ["objective=ar", "model.attention=bidirectional"])
    with pytest.raises(ConfigError, match="model.block_size"):
        load_config(TINY, ["objective=block"])
    with pytest.raises(ConfigError, match="multiple of model.block_size"):
        load_config(TINY, ["objective=block", "model.block_size=7"])
    with pytest.raises(ConfigError, match="no such config file"):
        load_config("/nonexistent.toml")


def test_cli_reports_a_bad_key_on_one_line(capsys):
    assert main(["train", "--config", str(TINY), "--set", "optim.lrr=1"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "did you mean 'optim.lr'" in err


# ---------------------------------------------------------------- bad input at run time


def test_shard_vocabulary_must_match_the_model(tmp_path, shards):
    with pytest.raises(ConfigError, match=f"model.vocab_size 300 does not match the shards' vocabulary {VOCAB_SIZE}"):
        train(config_for(tmp_path / "run", shards, "model.vocab_size=300", "optim.max_steps=1"))
    assert not (tmp_path / "run").exists()


def test_a_missing_tokenizer_is_named(tmp_path, shards):
    with pytest.raises(ConfigError, match="data.tokenizer .*: no tokenizer.json there"):
        train(config_for(tmp_path / "run", shards, f"data.tokenizer={tmp_path / 'nothing'}", "optim.max_steps=1"))
    assert not (tmp_path / "run").exists()  # nothing written by a run that fails its checks


def test_resume_from_a_folder_that_is_not_a_checkpoint(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["train", "--resume", str(tmp_path / "empty")]) == 2
    assert "not a training checkpoint" in capsys.readouterr().err
    assert main(["train", "--resume", str(tmp_path / "missing")]) == 2
    assert "no such folder" in capsys.readouterr().err


def test_out_of_memory_names_what_to_lower_and_keeps_the_checkpoint(tmp_path, shards, monkeypatch):
    out = tmp_path / "run"
    train(config_for(out, shards, "optim.max_steps=4", "system.stop_at_step=2"))
    ckpt = list_checkpoints(out / "checkpoints")[-1][1]
    before = {p.name: p.read_bytes() for p in ckpt.iterdir()}

    def oom(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr("unmask.train.objectives.MaskedDiffusion.loss", oom)
    with pytest.raises(UnmaskError, match=r"out of memory .* lower data.batch_size"):
        train(config_for(out, shards, "optim.max_steps=4"), resume=ckpt)
    assert [p for _, p in list_checkpoints(out / "checkpoints")] == [ckpt]
    assert {p.name: p.read_bytes() for p in ckpt.iterdir()} == before


def test_a_fresh_run_never_overwrites_existing_checkpoints(tmp_path, shards):
    out = tmp_path / "run"
    train(config_for(out, shards, "optim.max_steps=2"))
    saved = weights(out / "checkpoints" / "step-00000002")
    with pytest.raises(UnmaskError, match="already holds checkpoints.*--resume"):
        train(config_for(out, shards, "optim.max_steps=2", "seed=1"))
    assert all(torch.equal(saved[k], v) for k, v in weights(out / "checkpoints" / "step-00000002").items())


# ---------------------------------------------------------------- learning


@pytest.mark.parametrize("objective,extra", [("mdlm", []), ("block", ["model.block_size=8"]), ("ar", [])])
def test_each_objective_learns_real_code(tmp_path, shards, objective, extra):
    out = tmp_path / objective
    result = train(config_for(out, shards, f"objective={objective}", "optim.max_steps=60", *extra))
    assert result.status == "finished" and result.exit_code == 0
    losses = [r["loss"] for r in read_log(out / "log.jsonl", "train")]
    assert len(losses) == 60
    first, last = losses[0], sum(losses[-10:]) / 10
    assert first > 4.5  # about ln(262) = 5.57 per token at initialisation
    assert last < 0.65 * first, (first, last)
    val = read_log(out / "log.jsonl", "val")[-1]
    assert val["val_metric"] == ("nll" if objective == "ar" else "nelbo")
    assert 0 < val["val_nats_per_token"] < first
    index = json.loads((shards / "index.json").read_text())
    tokens_per_byte = sum(e["num_tokens"] for e in index["splits"]["val"]) / index["num_bytes"]["val"]
    assert val["val_bits_per_byte"] == pytest.approx(val["val_nats_per_token"] * tokens_per_byte / math.log(2))
    model = from_pretrained(out / "model")
    assert model.config.attention == {"mdlm": "bidirectional", "block": "block_causal", "ar": "causal"}[objective]
    assert model.config.shift_logits == (objective == "ar")


def test_checkpoints_keep_the_newest_and_load(tmp_path, shards):
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel

    (tmp_path / "tok").mkdir()
    Tokenizer(WordLevel({"a": 0, "[UNK]": 1}, unk_token="[UNK]")).save(str(tmp_path / "tok" / "tokenizer.json"))
    out = tmp_path / "run"
    train(config_for(out, shards, "optim.max_steps=6", "checkpoint.every=2", "checkpoint.keep=2", "eval.every=3",
                     f"data.tokenizer={tmp_path / 'tok'}"))
    assert (out / "model" / "tokenizer.json").read_bytes() == (tmp_path / "tok" / "tokenizer.json").read_bytes()
    assert [step for step, _ in list_checkpoints(out / "checkpoints")] == [4, 6]
    assert not list((out / "checkpoints").glob(".*"))
    assert [r["step"] for r in read_log(out / "log.jsonl", "val")] == [3, 6]
    model = from_pretrained(out / "checkpoints" / "step-00000006")
    assert_same_weights(out / "model", out / "checkpoints" / "step-00000006")
    state = json.loads((out / "checkpoints" / "step-00000006" / "trainer_state.json").read_text())
    assert state["step"] == 6 and state["tokens_seen"] == 6 * 64 * 8
    assert state["config"]["model"]["vocab_size"] == model.config.vocab_size == VOCAB_SIZE


@pytest.mark.filterwarnings("ignore:system.dtype='bfloat16' on a CPU")
def test_bfloat16_autocast_runs_on_cpu(tmp_path, shards):
    out = tmp_path / "run"
    train(config_for(out, shards, "optim.max_steps=3", "system.dtype=bfloat16"))
    losses = [r["loss"] for r in read_log(out / "log.jsonl", "train")]
    assert len(losses) == 3 and all(0 < v < 10 for v in losses)


@pytest.mark.parametrize("capability, warns", [("AVX2", True), ("AVX512", False)])
def test_bfloat16_on_a_cpu_without_native_support_warns(tmp_path, shards, monkeypatch, capability, warns):
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: capability)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train(config_for(tmp_path / "run", shards, "optim.max_steps=1", "system.dtype=bfloat16"))
    slow = [w for w in caught if "emulated" in str(w.message)]
    assert bool(slow) == warns
    if warns:
        assert "AVX2" in str(slow[0].message) and "system.dtype='float32'" in str(slow[0].message)


# ---------------------------------------------------------------- resume


def test_resume_is_bit_identical_to_an_uninterrupted_run(tmp_path, shards):
    common = ["optim.max_steps=12", "data.grad_accum=2", "eval.every=6", "checkpoint.every=4"]
    full = train(config_for(tmp_path / "full", shards, *common))
    cut = train(config_for(tmp_path / "cut", shards, *common, "system.stop_at_step=5"))
    assert (cut.status, cut.step) == ("stopped", 5)
    assert main(["train", "--resume", str(tmp_path / "cut")]) == 0
    assert_same_weights(full.checkpoint, tmp_path / "cut" / "checkpoints" / "step-00000012")
    full_log = read_log(tmp_path / "full" / "log.jsonl", "train")
    cut_log = read_log(tmp_path / "cut" / "log.jsonl", "train")
    assert [r["loss"] for r in full_log] == [r["loss"] for r in cut_log]
    assert [r["step"] for r in cut_log] == list(range(1, 13))


def test_sigterm_saves_a_checkpoint_that_resumes_exactly(tmp_path, shards):
    common = ["optim.max_steps=100000", "checkpoint.every=3", "optim.warmup_steps=2"]
    out = tmp_path / "killed"
    sets = [arg for pair in zip(["--set"] * 99, ["data.shards=" + str(shards), f"out_dir={out}", *FAST, *common])
            for arg in pair]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    proc = subprocess.Popen([sys.executable, "-m", "unmask.cli", "train", "--config", str(TINY), *sets], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while not list_checkpoints(out / "checkpoints"):
            assert proc.poll() is None and time.time() < deadline, proc.stderr.read() if proc.poll() else "timeout"
            time.sleep(0.02)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "continue with: unmask train --resume" in err
    stopped = list_checkpoints(out / "checkpoints")[-1][0]
    assert stopped >= 3
    target = stopped + 3
    reference = train(config_for(tmp_path / "reference", shards, *common, f"system.stop_at_step={target}"))
    assert main(["train", "--resume", str(out), "--set", f"system.stop_at_step={target}"]) == 0
    assert_same_weights(reference.checkpoint, out / "checkpoints" / f"step-{target:08d}")


# ---------------------------------------------------------------- AR-initialised adaptation


@pytest.mark.parametrize("objective,extra", [("mdlm", []), ("block", ["model.block_size=8"])])
def test_diffusion_adapted_from_an_autoregressive_checkpoint(tmp_path, shards, objective, extra):
    ar = train(config_for(tmp_path / "ar", shards, "objective=ar", "optim.max_steps=6"))
    ar_state = json.loads((ar.checkpoint / "trainer_state.json").read_text())
    budget = 2 * ar_state["total_tokens"]
    out = tmp_path / "adapted"
    result = train(config_for(out, shards, f"objective={objective}", f"init_from={ar.checkpoint}",
                              f"optim.max_tokens={budget}", "optim.max_steps=0", *extra))
    state = json.loads((result.checkpoint / "trainer_state.json").read_text())
    assert result.step == 6 and state["total_tokens"] == budget and state["inherited_tokens"] == budget // 2
    assert state["loader"]["step"] == ar_state["loader"]["step"] + 6  # the data continues where AR stopped
    model = from_pretrained(out / "model")
    assert model.config.shift_logits and model.config.attention != "causal"
    start = read_log(out / "log.jsonl", "start")[0]
    assert start["init_from"] == str(ar.checkpoint)
    first_loss = read_log(out / "log.jsonl", "train")[0]["loss"]
    scratch = train(config_for(tmp_path / "scratch", shards, f"objective={objective}", "optim.max_steps=1",
                               "model.shift_logits=true", *extra))
    assert first_loss < read_log(scratch.out_dir / "log.jsonl", "train")[0]["loss"]  # AR weights help at once


def test_init_from_keeps_shapes(tmp_path, shards):
    ar = train(config_for(tmp_path / "ar", shards, "objective=ar", "optim.max_steps=1"))
    with pytest.raises(ConfigError, match="model.hidden_size 32 differs from init_from's 64"):
        train(config_for(tmp_path / "bad", shards, f"init_from={ar.checkpoint}", "model.hidden_size=32",
                         "optim.max_steps=1"))


def test_the_tokenizer_recorded_in_the_shards_index_is_copied(tmp_path, shards):
    """`unmask corpus tokenize` writes the tokenizer's folder into index.json, not the file beside it."""
    import shutil

    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel

    (tmp_path / "tok").mkdir()
    Tokenizer(WordLevel({"b": 0, "[UNK]": 1}, unk_token="[UNK]")).save(str(tmp_path / "tok" / "tokenizer.json"))
    copy = tmp_path / "shards"
    shutil.copytree(shards, copy)
    (copy / "tokenizer.json").unlink(missing_ok=True)
    index = json.loads((copy / "index.json").read_text())
    (copy / "index.json").write_text(json.dumps({**index, "tokenizer": str(tmp_path / "tok")}))
    out = tmp_path / "run"
    train(config_for(out, copy, "optim.max_steps=1"))
    assert (out / "model" / "tokenizer.json").read_bytes() == (tmp_path / "tok" / "tokenizer.json").read_bytes()
