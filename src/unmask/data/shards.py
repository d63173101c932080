"""Token shards: flat uint16/uint32 files plus a JSON index, and the loader that reads them.

A shard folder holds
    index.json            {"format": "unmask-shards-v1", "dtype": "uint16", "vocab_size": V,
                           "eos_token_id": E, "splits": {"train": [{"file", "num_tokens"}...], "val": [...]},
                           ...any provenance the writer adds (tokenizer hash, corpus path)}
    train-00000.bin ...   raw little-endian token ids, documents joined by the end-of-text token
Files are read back with np.memmap, so a corpus larger than RAM trains fine (nanoGPT's layout).

WindowLoader cuts a split into non-overlapping windows of `window_len` tokens, shuffles them per
epoch from (seed, epoch), and deals each global batch of `batch_size * world_size` windows out to the
ranks in order, so rank r of a W-process run sees exactly the rows [r*B, (r+1)*B) of what a
1-process run with batch W*B sees. Its position (epoch, step) is its whole state: saving it in a
checkpoint and loading it back resumes mid-epoch on the very next batch.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from ..errors import UnmaskError

INDEX_FILE = "index.json"
FORMAT = "unmask-shards-v1"


def token_dtype(vocab_size: int) -> np.dtype:
    """uint16 when every id fits, else uint32."""
    return np.dtype(np.uint16) if vocab_size <= 2**16 else np.dtype(np.uint32)


class ShardWriter:
    """Append token arrays to `<split>-NNNNN.bin` files of at most `shard_tokens` tokens each."""

    def __init__(self, directory: str | os.PathLike, split: str, vocab_size: int, shard_tokens: int = 50_000_000):
        self.directory = Path(directory)
        self.split = split
        self.dtype = token_dtype(vocab_size)
        self.vocab_size = vocab_size
        self.shard_tokens = shard_tokens
        self.entries: list[dict[str, Any]] = []
        self._file = None
        self._count = 0

    def _open_next(self) -> None:
        self._close_current()
        name = f"{self.split}-{len(self.entries):05d}.bin"
        self._file = open(self.directory / name, "wb")
        self.entries.append({"file": name, "num_tokens": 0})
        self._count = 0

    def _close_current(self) -> None:
        if self._file is not None:
            self._file.close()
            self.entries[-1]["num_tokens"] = self._count
            self._file = None

    def add(self, tokens: np.ndarray | list[int]) -> None:
        arr = np.asarray(tokens)
        if arr.size and (arr.min() < 0 or arr.max() >= self.vocab_size):
            raise ValueError(f"token id outside [0, {self.vocab_size})")
        arr = arr.astype(self.dtype, copy=False)
        while arr.size:
            if self._file is None or self._count >= self.shard_tokens:
                self._open_next()
            take = min(arr.size, self.shard_tokens - self._count)
            self._file.write(arr[:take].tobytes())
            self._count += take
            arr = arr[take:]

    def close(self) -> list[dict[str, Any]]:
        self._close_current()
        return self.entries

    @property
    def num_tokens(self) -> int:
        return sum(e["num_tokens"] for e in self.entries[:-1]) + (self._count if self.entries else 0)


def write_index(directory: str | os.PathLike, vocab_size: int, eos_token_id: int,
                splits: dict[str, list[dict[str, Any]]], **provenance: Any) -> None:
    index = {"format": FORMAT, "dtype": token_dtype(vocab_size).name, "vocab_size": vocab_size,
             "eos_token_id": eos_token_id, "splits": splits, **provenance}
    Path(directory, INDEX_FILE).write_text(json.dumps(index, indent=2) + "\n")


def read_index(directory: str | os.PathLike) -> dict[str, Any]:
    path = Path(directory) / INDEX_FILE
    if not path.is_file():
        raise UnmaskError(f"{path}: missing (not a token shard folder; make one with 'unmask corpus tokenize')")
    try:
        index = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise UnmaskError(f"{path}: not valid JSON ({e})") from None
    if index.get("format") != FORMAT:
        raise UnmaskError(f"{path}: unknown shard format {index.get('format')!r}, expected {FORMAT!r}")
    return index


def merge_shard_folders(inputs: list[str | os.PathLike], out: str | os.PathLike) -> dict[str, Any]:
    """Write one shard folder holding every split of `inputs` in order (e.g. two `unmask teacher` runs);
    returns its index. The inputs must agree on dtype, vocabulary and end-of-text id, and on their tokenizer
    where they record one. Files are hard-linked when the file system allows it, else copied."""
    import shutil

    from .output import output_folder

    if len(inputs) < 2:
        raise UnmaskError("merging needs at least two shard folders")
    indexes = [read_index(d) for d in inputs]
    first = indexes[0]
    for d, index in zip(inputs, indexes):
        for key in ("dtype", "vocab_size", "eos_token_id"):
            if index.get(key) != first.get(key):
                raise UnmaskError(f"{d}: {key} {index.get(key)!r} differs from {inputs[0]}'s {first.get(key)!r}")
    tokenizers = [Path(d) / "tokenizer.json" for d in inputs if (Path(d) / "tokenizer.json").is_file()]
    if len({t.read_bytes() for t in tokenizers}) > 1:
        raise UnmaskError("the shard folders hold different tokenizer.json files")
    hashes = {i["tokenizer_sha256"] for i in indexes if i.get("tokenizer_sha256")}
    if len(hashes) > 1:
        raise UnmaskError("the shard folders were tokenized with different tokenizers (tokenizer_sha256)")
    with output_folder(out, INDEX_FILE) as tmp:
        splits: dict[str, list[dict[str, Any]]] = {}
        num_bytes: dict[str, int] = {}
        for d, index in zip(inputs, indexes):
            for split, entries in index["splits"].items():
                for entry in entries:
                    name = f"{split}-{len(splits.setdefault(split, [])):05d}.bin"
                    try:
                        os.link(Path(d) / entry["file"], tmp / name)
                    except OSError:
                        shutil.copyfile(Path(d) / entry["file"], tmp / name)
                    splits[split].append({"file": name, "num_tokens": entry["num_tokens"]})
                if split in (index.get("num_bytes") or {}):
                    num_bytes[split] = num_bytes.get(split, 0) + int(index["num_bytes"][split])
        if any(split not in (i.get("num_bytes") or {}) for i in indexes for split in i["splits"]):
            num_bytes = {}  # bits per byte needs every part's byte count
        if tokenizers:
            shutil.copyfile(tokenizers[0], tmp / "tokenizer.json")
        provenance: dict[str, Any] = {"merged_from": [
            {"path": str(Path(d).resolve()), **{k: v for k, v in i.items() if k not in ("format", "splits")}}
            for d, i in zip(inputs, indexes)]}
        if num_bytes:
            provenance["num_bytes"] = num_bytes
        if hashes:
            provenance["tokenizer_sha256"] = hashes.pop()
        write_index(tmp, int(first["vocab_size"]), int(first["eos_token_id"]), splits, **provenance)
    return read_index(out)


class TokenShards:
    """One split of a shard folder as a single virtual array of token ids (memory-mapped)."""

    def __init__(self, directory: str | os.PathLike, split: str = "train"):
        self.directory = Path(directory)
        self.index = read_index(directory)
        if split not in self.index["splits"]:
            raise UnmaskError(f"{self.directory}: no split {split!r} (have {sorted(self.index['splits'])})")
        dtype = np.dtype(self.index["dtype"])
        self.vocab_size = int(self.index["vocab_size"])
        self.eos_token_id = int(self.index["eos_token_id"])
        self.arrays = []
        for entry in self.index["splits"][split]:
            path = self.directory / entry["file"]
            expected = entry["num_tokens"] * dtype.itemsize
            if not path.is_file() or path.stat().st_size != expected:
                raise UnmaskError(f"{path}: missing or not {expected} bytes as {INDEX_FILE} says")
            if entry["num_tokens"]:
                self.arrays.append(np.memmap(path, dtype=dtype, mode="r"))
        self.offsets = np.cumsum([0] + [len(a) for a in self.arrays])

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def read(self, start: int, length: int) -> np.ndarray:
        """Tokens [start, start + length) as int64, crossing shard boundaries as needed."""
        out = np.empty(length, dtype=np.int64)
        filled = 0
        i = int(np.searchsorted(self.offsets, start, side="right") - 1)
        pos = start - int(self.offsets[i])
        while filled < length:
            chunk = self.arrays[i][pos : pos + length - filled]
            out[filled : filled + len(chunk)] = chunk
            filled += len(chunk)
            i, pos = i + 1, 0
        return out


@dataclass
class LoaderState:
    epoch: int = 0
    step: int = 0  # global batches already served in this epoch


class WindowLoader:
    """Deterministic, resumable, rank-aware batches of fixed-length windows: LongTensor [B, window_len]."""

    def __init__(self, shards: TokenShards, window_len: int, batch_size: int, *, rank: int = 0,
                 world_size: int = 1, seed: int = 0):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world size {world_size}")
        self.shards, self.window_len, self.batch_size = shards, window_len, batch_size
        self.rank, self.world_size, self.seed = rank, world_size, seed
        self.num_windows = len(shards) // window_len
        self.global_batch = batch_size * world_size
        self.steps_per_epoch = self.num_windows // self.global_batch
        if self.steps_per_epoch == 0:
            raise UnmaskError(f"{shards.directory}: {len(shards)} tokens make {self.num_windows} windows of "
                              f"{window_len}, fewer than one global batch of {self.global_batch}")
        self.state = LoaderState()
        self._order_epoch = -1
        self._order = None

    def _epoch_order(self, epoch: int) -> np.ndarray:
        if epoch != self._order_epoch:
            rng = np.random.default_rng([self.seed, epoch])
            self._order = rng.permutation(self.num_windows)
            self._order_epoch = epoch
        return self._order

    def next_batch(self) -> torch.Tensor:
        if self.state.step >= self.steps_per_epoch:
            self.state = LoaderState(self.state.epoch + 1, 0)
        order = self._epoch_order(self.state.epoch)
        first = self.state.step * self.global_batch + self.rank * self.batch_size
        windows = order[first : first + self.batch_size]
        rows = [self.shards.read(int(w) * self.window_len, self.window_len) for w in windows]
        self.state.step += 1
        return torch.from_numpy(np.stack(rows))

    def __iter__(self) -> Iterator[torch.Tensor]:
        while True:
            yield self.next_batch()

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.state.epoch, "step": self.state.step, "seed": self.seed,
                "window_len": self.window_len, "global_batch": self.global_batch}

    def load_state_dict(self, state: dict[str, int]) -> None:
        for key in ("seed", "window_len", "global_batch"):
            if key in state and state[key] != getattr(self, key):
                raise UnmaskError(f"cannot resume the data position: saved {key}={state[key]}, "
                                  f"now {getattr(self, key)}")
        self.state = LoaderState(int(state["epoch"]), int(state["step"]))
