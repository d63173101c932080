"""The diffusion math as small pure functions: noising, losses, the block-diffusion layout,
fill-in-the-middle, and the likelihood bound. The model knows nothing of it; the trainer,
the samplers and the evaluators compose it.

    masking.py     diffusion times (t = 1 fully masked), token masks, count masks for the bound
    losses.py      1/t-weighted masked cross-entropy, next-token cross-entropy, logit alignment
    block.py       BD3-LM noisy + clean layout and its three-predicate attention mask
    fim.py         prefix-suffix-middle rewriting for the autoregressive objective
    likelihood.py  Monte Carlo negative ELBO, exact left-to-right and autoregressive NLL, bits per byte
"""

from .block import (block_causal, block_diagonal, block_diffusion_inputs, block_diffusion_mask,
                    block_output_logits, block_times, offset_block_causal)
from .fim import fim_rewrite
from .likelihood import (ar_nll, bits_per_byte, block_order_nelbo_estimates, confidence_order_nll,
                         left_to_right_nll, nelbo_draws, nelbo_estimates)
from .losses import align_logits, masked_diffusion_loss, next_token_loss, weighted_masked_ce
from .masking import apply_mask, count_masks, first_token_given, stratified_times, token_mask

__all__ = [
    "align_logits", "apply_mask", "ar_nll", "bits_per_byte", "block_causal", "block_diagonal",
    "block_diffusion_inputs", "block_diffusion_mask", "block_order_nelbo_estimates", "block_output_logits",
    "block_times", "confidence_order_nll", "count_masks",
    "fim_rewrite", "first_token_given", "left_to_right_nll", "masked_diffusion_loss", "nelbo_draws",
    "nelbo_estimates", "next_token_loss", "offset_block_causal", "stratified_times", "token_mask", "weighted_masked_ce",
]
