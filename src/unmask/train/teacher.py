"""A model's own answers as token shards: the data of self-distillation (objective "distill").

    lm = load_model("default")
    write_teacher_shards(lm.model, lm.tokenizer, "data/shards4k", "data/teacher", TeacherSpec(prompts=2048), config)

Prompts are windows of `prompt_len` tokens drawn (without replacement, from a seed) from a shard folder's
train and val splits; the teacher (usually the model to be distilled) answers each with exactly
`answer_len` tokens under the given sampler settings (no stop tokens, so every record has one length).
Each record, prompt then answer, is written as one window of prompt_len + answer_len tokens, so a run with
data.window_len = prompt_len + answer_len reads records back whole. The index records the spec, the
teacher, its sampler settings and the decode's own tokens per forward pass; the folder keeps the teacher's
tokenizer.json, so a run on it ships that tokenizer with its checkpoints.

Why: a masked-diffusion model decodes one token per step when it is unsure of every other position.
Trained on its own answers, with the answer's later positions masked as the semi-autoregressive sampler
masks them (objectives.SelfDistillation), it becomes confident where its own decode would agree, so a
confidence threshold reveals several tokens per step (dParallel's certainty forcing).
"""

from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..data.output import output_folder
from ..data.parallel import Progress
from ..data.shards import INDEX_FILE, ShardWriter, TokenShards, write_index
from ..errors import UnmaskError
from ..model.checkpoint import TOKENIZER_FILE

SPLIT_SEEDS = {"train": 0, "val": 1}


@dataclass
class TeacherSpec:
    prompts: int = 2048  # train records
    val_prompts: int = 64  # val records (validation during the distillation run)
    prompt_len: int = 64
    answer_len: int = 64
    batch_size: int = 16  # rows decoded together
    seed: int = 0

    def validate(self) -> None:
        for name in ("prompts", "prompt_len", "answer_len", "batch_size"):
            if getattr(self, name) < 1:
                raise UnmaskError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.val_prompts < 0:
            raise UnmaskError(f"val_prompts must be >= 0, got {self.val_prompts}")


def pick_windows(num_tokens: int, window_len: int, count: int, seed: int) -> np.ndarray:
    """`count` distinct window indices of a split, in a seeded random order."""
    available = num_tokens // window_len
    if count > available:
        raise UnmaskError(f"asked for {count} prompts of {window_len} tokens, but the split holds only {available}")
    return np.random.default_rng(seed).choice(available, size=count, replace=False)


def write_teacher_shards(model, tokenizer, shards_dir: str | os.PathLike, out: str | os.PathLike,
                         spec: TeacherSpec, config, *, teacher: str = "", progress: bool = True) -> dict[str, Any]:
    """Write the teacher's records for both splits to `out` (atomically); returns the index's provenance.

    tokenizer: the model's, or None (the index then records no byte counts); config: the SamplerConfig of
    the teacher's decode (the answer length and stops are set here: no stops, so every answer is full);
    teacher: its name or folder, for the record."""
    from ..sampling import Request, generate

    spec.validate()
    if model.config.attention == "causal":
        raise UnmaskError(f"{teacher or 'the teacher'}: an autoregressive model; self-distillation is for "
                          f"diffusion models")
    if spec.prompt_len + spec.answer_len > model.config.max_position_embeddings:
        raise UnmaskError(f"prompt_len + answer_len = {spec.prompt_len + spec.answer_len} tokens is over the "
                          f"model's context of {model.config.max_position_embeddings}")
    config = config.replace(max_new_tokens=spec.answer_len, stop_token_ids=(), stop=(), stop_at_block_end=False)
    sources = {split: TokenShards(shards_dir, split) for split in ("train", "val") if
               split == "train" or spec.val_prompts}
    vocab_size = model.config.vocab_size
    for split, shards in sources.items():
        if shards.vocab_size != vocab_size:
            raise UnmaskError(f"{shards_dir}: vocabulary of {shards.vocab_size}, the model's is {vocab_size}")
    counts = {"train": spec.prompts, "val": spec.val_prompts}
    picks = {split: pick_windows(len(shards), spec.prompt_len, counts[split], spec.seed * 2 + SPLIT_SEEDS[split])
             for split, shards in sources.items()}
    splits, num_bytes, tokens, forwards = {}, {}, 0, 0
    start = time.perf_counter()
    total = sum(len(p) for p in picks.values())
    with output_folder(out, INDEX_FILE) as tmp, Progress("teacher", unit="answer", total=total,
                                                         enabled=progress) as bar:
        for split, shards in sources.items():
            writer = ShardWriter(tmp, split, vocab_size)
            num_bytes[split] = 0
            for first in range(0, len(picks[split]), spec.batch_size):
                windows = picks[split][first : first + spec.batch_size]
                prompts = [shards.read(int(w) * spec.prompt_len, spec.prompt_len).tolist() for w in windows]
                requests = [Request(prompt_ids=p, add_bos=False) for p in prompts]
                results = generate(model, tokenizer, requests, config, max_batch_size=spec.batch_size)
                for prompt, result in zip(prompts, results):
                    assert len(result.token_ids) == spec.answer_len, "no stop tokens: every answer is full"
                    record = prompt + result.token_ids
                    writer.add(record)
                    if tokenizer is not None:
                        num_bytes[split] += len(tokenizer.decode(record, skip_special_tokens=False).encode())
                    tokens += len(result.token_ids)
                    forwards += result.stats.forward_passes
                bar.update(len(windows), tokens_per_forward=f"{tokens / max(forwards, 1):.2f}")
            splits[split] = writer.close()
        if tokenizer is not None:  # a run on these shards copies it into its checkpoints (train/loop.py)
            tokenizer.save(str(tmp / TOKENIZER_FILE))
        provenance = {
            **({"num_bytes": num_bytes} if tokenizer is not None else {}),
            "teacher": {"model": teacher, "shards": str(Path(shards_dir).resolve()),
                        "spec": dataclasses.asdict(spec), "sampler": config.to_dict(),
                        "answer_tokens": tokens, "forward_passes": forwards,
                        "tokens_per_forward": round(tokens / max(forwards, 1), 4),
                        "wall_time_s": round(time.perf_counter() - start, 1)},
        }
        write_index(tmp, vocab_size, model.config.eos_token_id if model.config.eos_token_id is not None else 0,
                    splits, **provenance)
    return provenance

