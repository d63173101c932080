"""The canvas of a diffusion batch: every request's prompt, masked answer and suffix on one grid of columns.

Shape legend: B batch rows, W columns.

Row r holds [left padding | prompt | answer (masks) | suffix | right padding]. Rotary positions
count only a row's own tokens (position = column - left padding), so padding changes nothing a
row computes: a request decodes the same tokens whatever else is in its batch.

Blocks are a grid of columns [g + k*L, g + (k+1)*L) shared by all rows, chosen so that each row's
blocks are the ones it would have alone:
- bidirectional models: a row's first block starts where its answer starts (LLaDA, Fast-dLLM), so
  the left padding aligns every answer start at column g;
- block_causal models: blocks must coincide with the model's attention blocks (position // block_size),
  so a row's first block starts at the last multiple of block_size inside its prompt, and holds the
  prompt's tail before the first masks (SDAR, Fast-dLLM v2).
Each row's answer ends at its own max_new_tokens; columns past it are right padding (never attended),
so a row's answer length, not the longest in the batch, is what it sees.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class RowLayout:
    offset: int  # left padding columns
    prompt_len: int
    answer_len: int
    suffix_len: int = 0
    first_allowed: torch.Tensor | None = None  # bool [V]: the tokens the answer's first column may take (healing.py)

    @property
    def answer_start(self) -> int:
        return self.offset + self.prompt_len

    @property
    def answer_end(self) -> int:
        return self.answer_start + self.answer_len

    @property
    def end(self) -> int:
        return self.answer_end + self.suffix_len


@dataclass
class Canvas:
    tokens: torch.Tensor  # long [B, W]
    valid: torch.Tensor  # bool [B, W]; False on padding
    positions: torch.Tensor  # long [B, W]; rotary positions
    answer: torch.Tensor  # bool [B, W]; the columns a row may reveal
    masked: torch.Tensor  # bool [B, W]; answer columns not yet revealed
    rows: list[RowLayout]
    grid_start: int
    grid_end: int
    block_length: int
    pad_id: int

    @property
    def width(self) -> int:
        return self.tokens.shape[1]

    def blocks(self) -> list[tuple[int, int]]:
        edges = list(range(self.grid_start, self.grid_end, self.block_length))
        return [(s, min(s + self.block_length, self.grid_end)) for s in edges]

    def padded(self, left: int, width: int) -> "Canvas":
        """This canvas with `left` padding columns prepended and right padding up to `width` columns."""
        B, W = self.tokens.shape
        right = width - W - left
        assert left >= 0 and right >= 0

        def pad(t: torch.Tensor, value) -> torch.Tensor:
            return torch.cat([t.new_full((B, left), value), t, t.new_full((B, right), value)], dim=1)

        rows = [RowLayout(r.offset + left, r.prompt_len, r.answer_len, r.suffix_len, r.first_allowed)
                for r in self.rows]
        return Canvas(pad(self.tokens, self.pad_id), pad(self.valid, False), pad(self.positions, 0),
                      pad(self.answer, False), pad(self.masked, False), rows, self.grid_start + left,
                      self.grid_end + left, self.block_length, self.pad_id)

    @staticmethod
    def concat(parts: list["Canvas"], grid_start: int) -> "Canvas":
        """Rows of canvases of one width whose block grids coincide from `grid_start` on."""
        assert len({p.width for p in parts}) == 1 and len({p.block_length for p in parts}) == 1
        assert all((grid_start - p.grid_start) % p.block_length == 0 for p in parts)
        names = ["tokens", "valid", "positions", "answer", "masked"]
        return Canvas(*[torch.cat([getattr(p, n) for p in parts]) for n in names],
                      [r for p in parts for r in p.rows], grid_start, max(p.grid_end for p in parts),
                      parts[0].block_length, parts[0].pad_id)

    def select_rows(self, index: list[int]) -> "Canvas":
        idx = torch.tensor(index, dtype=torch.long, device=self.tokens.device)
        return Canvas(self.tokens[idx], self.valid[idx], self.positions[idx], self.answer[idx], self.masked[idx],
                      [self.rows[i] for i in index], self.grid_start, self.grid_end, self.block_length, self.pad_id)


def build_canvas(prompts: list[list[int]], answer_lengths: list[int], suffixes: list[list[int]] | None = None, *,
                 mask_id: int, pad_id: int, block_length: int | None, align: int | None = None,
                 device: torch.device | str = "cpu", first_allowed: list[torch.Tensor | None] | None = None) -> Canvas:
    """Lay out a batch. `align`: the model's block_size for block_causal models (blocks then follow it).
    `first_allowed`: per row, None or the bool [V] mask of tokens its answer's first column may take.

    block_length None decodes each answer as one block (the grid's only block spans every answer).
    """
    suffixes = suffixes or [[] for _ in prompts]
    assert len(prompts) == len(answer_lengths) == len(suffixes)
    if align is not None:
        block_length = align
        anchors = [len(p) - len(p) % align for p in prompts]
    else:
        anchors = [len(p) for p in prompts]
    g = max(anchors)
    first_allowed = first_allowed or [None] * len(prompts)
    rows = [RowLayout(g - a, len(p), m, len(s), f)
            for p, a, m, s, f in zip(prompts, anchors, answer_lengths, suffixes, first_allowed)]
    grid_end = max(r.answer_end for r in rows)
    if block_length is None:
        block_length = max(grid_end - g, 1)
    width = max(r.end for r in rows)
    B = len(rows)
    tokens = torch.full((B, width), pad_id, dtype=torch.long)
    valid = torch.zeros(B, width, dtype=torch.bool)
    answer = torch.zeros(B, width, dtype=torch.bool)
    positions = torch.zeros(B, width, dtype=torch.long)
    for i, (r, p, s) in enumerate(zip(rows, prompts, suffixes)):
        tokens[i, r.offset:r.answer_start] = torch.tensor(p, dtype=torch.long)
        tokens[i, r.answer_start:r.answer_end] = mask_id
        if s:
            tokens[i, r.answer_end:r.end] = torch.tensor(s, dtype=torch.long)
        valid[i, r.offset:r.end] = True
        answer[i, r.answer_start:r.answer_end] = True
        positions[i, r.offset:r.end] = torch.arange(r.end - r.offset)
    return Canvas(tokens.to(device), valid.to(device), positions.to(device), answer.to(device),
                  answer.clone().to(device), rows, g, grid_end, block_length, pad_id)
