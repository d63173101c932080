"""Token shards and the window loader: round trip, ranks, determinism, resume."""

import json

import numpy as np
import pytest
import torch

from unmask.data.shards import ShardWriter, TokenShards, WindowLoader, token_dtype, write_index
from unmask.errors import UnmaskError


def make_shards(path, tokens, vocab_size=1000, shard_tokens=37):
    path.mkdir(parents=True, exist_ok=True)
    writer = ShardWriter(path, "train", vocab_size, shard_tokens=shard_tokens)
    writer.add(tokens[:50])
    writer.add(tokens[50:])
    write_index(path, vocab_size, eos_token_id=0, splits={"train": writer.close()})
    return TokenShards(path, "train")


def test_round_trip_across_shard_boundaries(tmp_path):
    tokens = np.arange(300) % 1000
    shards = make_shards(tmp_path, tokens)
    assert len(shards) == 300 and len(shards.arrays) == 9
    assert np.array_equal(shards.read(30, 100), tokens[30:130])
    assert shards.arrays[0].dtype == np.uint16


def test_dtype_grows_with_vocabulary():
    assert token_dtype(65536) == np.uint16 and token_dtype(65537) == np.uint32


def test_ranks_partition_the_single_process_batch(tmp_path):
    shards = make_shards(tmp_path, np.arange(1000) % 1000)
    single = WindowLoader(shards, 10, batch_size=4, seed=3)
    ranks = [WindowLoader(shards, 10, batch_size=2, rank=r, world_size=2, seed=3) for r in range(2)]
    for _ in range(30):  # crosses epoch boundaries (25 windows -> 6 steps per epoch)
        both = torch.cat([loader.next_batch() for loader in ranks])
        assert torch.equal(both, single.next_batch())


def test_seed_determinism_and_epoch_reshuffle(tmp_path):
    shards = make_shards(tmp_path, np.arange(1000) % 1000)
    a, b = WindowLoader(shards, 10, 4, seed=1), WindowLoader(shards, 10, 4, seed=1)
    first_epoch = [a.next_batch() for _ in range(a.steps_per_epoch)]
    assert all(torch.equal(x, b.next_batch()) for x in first_epoch)
    seen = torch.cat(first_epoch)[:, 0].tolist()
    assert len(set(seen)) == len(seen), "a window repeated within an epoch"
    assert not torch.equal(a.next_batch(), first_epoch[0])
    assert not torch.equal(WindowLoader(shards, 10, 4, seed=2).next_batch(), first_epoch[0])


def test_resume_mid_epoch(tmp_path):
    shards = make_shards(tmp_path, np.arange(1000) % 1000)
    ref = WindowLoader(shards, 10, 4, seed=5)
    expected = [ref.next_batch() for _ in range(9)]
    first = WindowLoader(shards, 10, 4, seed=5)
    for _ in range(4):
        first.next_batch()
    resumed = WindowLoader(shards, 10, 4, seed=5)
    resumed.load_state_dict(first.state_dict())
    for want in expected[4:]:
        assert torch.equal(resumed.next_batch(), want)


def test_resume_with_other_batch_refused(tmp_path):
    shards = make_shards(tmp_path, np.arange(1000) % 1000)
    state = WindowLoader(shards, 10, 4).state_dict()
    with pytest.raises(UnmaskError, match="global_batch"):
        WindowLoader(shards, 10, 8).load_state_dict(state)


def test_bad_folders(tmp_path):
    with pytest.raises(UnmaskError, match="index.json: missing"):
        TokenShards(tmp_path)
    shards = make_shards(tmp_path / "s", np.arange(100))
    with pytest.raises(UnmaskError, match="fewer than one global batch"):
        WindowLoader(shards, 50, 4)
    (tmp_path / "s" / "train-00001.bin").write_bytes(b"12")
    with pytest.raises(UnmaskError, match="train-00001.bin: missing or not"):
        TokenShards(tmp_path / "s")


def _folder(path, splits: dict, vocab_size=1000, **provenance):
    path.mkdir(parents=True)
    entries = {}
    for split, tokens in splits.items():
        writer = ShardWriter(path, split, vocab_size, shard_tokens=40)
        writer.add(tokens)
        entries[split] = writer.close()
    write_index(path, vocab_size, eos_token_id=0, splits=entries, **provenance)
    return path


def test_merge_joins_splits_in_order_and_keeps_provenance(tmp_path, capsys):
    from unmask.cli import main

    a = _folder(tmp_path / "a", {"train": np.arange(50), "val": np.arange(10)}, num_bytes={"train": 200, "val": 40},
                teacher={"seed": 0})
    b = _folder(tmp_path / "b", {"train": np.arange(100, 130)}, num_bytes={"train": 120}, teacher={"seed": 1})
    (a / "tokenizer.json").write_text("{}")
    out = tmp_path / "ab"
    assert main(["corpus", "merge", str(a), str(b), "--out", str(out)]) == 0
    assert "train 80 tokens, val 10 tokens" in capsys.readouterr().out
    train = TokenShards(out, "train")
    assert np.array_equal(train.read(0, 80), np.concatenate([np.arange(50), np.arange(100, 130)]))
    assert np.array_equal(TokenShards(out, "val").read(0, 10), np.arange(10))
    index = json.loads((out / "index.json").read_text())
    assert index["num_bytes"] == {"train": 320, "val": 40}
    assert [m["teacher"]["seed"] for m in index["merged_from"]] == [0, 1]
    assert (out / "tokenizer.json").read_text() == "{}"


def test_merge_refuses_folders_that_do_not_fit(tmp_path):
    from unmask.data.shards import merge_shard_folders

    a = _folder(tmp_path / "a", {"train": np.arange(50)})
    b = _folder(tmp_path / "b", {"train": np.arange(50)}, vocab_size=2000)
    with pytest.raises(UnmaskError, match="vocab_size"):
        merge_shard_folders([a, b], tmp_path / "out")
    with pytest.raises(UnmaskError, match="at least two"):
        merge_shard_folders([a], tmp_path / "out")
    c = _folder(tmp_path / "c", {"train": np.arange(50)})
    (a / "tokenizer.json").write_text("{}")
    (c / "tokenizer.json").write_text('{"other": 1}')
    with pytest.raises(UnmaskError, match="different tokenizer"):
        merge_shard_folders([a, c], tmp_path / "out")
    assert not (tmp_path / "out").exists()
