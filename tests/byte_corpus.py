"""Token shards of real code for training tests, without a trained tokenizer.

A handful of standard-library modules, encoded as UTF-8 bytes shifted by 6 (ids 6..261, so the
special tokens 0-5 stay free; vocabulary 262), joined by the end-of-text token.
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import numpy as np

from unmask.data.shards import ShardWriter, write_index
from unmask.data.special_tokens import ENDOFTEXT_ID

VOCAB_SIZE = 262
OFFSET = 6
TRAIN_MODULES = ["textwrap", "string", "fnmatch", "bisect", "heapq", "shlex", "colorsys", "copy", "glob",
                 "keyword", "graphlib", "numbers"]
VAL_MODULES = ["stat", "sched"]


def encode(text: str) -> np.ndarray:
    return np.frombuffer(text.encode("utf-8"), dtype=np.uint8).astype(np.int64) + OFFSET


def write_byte_shards(directory, *, train_modules=TRAIN_MODULES, val_modules=VAL_MODULES, num_bytes=True,
                      vocab_size=VOCAB_SIZE, shard_tokens=40_000) -> Path:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    splits, byte_counts = {}, {}
    for split, names in (("train", train_modules), ("val", val_modules)):
        writer = ShardWriter(directory, split, vocab_size, shard_tokens=shard_tokens)
        count = 0
        for name in names:
            text = inspect.getsource(__import__(name))
            writer.add(encode(text))
            writer.add([ENDOFTEXT_ID])
            count += len(text.encode("utf-8"))
        splits[split] = writer.close()
        byte_counts[split] = count
    extra = {"num_bytes": byte_counts} if num_bytes else {}
    write_index(directory, vocab_size, ENDOFTEXT_ID, splits, **extra)
    return directory


if __name__ == "__main__":
    import sys

    path = write_byte_shards(sys.argv[1])
    print(json.dumps(json.loads((path / "index.json").read_text())["num_bytes"]))
