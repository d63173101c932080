"""Streaming events: after each step, the refining draft, and separately the text that became final.

A client that shows committed text appends `Event.text` (never revised); a "watch it diffuse" view
redraws `Event.draft` (masked positions shown as a placeholder). Final text is held back while it
ends in an incomplete UTF-8 character or in the beginning of a stop string (or in white space, when the
answer may end at its Python block's end, which drops trailing blank lines), so the concatenation of
every `text` of a request is exactly its result's text.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from .stopping import partial_stop_length

MASK_PLACEHOLDER = "\u2591"  # light shade block
_REPLACEMENT = "\ufffd"  # what a decoder writes for an incomplete UTF-8 sequence


@dataclass
class Event:
    index: int  # the request's index in the list given to stream()
    step: int  # forward passes of its batch so far
    text: str  # text that became final since this request's previous event ("" if none)
    draft: str | None = None  # the whole current answer, masks as placeholders (when drafts are asked for)
    done: bool = False
    result: Any = None  # the request's Result on its last event


class FinalText:
    """Turns successive committed texts of one answer into never-revised increments."""

    def __init__(self, stops: tuple[str, ...] = (), hold_space: bool = False):
        self.stops, self.hold_space = stops, hold_space
        self.emitted = ""

    def update(self, text: str, final: bool = False) -> str:
        """The new text safe to emit, given the committed text so far (`final`: nothing more will come)."""
        if not final:
            stripped = text.rstrip(_REPLACEMENT)
            # Only hold back a trailing replacement character while more bytes could complete it.
            text = stripped if len(text) - len(stripped) <= 3 else text
            text = text[: len(text) - partial_stop_length(text, self.stops)]
            if self.hold_space:
                text = text.rstrip()
        if not text.startswith(self.emitted) or len(text) <= len(self.emitted):
            return ""
        delta = text[len(self.emitted):]
        self.emitted = text
        return delta


def render_draft(ids: list[int], masked: list[bool], decode: Callable[[list[int]], str],
                 placeholder: str = MASK_PLACEHOLDER) -> str:
    """The draft as text: runs of revealed tokens decoded, each masked position shown as `placeholder`."""
    parts: list[str] = []
    run: list[int] = []
    for token, is_masked in zip(ids, masked):
        if is_masked:
            if run:
                parts.append(decode(run))
                run = []
            parts.append(placeholder)
        else:
            run.append(token)
    if run:
        parts.append(decode(run))
    return "".join(parts)
