"""The `lines` task: predict one held-out line of real code, by infilling and by completion.

    unmask eval lines --model DIR --corpus data/corpus           # the corpus's validation split
    unmask eval lines --model DIR --source some/folder_or_file.py

Small models score zero on HumanEval; line-level exact match still separates them. From held-out files,
lines that hold code are drawn with a seed; each becomes three tasks with the same context:
- infill: the model sees up to 1,500 characters before the line and up to 600 after it (not told the
  line's length) and writes the middle, which must be the line and nothing more (so a model that does not
  end its middle, e.g. with end-of-text, fails);
- infill-line: the same, with the middle cut at its first newline (told that the gap is one line, still
  not its length): this separates writing the right line from knowing where the middle ends;
- completion: the model sees the same prefix only and writes until the end of the line.
A task passes when the stripped output equals the stripped line. The context is cut at line boundaries
and then shortened, whole lines at a time, until prefix + suffix + the generation budget fit the model's
context length, so no example asks a model about positions it never saw in training. With the same
tokenizer and context length (a model and its autoregressive twin), both models get identical examples.

With `gap_newline` (`--gap-newline`) the two infill modes hide the line's newline too (the suffix starts at
the next line; their modes are named infill+nl and infill-line+nl). A BPE tokenizer merges a line's last
characters with its newline (`,\n` and `):\n` are single tokens), so a suffix that starts with the newline
forces a split that tokenized training text never has; with the newline in the gap, the model can write the
line as it learnt it. The sampler does the same by itself for the standard layout (suffix healing, on by
default: sampling/infill.py), so both layouts now measure the line without the split; `--no-suffix-healing`
measures the split again.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from pathlib import Path

from ..errors import UnmaskError
from .tasks import Task

MAX_PREFIX_CHARS = 1500
MAX_SUFFIX_CHARS = 600
SOURCE_SUFFIXES = (".py",)
FIM_SPECIAL_TOKENS = 3  # prefix, suffix and middle markers of the fill-in-the-middle layout
MODES = ("infill", "infill-line", "completion")
NEWLINE_MODE_SUFFIX = "+nl"  # the infill modes' names when the gap includes the line's newline


def read_sources(path: str | Path) -> list[tuple[str, str]]:
    """(name, text) of a source file, or of every .py file under a folder (sorted, so the order is fixed)."""
    path = Path(path)
    if path.is_file():
        files = [path]
    elif path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.suffix in SOURCE_SUFFIXES and p.is_file())
    else:
        raise UnmaskError(f"--source {path}: no such file or folder")
    docs = []
    for f in files:
        try:
            docs.append((str(f), f.read_text(encoding="utf-8")))
        except (OSError, UnicodeDecodeError):
            continue  # binary or unreadable files are not code to predict
    if not docs:
        raise UnmaskError(f"--source {path}: no readable {'/'.join(SOURCE_SUFFIXES)} files")
    return docs


def read_corpus_split(corpus: str | Path, split: str = "val") -> list[tuple[str, str]]:
    """(path, text) of every file of a corpus split built by `unmask corpus build`."""
    from ..data.corpus import iter_corpus_records

    docs = [(r["path"], r["text"]) for r in iter_corpus_records(corpus, split)]
    if not docs:
        raise UnmaskError(f"{corpus}: the {split!r} split holds no files")
    return docs


def _code_lines(text: str) -> list[tuple[int, int]]:
    """(start, end) character offsets of each non-blank line, newline excluded."""
    out, pos = [], 0
    for line in text.splitlines(keepends=True):
        body = line.rstrip("\r\n")
        if body.strip():
            out.append((pos, pos + len(body)))
        pos += len(line)
    return out


def _context(text: str, start: int, end: int) -> tuple[list[str], list[str]]:
    """The lines before the gap (within MAX_PREFIX_CHARS) and after it (within MAX_SUFFIX_CHARS), whole lines."""
    before = text[max(0, start - MAX_PREFIX_CHARS):start]
    if start > MAX_PREFIX_CHARS:  # drop the partial first line
        before = before[before.find("\n") + 1:] if "\n" in before else ""
    after = text[end:end + MAX_SUFFIX_CHARS + 1]
    if end + MAX_SUFFIX_CHARS + 1 < len(text):  # drop the partial last line
        after = after[: after.rfind("\n") + 1] if "\n" in after else ""
    return before.splitlines(keepends=True), after.splitlines(keepends=True)


def _fit(prefix: list[str], suffix: list[str], count_tokens: Callable[[str], int], room: int) -> tuple[str, str]:
    """Drop whole lines (the prefix's first or the suffix's last, keeping their 1500:600 ratio) until both fit."""
    while True:
        p, s = "".join(prefix), "".join(suffix)
        np_, ns = count_tokens(p), count_tokens(s)
        if np_ + ns <= room:
            return p, s
        if prefix and (np_ * MAX_SUFFIX_CHARS >= ns * MAX_PREFIX_CHARS or len(suffix) <= 1):
            prefix = prefix[1:]
        elif len(suffix) > 1:  # the suffix keeps at least its first element: the newline ending the gap
            suffix = suffix[:-1]
        else:
            return p, s  # nothing left to drop; the model's context is smaller than one line


def build_line_tasks(docs: Iterable[tuple[str, str]], num_lines: int, *, seed: int,
                     count_tokens: Callable[[str], int], context_tokens: int, budget_tokens: int,
                     gap_newline: bool = False) -> list[Task]:
    """3 x num_lines tasks (infill, infill-line, completion) for lines drawn uniformly from the non-blank
    lines of `docs`; gap_newline: the infill gaps include the line's newline (see the module's docstring)."""
    docs = list(docs)
    per_doc = [_code_lines(text) for _, text in docs]
    total = sum(len(lines) for lines in per_doc)
    if total == 0:
        raise UnmaskError("the held-out files hold no non-blank lines")
    room = context_tokens - budget_tokens - FIM_SPECIAL_TOKENS
    if room <= 0:
        raise UnmaskError(f"the generation budget ({budget_tokens} tokens) leaves no room in the model's "
                          f"context of {context_tokens} tokens")
    # The first n of one seeded permutation: asking for more lines later keeps the ones drawn before.
    order = list(range(total))
    random.Random(seed).shuffle(order)
    picks = sorted(order[:num_lines])
    tasks, offset, d = [], 0, 0
    for pick in picks:
        while pick >= offset + len(per_doc[d]):
            offset += len(per_doc[d])
            d += 1
        name, text = docs[d]
        start, end = per_doc[d][pick - offset]
        line_number = text.count("\n", 0, start) + 1
        before, after = _context(text, start, end)
        # The gap is the line without its newline; the suffix starts with that newline (added at the
        # end of a file that lacks one, so an infill task always has a suffix).
        prefix, suffix = _fit(before, after or ["\n"], count_tokens, room)
        line = text[start:end]
        problem = f"{name}:{line_number}"
        tag, gap_suffix = (NEWLINE_MODE_SUFFIX, suffix[1:] or suffix) if gap_newline else ("", suffix)
        # (a file's last line keeps its newline as the suffix: an infill task always has one)
        tasks.append(Task(f"{problem}/infill{tag}", prefix, gap_suffix, "", "", line, problem, stop=()))
        tasks.append(Task(f"{problem}/infill-line{tag}", prefix, gap_suffix, "", "", line, problem, stop=("\n",)))
        tasks.append(Task(f"{problem}/completion", prefix, "", "", "", line, problem, stop=("\n",)))
    return tasks


def mode_of(task: Task) -> str:
    return task.task_id.rsplit("/", 1)[-1]
