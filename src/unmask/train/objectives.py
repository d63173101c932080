"""The training objectives as one interface: loss(model, x0, draws) -> scalar nats per token (for "distill",
nats per trained position plus its certainty term).

Shape legend: B windows on this rank, N windows in the global micro-batch (B x world size),
L window length.

`Draws` makes every random number of a micro-step from one generator seeded by
(seed, step, micro-step), for the whole global micro-batch, and hands this rank its rows. So the
noise is a pure function of the step counter (nothing to restore on resume), and rank r of a
W-process run with batch B sees exactly rows [rB, (r+1)B) of the noise a 1-process run with batch
W*B sees; with the loader dealing windows the same way, the two runs compute the same gradient.
"""

from __future__ import annotations

import numpy as np
import torch

from ..diffusion import (align_logits, apply_mask, block_diffusion_inputs, block_output_logits, block_times,
                         fim_rewrite, first_token_given, masked_diffusion_loss, next_token_loss, stratified_times,
                         token_mask)
from ..model.config import ModelConfig
from .config import TrainConfig


def derive_seed(*parts: int) -> int:
    """A 63-bit seed from integers, well mixed (SeedSequence), stable across platforms."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(2, dtype=np.uint64)[0] >> 1)


class Draws:
    """Uniform draws for one micro-batch, drawn for all N global rows and sliced to this rank's."""

    def __init__(self, seed: int, global_rows: int, rows: slice, device: torch.device):
        self.generator = torch.Generator().manual_seed(seed)
        self.global_rows, self.rows, self.device = global_rows, rows, device

    def uniform(self, *tail: int) -> torch.Tensor:
        """U[0, 1) of shape [B, *tail]."""
        return torch.rand((self.global_rows, *tail), generator=self.generator)[self.rows].to(self.device)

    def times(self, per_row: int, eps: float) -> torch.Tensor:
        """Diffusion times [B, per_row], stratified over all N * per_row draws of the global batch."""
        u = torch.rand((), generator=self.generator)
        t = stratified_times(u, self.global_rows * per_row, eps).view(self.global_rows, per_row)
        return t[self.rows].to(self.device)


class Objective:
    """Base: `loss` for training and validation, `tokens_fed` for FLOP accounting."""

    name = ""

    def __init__(self, config: TrainConfig, model_config: ModelConfig):
        self.config, self.model_config = config, model_config
        self.shift = model_config.shift_logits
        self.mask_id = model_config.mask_token_id

    def loss(self, model, x0: torch.Tensor, draws: Draws) -> torch.Tensor:
        raise NotImplementedError

    def tokens_fed(self, length: int) -> int:
        """Tokens the model processes per window of `length` data tokens."""
        return length


def mdlm_loss(model, x0: torch.Tensor, draws: Draws, eps: float, shift: bool, mask_id: int) -> torch.Tensor:
    """MDLM/LLaDA: one t per window, each token masked with probability t, 1/t-weighted CE."""
    L = x0.shape[1]
    t = draws.times(1, eps)[:, 0]
    maskable = first_token_given(L, x0.device) if shift else None
    masked = token_mask(draws.uniform(L), t, maskable)
    logits = model(apply_mask(x0, masked, mask_id))
    return masked_diffusion_loss(logits, x0, masked, t, shift)


class MaskedDiffusion(Objective):
    """MDLM/LLaDA: one t per window, each token masked with probability t, 1/t-weighted CE."""

    name = "mdlm"

    def loss(self, model, x0, draws):
        return mdlm_loss(model, x0, draws, self.config.diffusion.eps, self.shift, self.mask_id)


