"""Fill-in-the-middle augmentation for the autoregressive objective (prefix-suffix-middle order).

Shape legend: B batch, L window length.

A diffusion model infills natively; an autoregressive model learns it only from rearranged
training text. So that the autoregressive twin can infill too (and the comparison is fair), a
fraction `rate` of its training windows (0.5 by default, as in SantaCoder/StarCoder) is rewritten

    x_0 .. x_{n-1}  (n = L - 4)   cut at a <= b into  prefix = x_<a, middle = x_[a, b), suffix = x_>=b
    ->  <|fim_prefix|> prefix <|fim_suffix|> suffix <|fim_middle|> middle <|endoftext|>

which keeps the length L (the last four tokens of the window make room for the markers) and ends
the middle with end-of-text, the stop signal of an infilling sampler. The marker ids are the fixed
special tokens of `unmask.data.special_tokens`. The next-token loss is then taken on the whole
rewritten window.
"""

from __future__ import annotations

import torch

from ..data.special_tokens import ENDOFTEXT_ID, FIM_MIDDLE_ID, FIM_PREFIX_ID, FIM_SUFFIX_ID

FIM_OVERHEAD = 4  # tokens added by one rewrite: three markers and the closing end-of-text


def fim_rewrite(x: torch.Tensor, apply: torch.Tensor, cuts: torch.Tensor, *, prefix_id: int = FIM_PREFIX_ID,
                suffix_id: int = FIM_SUFFIX_ID, middle_id: int = FIM_MIDDLE_ID,
                end_id: int = ENDOFTEXT_ID) -> torch.Tensor:
    """Windows [B, L] with the rows where `apply` [B] bool is True rewritten prefix-suffix-middle.

    cuts [B, 2] uniforms in [0, 1) choose the two cut points: (a, b) = sorted(floor(cuts * (n + 1)))
    with n = L - 4 content tokens, so empty prefixes, middles and suffixes all occur.
    """
    B, L = x.shape
    n = L - FIM_OVERHEAD
    if n < 1:
        raise ValueError(f"fill-in-the-middle needs windows longer than {FIM_OVERHEAD} tokens, got {L}")
    points = torch.floor(cuts * (n + 1)).long().clamp(max=n).sort(dim=1).values
    pre, suf, mid, end = x.new_tensor([[prefix_id], [suffix_id], [middle_id], [end_id]])
    out = x.clone()
    for row in torch.nonzero(apply).flatten().tolist():
        a, b = points[row].tolist()
        content = x[row, :n]
        out[row] = torch.cat([pre, content[:a], suf, content[b:], mid, content[a:b], end])
    return out
