"""Block diffusion (BD3-LM): the noisy + clean layout, its attention mask, and its logits.

Shape legend: B batch, L tokens per window, V vocabulary, S block size, 2L the doubled input.

A window of L tokens is cut into blocks of S tokens; each block b gets its own time t_b and is
noised independently. The model is fed the 2L tokens [x_t ; x_0] with position ids
[0..L-1, 0..L-1] and an explicit attention mask, so one forward pass trains every block at once
under exactly the conditioning a block-by-block sampler with an exact key/value cache sees:
noisy block b attends to itself and to the *clean* blocks before it.

Index q (query) and k (key) run over [0, 2L); a half is "noisy" for indices < L and "clean"
otherwise; block(i) = (i mod L) // S. The mask is the union of three predicates:

    block_diagonal(q, k)      = half(q) == half(k) and block(q) == block(k)
    offset_block_causal(q, k) = q noisy and k clean and block(k) <  block(q)
    block_causal(q, k)        = q clean and k clean and block(k) <= block(q)

The clean half is then exactly a `block_causal` forward of x_0 (it supplies the cache), and the
noisy half of block b equals a `block_causal` forward of [x_0 blocks < b ; x_t block b].
"""

from __future__ import annotations

import torch


def _halves_and_blocks(length: int, block_size: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    idx = torch.arange(2 * length, device=device)
    return idx < length, (idx % length) // block_size


def block_diagonal(length: int, block_size: int, device=None) -> torch.Tensor:
    """Bool [2L, 2L]: same half and same block (bidirectional inside a block)."""
    noisy, block = _halves_and_blocks(length, block_size, device)
    return (noisy[:, None] == noisy[None, :]) & (block[:, None] == block[None, :])


def offset_block_causal(length: int, block_size: int, device=None) -> torch.Tensor:
    """Bool [2L, 2L]: a noisy query sees the clean copy of every earlier block."""
    noisy, block = _halves_and_blocks(length, block_size, device)
    return noisy[:, None] & ~noisy[None, :] & (block[None, :] < block[:, None])


def block_causal(length: int, block_size: int, device=None) -> torch.Tensor:
    """Bool [2L, 2L]: a clean query sees the clean copy of its own block and every earlier one."""
    noisy, block = _halves_and_blocks(length, block_size, device)
    return ~noisy[:, None] & ~noisy[None, :] & (block[None, :] <= block[:, None])


def block_diffusion_mask(length: int, block_size: int, device=None) -> torch.Tensor:
    """Bool [2L, 2L] "query may attend key": the union of the three predicates above."""
    if length % block_size:
        raise ValueError(f"window length {length} is not a multiple of the block size {block_size}")
    return (block_diagonal(length, block_size, device) | offset_block_causal(length, block_size, device)
            | block_causal(length, block_size, device))


def block_diffusion_inputs(x_t: torch.Tensor, x0: torch.Tensor,
                           block_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(input_ids [B, 2L] = [x_t ; x0], position_ids [B, 2L] = [0..L-1, 0..L-1], attn_mask [1, 2L, 2L])
    for `Transformer.forward(input_ids, position_ids=..., attn_mask=...)`."""
    B, L = x0.shape
    positions = torch.arange(L, device=x0.device)
    position_ids = torch.cat([positions, positions]).expand(B, 2 * L)
    mask = block_diffusion_mask(L, block_size, x0.device)[None]
    return torch.cat([x_t, x0], dim=1), position_ids, mask


def block_times(t_blocks: torch.Tensor, block_size: int) -> torch.Tensor:
    """Per-token times [B, L] from per-block times [B, L / S]: t_{b,i} = t_{b, i // S}."""
    return t_blocks.repeat_interleave(block_size, dim=1)


def block_output_logits(logits: torch.Tensor, length: int, block_size: int, shift_logits: bool) -> torch.Tensor:
    """Logits [B, L, V] in the model's own convention, picked from a 2L-layout forward pass.

    shift_logits=False: token i is predicted at noisy position i, so the noisy half is the output
        (`logits` may be the noisy half alone, [B, L, V], e.g. from `logits_slice=slice(0, L)`).
    shift_logits=True: token i + 1 is predicted at position i. Inside a block that is the noisy
        position i; for the first token of block b + 1 it is the *clean* copy of the last position of
        block b, since a block-by-block sampler predicts that token from the committed block b:

            out_i = clean_i  if (i + 1) % S == 0  else  noisy_i        (logits [B, 2L, V] required)
    """
    noisy = logits[:, :length]
    if not shift_logits:
        return noisy
    assert logits.shape[1] == 2 * length, "shifted block diffusion needs the logits of both halves"
    clean = logits[:, length:]
    last_of_block = (torch.arange(length, device=logits.device) + 1) % block_size == 0
    return torch.where(last_of_block[None, :, None], clean, noisy)
