"""Likelihood: a Monte Carlo bound for diffusion models, the exact NLL for autoregressive ones.

Shape legend: B windows, S Monte Carlo samples per window, L tokens per window, G mask groups per
window (1, or L / block_size for block diffusion), V vocabulary.

Both measure the same quantity, so they can be compared number for number: the negative
log-likelihood of tokens 1..L-1 of each window given token 0, in nats per predicted token
(a window has L - 1 of them). Token 0 is given because an autoregressive model without a
beginning-of-sequence token cannot predict it.

Masked diffusion (bidirectional). For a window with n = L - 1 maskable tokens, the negative ELBO
(continuous time, log-linear schedule, t = 1 fully masked) integrates out t exactly:

    NELBO(x) = int_0^1 (1/t) E_{M ~ t}[ sum_{i in M} -log p(x_i | x_M masked) ] dt
             = sum_{M nonempty} (|M|-1)! (n-|M|)! / n!  *  sum_{i in M} -log p(x_i | x_M masked)
             >= -log p(x_1..x_n | x_0)   (Jensen over random unmasking orders).

It is estimated without bias and with bounded weights by LLaDA's count estimator: draw
k uniform on {1..n} (stratified over the S samples of a window), mask k positions uniformly at
random, and weight the summed cross-entropy by n / k (see `masking.count_masks`).

Block diffusion: the bound is the sum over blocks of that same quantity for each block given the
clean blocks before it; one 2L-layout forward pass estimates every block at once, each block with
its own count.

Block by block (semi-autoregressive). The default sampler decodes a masked-diffusion model in blocks of S
tokens, left to right, with every later block still masked. That process has its own ELBO: the sum over
blocks of the block's masked-diffusion NELBO given the clean blocks before it and the masked ones after,

    NELBO_S(x) = sum_b sum_{M in block b, nonempty} (|M|-1)!(n_b-|M|)!/n_b!
                   * sum_{i in M} -log p(x_i | x_<b, x_M masked, x_>b masked)
               >= -log p_S(x_1..x_n | x_0),

where p_S is the model run block by block (random order inside a block). It is estimated like the
bound above, one count per block (`count_masks` with groups of S), one forward pass per block and sample.
With S = L it is the bound above; as S -> 1 it becomes the left-to-right likelihood below.

Left to right. A masked-diffusion model also defines exact likelihoods: one per decoding order.
Decoded one token per step from left to right (the limit of semi-autoregressive decoding with
blocks of one token), it is the distribution

    p_L2R(x_1..x_n | x_0) = prod_j p(x_j | x_<j visible, x_j..x_n masked),

a product of softmaxes, hence normalised: its NLL is a likelihood, not a bound, of the model used
as that sampler. The same holds for any order the model picks itself, one position per step, from what
it has revealed so far: in particular the order of the one-token-per-step sampler, which reveals the most
confident masked position (the highest top-token probability) of the first block that has one:

    p_conf(x_1..x_n | x_0) = prod_k p(x_{j_k} | state_k),   j_k = argmax_{j masked in the block} max_v p(v | state_k),

exact and normalised because j_k depends only on the state, not on the token drawn there. (The ELBO above
averages -log p_order over uniformly random orders; no inequality ties it to one fixed order.) It costs n
forward passes per window.

Bits per byte: nats/token * (tokens / bytes of the split) / ln 2.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .block import block_diffusion_inputs, block_output_logits
from .losses import align_logits
from .masking import apply_mask, count_masks, first_token_given


def nelbo_draws(num_samples: int, length: int, num_groups: int,
                generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """The random draws of one window: (keys [S, L], count_u [S, G]).

    keys order the positions; count_u_{s,g} = frac(u_g + s / S) with one u_g ~ U[0, 1) per group,
    so the S counts of a group are stratified over {1..n}.
    """
    keys = torch.rand(num_samples, length, generator=generator)
    u = torch.rand(num_groups, generator=generator, dtype=torch.float64)
    s = torch.arange(num_samples, dtype=torch.float64)[:, None] / num_samples
    return keys, torch.remainder(u[None, :] + s, 1.0).float()


@torch.no_grad()
def nelbo_estimates(model, x0: torch.Tensor, keys: torch.Tensor, count_u: torch.Tensor, *, mask_token_id: int,
                    shift_logits: bool, block_size: int | None = None) -> torch.Tensor:
    """Per-sample estimates [B, S] of the negative ELBO of each window, in nats (summed over its L - 1
    predicted tokens), for x0 [B, L] with draws keys [B, S, L] and count_u [B, S, G].

    block_size None: masked diffusion (one group, the whole window); else block diffusion with the
    2L noisy + clean layout. The mean over S is an unbiased estimate of NELBO(x) above.
    """
    B, S, L = keys.shape
    device = x0.device
    x = x0[:, None, :].expand(B, S, L).reshape(B * S, L)
    group = block_size or L
    masked, weight = count_masks(keys.reshape(B * S, L).to(device), count_u.reshape(B * S, -1).to(device),
                                 first_token_given(L, device), group)
    x_t = apply_mask(x, masked, mask_token_id)
    if block_size is None:
        logits = model(x_t)
    else:
        ids, positions, attn = block_diffusion_inputs(x_t, x, block_size)
        logits = model(ids, position_ids=positions, attn_mask=attn,
                       logits_slice=None if shift_logits else slice(0, L))
        logits = block_output_logits(logits, L, block_size, shift_logits)
    logits, targets = align_logits(logits, x, shift_logits)
    if shift_logits:
        masked, weight = masked[:, 1:], weight[:, 1:]
    rows = masked.nonzero()[:, 0]
    ce = F.cross_entropy(logits[masked].float(), targets[masked], reduction="none")
    per_row = torch.zeros(B * S, device=device).index_add_(0, rows, ce * weight[masked])
    return per_row.view(B, S)


@torch.no_grad()
def block_order_nelbo_estimates(model, x0: torch.Tensor, keys: torch.Tensor, count_u: torch.Tensor, *,
                                mask_token_id: int, shift_logits: bool, block_size: int) -> torch.Tensor:
    """Per-sample estimates [B, S] of NELBO_S, the semi-autoregressive bound above, in nats, for a
    bidirectional masked-diffusion model; x0 [B, L], draws keys [B, S, L] and count_u [B, S, L / block_size].

    Row (sample, block b) of the forward pass is the window with blocks < b clean, block b masked by the
    sample's count mask and blocks > b masked; only block b's predictions go through the LM head.
    """
    B, S, L = keys.shape
    G = L // block_size
    device = x0.device
    x = x0[:, None, :].expand(B, S, L).reshape(B * S, L)
    masked, weight = count_masks(keys.reshape(B * S, L).to(device), count_u.reshape(B * S, G).to(device),
                                 first_token_given(L, device), block_size)
    block_of = torch.arange(L, device=device) // block_size  # [L]
    g = torch.arange(G, device=device)
    later = block_of[None, :] > g[:, None]  # [G, L]: columns of blocks after block g
    current = block_of[None, :] == g[:, None]  # [G, L]
    scored = current[None] & masked[:, None, :]  # [B*S, G, L]: the positions whose CE counts
    inputs = x[:, None, :].masked_fill(later[None] | scored, mask_token_id).reshape(B * S * G, L)
    sample, block, cols = scored.nonzero(as_tuple=True)
    hidden = model(inputs, return_hidden=True)
    logits = model.lm_head(hidden[sample * G + block, cols - 1 if shift_logits else cols])
    ce = F.cross_entropy(logits.float(), x[sample, cols], reduction="none")
    per_row = torch.zeros(B * S, device=device).index_add_(0, sample, ce * weight[sample, cols])
    return per_row.view(B, S)


@torch.no_grad()
def left_to_right_nll(model, x: torch.Tensor, *, mask_token_id: int, shift_logits: bool,
                      rows_per_pass: int = 32) -> torch.Tensor:
    """Exact NLL [B] in nats of tokens 1..L-1 of each window x [B, L] given token 0, under the masked-diffusion
    model decoded left to right one token at a time: sum_{j=1}^{L-1} -log p(x_j | x_<j, positions >= j masked).

    Row j of a pass is the window with positions >= j masked; only its prediction for position j goes
    through the LM head (the logit at j - 1 for shifted-logit models).
    """
    B, L = x.shape
    device = x.device
    columns = torch.arange(L, device=device)
    totals = torch.zeros(B, device=device)
    for b in range(B):
        for start in range(1, L, rows_per_pass):
            js = torch.arange(start, min(L, start + rows_per_pass), device=device)
            inputs = x[b].expand(len(js), L).masked_fill(columns[None, :] >= js[:, None], mask_token_id)
            hidden = model(inputs, return_hidden=True)
            at = js - 1 if shift_logits else js
            logits = model.lm_head(hidden[torch.arange(len(js), device=device), at])
            totals[b] += F.cross_entropy(logits.float(), x[b, js], reduction="sum")
    return totals


@torch.no_grad()
def confidence_order_nll(model, x: torch.Tensor, *, mask_token_id: int, shift_logits: bool,
                         block_size: int) -> torch.Tensor:
    """Exact NLL [B] in nats of tokens 1..L-1 of each window x [B, L] given token 0, under the masked-diffusion
    model decoded one token per step in its own confidence order inside blocks of `block_size` (p_conf above:
    the vanilla semi-autoregressive sampler at temperature 1). L - 1 forward passes of the whole batch.
    """
    B, L = x.shape
    device = x.device
    columns = torch.arange(L, device=device)
    rows = torch.arange(B, device=device)
    masked = (columns >= 1)[None, :].expand(B, L).clone()
    state = x.masked_fill(masked, mask_token_id)
    totals = torch.zeros(B, device=device)
    for _ in range(L - 1):
        first = torch.where(masked, columns, L).min(-1).values  # [B]: every row has a masked column left
        start = first // block_size * block_size
        block = start[:, None] + torch.arange(block_size, device=device)[None, :]  # [B, S] columns
        in_range = block < L
        block = block.clamp(max=L - 1)
        hidden = model(state, return_hidden=True)
        at = (block - 1).clamp(min=0) if shift_logits else block
        logp = torch.log_softmax(model.lm_head(hidden[rows[:, None], at]).float(), -1)  # [B, S, V]
        candidates = masked[rows[:, None], block] & in_range
        confidence = logp.max(-1).values.masked_fill(~candidates, float("-inf"))
        pick = confidence.argmax(-1)  # [B], the leftmost on ties
        column = block[rows, pick]
        totals -= logp[rows, pick, x[rows, column]]
        state[rows, column] = x[rows, column]
        masked[rows, column] = False
    return totals


@torch.no_grad()
def ar_nll(model, x: torch.Tensor) -> torch.Tensor:
    """Exact NLL [B] in nats of tokens 1..L-1 of each window x [B, L] given token 0:
    sum_{j=1}^{L-1} -log p(x_j | x_<j), from a causal model with shifted logits."""
    logits = model(x)
    V = logits.shape[-1]
    ce = F.cross_entropy(logits[:, :-1].float().reshape(-1, V), x[:, 1:].reshape(-1), reduction="none")
    return ce.view(x.shape[0], -1).sum(1)


def bits_per_byte(nats_per_token: float, tokens_per_byte: float) -> float:
    """bits/byte = nats/token * tokens/byte / ln 2."""
    return nats_per_token * tokens_per_byte / math.log(2)