class BlockDiffusion(Objective):
    """BD3-LM: one t per block, the noisy + clean 2L layout, 1/t-weighted CE on the noisy half."""

    name = "block"

    def loss(self, model, x0, draws):
        B, L = x0.shape
        size = self.model_config.block_size
        t = block_times(draws.times(L // size, self.config.diffusion.eps), size)
        maskable = first_token_given(L, x0.device) if self.shift else None
        masked = token_mask(draws.uniform(L), t, maskable)
        ids, positions, attn = block_diffusion_inputs(apply_mask(x0, masked, self.mask_id), x0, size)
        # Unshifted models read only the noisy half; shifted ones also need the clean block ends.
        logits = model(ids, position_ids=positions, attn_mask=attn, logits_slice=None if self.shift else slice(0, L))
        return masked_diffusion_loss(block_output_logits(logits, L, size, self.shift), x0, masked, t, self.shift)

    def tokens_fed(self, length):
        return 2 * length


class Autoregressive(Objective):
    """Next-token prediction on windows rewritten prefix-suffix-middle at rate diffusion.fim_rate."""

    name = "ar"

    def loss(self, model, x0, draws):
        apply = draws.uniform() < self.config.diffusion.fim_rate
        cuts = draws.uniform(2)
        x = fim_rewrite(x0, apply, cuts) if self.config.diffusion.fim_rate > 0 else x0
        return next_token_loss(model(x), x)


class SelfDistillation(Objective):
    """dParallel-style certainty forcing on a teacher's records (train/teacher.py: prompt, then its answer).

    Each window trains one answer block as the semi-autoregressive sampler meets it: the prompt and the
    blocks before it clean, the block itself masked at rate t ~ U[eps, 1] (at least one position), every
    later position masked.
    On the block's masked positions the loss is

        mean CE(student, teacher's token) + entropy_weight * mean over those predicted right of H(student)

    The first term keeps the student on the teacher's decode; the second makes it sure of the positions it
    already gets right, so a confidence threshold reveals several of them in one step. With mdlm_weight > 0,
    mdlm_weight x the MDLM loss of a whole window (uniform masks, a second forward pass) is added, so the
    student keeps predicting from any mask pattern (the likelihood bound, infilling), not only the sampler's:
    the window is `anchor` (a batch of real code, distill.mdlm_shards, read by the training loop) when given,
    else the record itself (whose answer is the teacher's text, not the data's).
    """

    name = "distill"

    def loss(self, model, x0, draws, anchor: torch.Tensor | None = None):
        L = x0.shape[1]
        d = self.config.distill
        blocks = (L - d.prompt_len) // d.block_len
        block = (draws.uniform() * blocks).long().clamp_(max=blocks - 1)  # [B]
        t = draws.times(1, self.config.diffusion.eps)[:, 0]  # [B]
        pos = torch.arange(L, device=x0.device)[None, :]
        start = d.prompt_len + block[:, None] * d.block_len
        in_block = (pos >= start) & (pos < start + d.block_len)
        # at least one position of the block, so every window trains something
        one = start + (draws.uniform() * d.block_len).long().clamp_(max=d.block_len - 1)[:, None]
        trained = token_mask(draws.uniform(L), t, in_block) | (pos == one)
        masked = trained | (pos >= start + d.block_len)
        logits, targets = align_logits(model(apply_mask(x0, masked, self.mask_id)), x0, self.shift)
        if self.shift:
            trained = trained[:, 1:]
        picked = logits[trained].float()  # [M, V], M >= B
        logp = picked.log_softmax(-1)
        wanted = targets[trained]
        ce = -logp.gather(-1, wanted[:, None])[:, 0]
        right = (picked.argmax(-1) == wanted).float()
        entropy = -(logp.exp() * logp).sum(-1)
        loss = ce.mean() + d.entropy_weight * (entropy * right).sum() / len(ce)
        if d.mdlm_weight:
            window = x0 if anchor is None else anchor
            any_order = mdlm_loss(model, window, draws, self.config.diffusion.eps, self.shift, self.mask_id)
            loss = loss + d.mdlm_weight * any_order
        return loss

    def tokens_fed(self, length):
        # With mdlm_shards the second pass reads its own data tokens (counted by the loop), fed once each.
        d = self.config.distill
        return 2 * length if d.mdlm_weight and not d.mdlm_shards else length


OBJECTIVE_CLASSES = {cls.name: cls for cls in (MaskedDiffusion, BlockDiffusion, Autoregressive, SelfDistillation)}


def make_objective(config: TrainConfig, model_config: ModelConfig) -> Objective:
    return OBJECTIVE_CLASSES[config.objective](config, model_config)
