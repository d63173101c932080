"""Where an answer ends: stop tokens (end-of-text and the like), stop strings, the end of the prompt's Python
block, the token budget (host-side, on final text only).

A diffusion answer becomes final from left to right only in its committed prefix (the tokens before
the first still-masked position), so stop strings are searched there: a stop string seen in a draft
could still be separated by tokens revealed later. The answer text excludes the end-of-text token
and the stop string itself (as OpenAI's API does).

The block rule (SamplerConfig.stop_at_block_end, `unmask generate`'s default) ends a completion where the
indented Python block that the prompt opens ('def fibonacci(n):') or is inside ends: before the first
logical line indented no deeper than the block's header, as an editor's "complete this function" does.
A model trained on whole files would otherwise go on to write the next function and be cut mid-statement
by the token budget. The answer then ends after the block's last line, trailing blank lines dropped.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable


def cut_at(ids: list[int], stop_ids: Iterable[int]) -> tuple[list[int], bool]:
    """(ids before the first of `stop_ids`, whether one occurred)."""
    stops = set(stop_ids)
    for i, t in enumerate(ids):
        if t in stops:
            return ids[:i], True
    return ids, False


def find_stop(text: str, stops: tuple[str, ...], start: int = 0) -> int | None:
    """Index in `text` of the earliest stop string beginning at or after `start`, or None."""
    hits = [i for i in (text.find(s, start) for s in stops) if i >= 0]
    return min(hits) if hits else None


def partial_stop_length(text: str, stops: tuple[str, ...]) -> int:
    """Length of the longest suffix of `text` that is a proper prefix of a stop string (text to hold back)."""
    best = 0
    for s in stops:
        for n in range(min(len(s) - 1, len(text)), best, -1):
            if text.endswith(s[:n]):
                best = n
                break
    return best


def tokens_covering(ids: list[int], decode: Callable[[list[int]], str], num_chars: int) -> int:
    """The fewest leading tokens of `ids` whose decoded text has at least `num_chars` characters."""
    lo, hi = 0, len(ids)
    while lo < hi:
        mid = (lo + hi) // 2
        if len(decode(ids[:mid])) >= num_chars:
            hi = mid
        else:
            lo = mid + 1
    return lo


@dataclass
class _Line:
    """One logical line of Python source (a statement's first physical line and any it continues onto)."""

    start: int  # offset of its physical line's first character (where its indentation begins)
    indent: int  # column of its first non-blank character (a tab advances to the next multiple of 8)
    head: str  # its first physical line, from that character on (so far, if the text ends on it)
    head_done: bool  # the text goes on past the end of that physical line
    last: str = ""  # its last character outside strings and comments so far


def python_lines(text: str) -> tuple[list[_Line], bool]:
    """The logical lines of `text`, read as (possibly unfinished) Python source, and whether it ends outside
    any string or bracket. Blank and comment-only lines are not logical lines; a line whose indentation is
    all that has arrived is not one yet. A light scanner, not a parser: it follows strings (single, triple,
    escapes), brackets, comments and backslash continuations, which is all that indentation depends on."""
    state: list[bool] = []
    lines = list(_scan_lines(text, state))
    return lines, state[0]


def _scan_lines(text: str, complete: list[bool]):
    """python_lines as a generator (a line is yielded when its first character arrives; `last` fills in
    later), so a caller may stop at the line it looks for; at the end, appends the completeness to
    `complete`."""
    line: _Line | None = None
    depth, quote, at_start, i, n = 0, "", True, 0, len(text)
    while i < n:
        c = text[i]
        if quote:
            if c == "\\":
                i += 2
            elif text.startswith(quote, i):
                i += len(quote)
                quote, line.last = "", c
            else:
                if c == "\n" and len(quote) == 1:
                    quote = ""  # an unterminated one-line string ends with its line (a syntax error anyway)
                i += 1
            continue
        if at_start:
            j, col = i, 0
            while j < n and text[j] in " \t\f\r":
                col = (col // 8 + 1) * 8 if text[j] == "\t" else 0 if text[j] == "\f" else col + 1
                j += 1
            if j == n:
                break  # indentation only, so far
            if text[j] in "\n#":  # a blank or comment-only line
                end = text.find("\n", j)
                if end < 0:
                    break
                i = end + 1
                continue
            end = text.find("\n", j)
            line = _Line(i, col, text[j:] if end < 0 else text[j:end], end >= 0)
            yield line
            at_start, i = False, j
            continue
        if c == "#":
            end = text.find("\n", i)
            i = n if end < 0 else end
            continue
        if c == "\\" and text.startswith("\n", i + 1):
            i += 2  # an explicit line continuation
            continue
        if c in "'\"":
            quote = c * 3 if text.startswith(c * 3, i) else c
            i += len(quote)
            continue
        if c == "\n":
            at_start = depth == 0
        elif c in "([{":
            depth += 1
        elif c in ")]}":
            depth = max(0, depth - 1)
        if not c.isspace():
            line.last = c
        i += 1
    complete.append(not quote and depth == 0)


# Lines at the header's own indentation that go on with its compound statement rather than end it ('try:'
# alone does not parse without its 'except'; an 'if' may go on with 'else').
_CONTINUATIONS = ("else", "elif", "except", "finally")


@dataclass(frozen=True)
class BlockScope:
    """The indented block a completion stays inside (see the module docstring)."""

    lead: str  # the prompt from its last logical line's start: enough context to read the answer's lines
    indent: int  # the block header's indentation: an answer line indented no deeper ends the block
    needs_body: bool  # the prompt opens the block: it ends only after the answer has put a line in it

    @classmethod
    def of_prompt(cls, prompt: str) -> "BlockScope | None":
        """The block the prompt opens or is inside; None at top level (the answer may run to the end)."""
        lines, complete = python_lines(prompt)
        if not lines:
            return None
        last = lines[-1]
        if complete and last.last == ":":
            return cls(prompt[last.start:], last.indent, True)
        if last.indent == 0:
            return None
        header = next((line for line in reversed(lines[:-1]) if line.indent < last.indent), None)
        # A snippet that starts indented has no header in sight: any line indented less ends its block.
        return cls(prompt[last.start:], header.indent if header else last.indent - 1, False)

    def end(self, answer: str) -> int | None:
        """Length of the answer up to the end of the block (trailing blank lines dropped), or None while
        the block is still open."""
        lines = _scan_lines(self.lead + answer, [])
        next(lines, None)  # the prompt's last line
        body = not self.needs_body
        for line in lines:
            if line.indent > self.indent:
                body = True
            elif body:
                verdict = _continues(line) if line.indent == self.indent else False
                if verdict is None:
                    return None  # 'el' may still become 'elif'
                if not verdict:
                    return len(answer[: max(0, line.start - len(self.lead))].rstrip())
        return None


def _continues(line: _Line) -> bool | None:
    """Whether the line goes on with the statement before it ('else:', 'except ValueError:'); None while
    the text so far ends inside a word that could still be one of those keywords."""
    word = line.head[: next((k for k, ch in enumerate(line.head) if not (ch.isalnum() or ch == "_")), len(line.head))]
    if not line.head_done and word == line.head and any(w.startswith(word) for w in _CONTINUATIONS):
        return None
    return word in _CONTINUATIONS


@dataclass
class StopScan:
    """Incremental search for where an answer ends, over a growing committed text: the earliest stop string,
    or the end of the prompt's block (`block`)."""

    stops: tuple[str, ...]
    block: BlockScope | None = None
    scanned: int = 0  # characters of text already known to hold no stop string start

    def scan(self, text: str) -> int | None:
        hits = []
        if self.stops:
            hit = find_stop(text, self.stops, max(0, self.scanned))
            if hit is None:
                # A stop string may begin in the last len(s) - 1 characters and end in text not yet final.
                self.scanned = max(self.scanned, len(text) - max(len(s) for s in self.stops) + 1)
            else:
                hits.append(hit)
        if self.block is not None:
            end = self.block.end(text)
            if end is not None:
                hits.append(end)
        return min(hits) if hits else None
