"""Training losses: masked-diffusion cross-entropy weighted by 1/t, and next-token cross-entropy.

Shape legend: B batch, L tokens, V vocabulary, M masked positions.

Logit alignment. A model with `shift_logits=False` (LLaDA, MDLM) predicts token i from the logit at
position i. A model with `shift_logits=True` (autoregressive heads, and Dream-style diffusion models
adapted from them) predicts token i from the logit at position i - 1, so token 0 is never predicted
(it is never masked) and a window of L tokens has L - 1 predicted slots. `align_logits` maps both to
"one logit row per predicted token"; every loss below is then the same formula.

All losses are computed in float32 whatever the autocast dtype of the logits.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def align_logits(logits: torch.Tensor, x0: torch.Tensor, shift_logits: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits, targets) with row j of logits predicting targets[:, j].

    shift_logits=False: (logits [B, L, V], x0 [B, L]).
    shift_logits=True:  (logits[:, :-1] [B, L-1, V], x0[:, 1:] [B, L-1]).
    """
    if shift_logits:
        return logits[:, :-1], x0[:, 1:]
    return logits, x0


def weighted_masked_ce(logits: torch.Tensor, targets: torch.Tensor, masked: torch.Tensor,
                       weight: torch.Tensor) -> torch.Tensor:
    """Scalar sum over masked positions of weight_i * CE(logits_i, target_i), in float32 nats.

    logits [B, L, V], targets [B, L], masked [B, L] bool, weight [B, L] or [B] (per row).
    Only the masked rows of the logits are cast and normalised, which keeps memory at M x V.
    """
    if weight.dim() == 1:
        weight = weight[:, None].expand_as(masked)
    picked = logits[masked].float()  # [M, V]
    if picked.numel() == 0:
        return logits.sum() * 0.0  # keeps the graph (and DDP's gradient hooks) connected
    ce = F.cross_entropy(picked, targets[masked], reduction="none")
    return (ce * weight[masked].float()).sum()


def masked_diffusion_loss(logits: torch.Tensor, x0: torch.Tensor, masked: torch.Tensor, t: torch.Tensor,
                          shift_logits: bool) -> torch.Tensor:
    """MDLM/LLaDA loss in nats per token:

        loss = (1 / N) * sum_{b, i : masked} (1 / t_{b,i}) * -log p_theta(x0_{b,i} | x_t)

    where N = B * L (or B * (L - 1) with shifted logits: the predicted token slots, masked or not).
    Its expectation over t ~ U[eps, 1] and the masks is the negative ELBO per token (for eps -> 0).

    logits [B, L, V] from the model fed x_t; x0 [B, L] clean tokens; masked [B, L] bool (position 0
    must be unmasked when shift_logits); t [B] per row or [B, L] per token (block diffusion).
    """
    if t.dim() == 1:
        t = t[:, None].expand_as(masked)
    if shift_logits:
        assert not masked[:, 0].any(), "token 0 has no logit when logits are shifted; never mask it"
        masked, t = masked[:, 1:], t[:, 1:]
    logits, targets = align_logits(logits, x0, shift_logits)
    total = weighted_masked_ce(logits, targets, masked, 1.0 / t)
    return total / targets.numel()


def next_token_loss(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Autoregressive loss in nats per token: mean over j = 1..L-1 of -log p_theta(x_j | x_<j),
    with the logit at position j - 1 predicting x_j. logits [B, L, V], x [B, L]."""
    V = logits.shape[-1]
    return F.cross_entropy(logits[:, :-1].float().reshape(-1, V), x[:, 1:].reshape(-1))
