"""Noising for masked diffusion: diffusion times, which tokens get masked, and the masked input.

Shape legend: B rows (windows), L tokens per row, N rows of a global batch, G groups per row.

Time convention: t = 1 means fully masked, t = 0 means clean. Each token is masked independently
with probability t (the log-linear schedule of MDLM/LLaDA, whose ELBO weight is 1/t).

Randomness enters only as uniform draws passed in by the caller, so every function here is pure:
the trainer draws the uniforms for the *global* batch from one seeded generator and hands each
rank its rows, which is what makes a 2-process run see exactly the noise of a 1-process run.
"""

from __future__ import annotations

import torch


def stratified_times(u: torch.Tensor, n: int, eps: float) -> torch.Tensor:
    """Antithetic (stratified) diffusion times t [n] in [eps, 1) from one uniform draw u in [0, 1).

    t_i = eps + (1 - eps) * frac(u + i / n),   i = 0..n-1

    One offset shared by the batch spreads the times evenly over [eps, 1) (MDLM's low-variance
    sampler); eps keeps the 1/t weight bounded.
    """
    i = torch.arange(n, dtype=torch.float64, device=u.device)
    t = torch.remainder(u.double() + i / n, 1.0)
    return (eps + (1.0 - eps) * t).float()


def token_mask(uniforms: torch.Tensor, t: torch.Tensor, maskable: torch.Tensor | None = None) -> torch.Tensor:
    """Bool [B, L]: masked_i = (uniform_i < t_i) and maskable_i.

    uniforms [B, L] in [0, 1); t [B] (one time per row) or [B, L] (per token, e.g. per block);
    maskable [L] or [B, L] bool (None: every position), e.g. False at position 0 for shifted-logit
    models, whose first token has no logit predicting it.
    """
    if t.dim() == 1:
        t = t[:, None]
    masked = uniforms < t
    if maskable is not None:
        masked = masked & maskable
    return masked


def apply_mask(x0: torch.Tensor, masked: torch.Tensor, mask_token_id: int) -> torch.Tensor:
    """x_t [B, L]: the mask token where `masked`, the clean token x0 elsewhere."""
    return torch.where(masked, torch.full_like(x0, mask_token_id), x0)


def first_token_given(length: int, device: torch.device | str | None = None) -> torch.Tensor:
    """Maskable bool [L] with position 0 never masked.

    Shifted-logit models (the logit at i predicts token i + 1) have no logit for token 0, and the
    likelihood bound conditions every model on the first token of a window so that it measures the
    same quantity, -log p(x_1..x_{L-1} | x_0), as the autoregressive twin's exact NLL.
    """
    maskable = torch.ones(length, dtype=torch.bool, device=device)
    maskable[0] = False
    return maskable


def count_masks(keys: torch.Tensor, count_u: torch.Tensor, maskable: torch.Tensor,
                group_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Masks with an exact count per group, for the low-variance likelihood estimator.

    keys [B, L] uniforms (random order of positions), count_u [B, G] uniforms in [0, 1) choosing the
    count, maskable [L] bool, group_size: tokens per group (L for a whole sequence, the block size for
    block diffusion). In group g with n_g maskable positions:

        k_g = 1 + floor(n_g * count_u),  masked = the k_g maskable positions with the smallest keys,
        weight = n_g / k_g  on each of them (0 on groups with no maskable position).

    Returns (masked [B, L] bool, weight [B, L] float). With k uniform on {1..n} and the subset uniform
    given k, E[weight * sum of masked CE] equals the continuous-time ELBO integral
    sum_M (|M|-1)!(n-|M|)!/n! * sum_{i in M} CE_i exactly (LLaDA's estimator), with bounded weights.
    """
    B, L = keys.shape
    assert L % group_size == 0, "the sequence must be a whole number of groups"
    G = L // group_size
    keys = torch.where(maskable, keys, torch.full_like(keys, 2.0)).view(B, G, group_size)
    rank = keys.argsort(dim=-1).argsort(dim=-1)  # 0 = smallest key in the group
    n = maskable.view(G, group_size).sum(-1).to(torch.float32)  # [G]
    k = (1 + torch.floor(n * count_u)).clamp(max=n.clamp(min=1))  # [B, G]
    masked = (rank < k[..., None]) & maskable.view(1, G, group_size)
    weight = torch.where(n > 0, n / k, torch.zeros_like(k))
    weight = (weight[..., None] * masked).view(B, L)
    return masked.view(B, L), weight
