"""Two processes (torchrun, gloo, CPU) with per-rank batch B train exactly like one process with batch 2B:
DDP, and FSDP2 with a distributed checkpoint that a second torchrun resumes from."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from byte_corpus import write_byte_shards
from unmask.train import load_config, train
from unmask.train.progress import read_log

ROOT = Path(__file__).resolve().parent.parent
TINY = ROOT / "configs" / "tiny-cpu.toml"
COMMON = ["data.window_len=64", "model.max_position_embeddings=64", "optim.warmup_steps=2", "optim.max_steps=8",
          "system.progress=false", "system.log_every=1", "eval.windows=8", "eval.bound_samples=2", "eval.every=4",
          "checkpoint.every=4", "system.threads=1"]


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return write_byte_shards(tmp_path_factory.mktemp("shards"))


def torchrun(*args: str) -> None:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "unmask.cli", "train", *args]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]


def sets(*pairs: str) -> list[str]:
    return [arg for pair in pairs for arg in ("--set", pair)]


def assert_same_run(one: Path, two: Path) -> None:
    a, b = read_log(one / "log.jsonl", "train"), read_log(two / "log.jsonl", "train")
    assert [r["step"] for r in a] == [r["step"] for r in b] == list(range(1, 9))
    for ra, rb in zip(a, b):
        assert rb["loss"] == pytest.approx(ra["loss"], rel=1e-5, abs=1e-6)
        assert rb["grad_norm"] == pytest.approx(ra["grad_norm"], rel=1e-4, abs=1e-6)
        assert rb["tokens"] == ra["tokens"]
    va, vb = read_log(one / "log.jsonl", "val"), read_log(two / "log.jsonl", "val")
    assert [r["step"] for r in va] == [r["step"] for r in vb] == [4, 8]
    for ra, rb in zip(va, vb):
        assert rb["val_loss"] == pytest.approx(ra["val_loss"], rel=1e-5)
        assert rb["val_nats_per_token"] == pytest.approx(ra["val_nats_per_token"], rel=1e-5)
    wa = load_file(str(one / "checkpoints" / "step-00000008" / "model.safetensors"))
    wb = load_file(str(two / "checkpoints" / "step-00000008" / "model.safetensors"))
    for name in wa:
        torch.testing.assert_close(wb[name], wa[name], rtol=1e-4, atol=1e-5)


def test_ddp_two_processes_equal_one_process_with_twice_the_batch(tmp_path, shards):
    settings = [f"data.shards={shards}", *COMMON, "data.grad_accum=2"]
    train(load_config(TINY, [*settings, "data.batch_size=8", f"out_dir={tmp_path / 'one'}"]))
    torchrun("--config", str(TINY), *sets(*settings, "data.batch_size=4", f"out_dir={tmp_path / 'two'}"))
    assert_same_run(tmp_path / "one", tmp_path / "two")
    assert (tmp_path / "two" / "checkpoints" / "step-00000008" / "rng_state_rank1.pt").is_file()


def test_fsdp_two_processes_resume_from_a_distributed_checkpoint(tmp_path, shards):
    settings = [f"data.shards={shards}", *COMMON, "objective=block", "model.block_size=8"]
    train(load_config(TINY, [*settings, "data.batch_size=8", f"out_dir={tmp_path / 'one'}"]))
    two = tmp_path / "two"
    torchrun("--config", str(TINY), *sets(*settings, "data.batch_size=4", f"out_dir={two}", "system.parallel=fsdp",
                                         "system.stop_at_step=4"))
    assert (two / "checkpoints" / "step-00000004" / "distributed" / ".metadata").is_file()
    assert not (two / "checkpoints" / "step-00000008").exists()
    torchrun("--resume", str(two))
    assert_same_run(tmp_path / "one", two)
