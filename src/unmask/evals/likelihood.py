"""`unmask eval likelihood`: bits per byte of a model on a split of token shards.

    unmask eval likelihood --model DIR --shards data/shards --split val --windows 200 --window 256

Windows are the first `windows` non-overlapping windows of `window` tokens of the split, in order, so two
models (a diffusion model and its autoregressive twin) are scored on the very same tokens. An
autoregressive model gets its exact negative log-likelihood; a masked-diffusion or block-diffusion model
gets the Monte Carlo negative ELBO of `unmask.diffusion` (an upper bound on its NLL), with draws seeded
by (seed, window). Both measure tokens 1..L-1 of each window given token 0, so the numbers compare
directly; nats per token become bits per byte with the split's token/byte ratio from the shard index
(the same definition training validation uses). The standard error is over windows (for the bound it
includes the Monte Carlo noise).

`order="left-to-right"` scores a masked-diffusion model instead by the exact likelihood of decoding it
one token per step from left to right (`diffusion.left_to_right_nll`: a likelihood, not a bound, of that
sampler; window_len - 1 forward passes per window, so use fewer windows). `order="blocks"` scores it by the
bound of decoding it block by block (`block_len` tokens each, later blocks masked, random order inside a
block: `diffusion.block_order_nelbo_estimates`), the process the semi-autoregressive sampler runs; it costs
window_len / block_len forward passes per Monte Carlo sample. `order="confidence"` is the exact likelihood of
the one-token-per-step sampler itself: inside blocks of `block_len`, the most confident masked position first
(`diffusion.confidence_order_nll`; window_len - 1 passes of `batch_size` windows at once).
"""

from __future__ import annotations

import hashlib
import math
from typing import Any

import torch

from ..errors import UnmaskError


ORDERS = ("random", "blocks", "confidence", "left-to-right")


def _window_seed(seed: int, index: int) -> int:
    return int.from_bytes(hashlib.sha256(f"likelihood:{seed}:{index}".encode()).digest()[:8], "little") >> 1


def evaluate_likelihood(lm, shards_dir: str, *, split: str = "val", window_len: int = 256, num_windows: int = 100,
                        mc_samples: int = 16, batch_size: int = 8, seed: int = 0, order: str = "random",
                        block_len: int = 16, progress: bool = True) -> dict[str, Any]:
    """Nats per token, bits per byte and standard errors of a LoadedModel on a shard split."""
    from ..data.shards import TokenShards, read_index
    from ..diffusion import (ar_nll, bits_per_byte, block_order_nelbo_estimates, confidence_order_nll,
                             left_to_right_nll, nelbo_draws, nelbo_estimates)

    model, cfg = lm.model, lm.model.config
    shards = TokenShards(shards_dir, split)
    index = read_index(shards_dir)
    _check_tokenizer(lm, index, shards_dir)
    if window_len < 2:
        raise UnmaskError(f"--window must be at least 2 tokens, got {window_len}")
    if window_len > cfg.max_position_embeddings:
        raise UnmaskError(f"--window {window_len} is longer than the model's context ({cfg.max_position_embeddings})")
    block = cfg.block_size if cfg.attention == "block_causal" else None
    if block and window_len % block:
        raise UnmaskError(f"--window {window_len} must be a multiple of the model's block_size {block}")
    if cfg.attention == "causal" and not cfg.shift_logits:
        raise UnmaskError(f"{lm.path}: a causal model must predict the next token (shift_logits true in config.json)")
    if order not in ORDERS:
        raise UnmaskError(f"--likelihood-order must be one of {', '.join(ORDERS)}, got {order!r}")
    causal = cfg.attention == "causal"
    scored = "left-to-right" if causal else order  # a causal model's NLL is left to right already
    if scored != "random" and not causal and cfg.attention != "bidirectional":
        raise UnmaskError(f"--likelihood-order {order} scores masked-diffusion (bidirectional) models; "
                          f"{lm.path} is {cfg.attention}")
    if scored in ("blocks", "confidence") and (block_len < 1 or window_len % block_len):
        raise UnmaskError(f"--window {window_len} must be a multiple of --likelihood-block {block_len}")
    if cfg.attention != "causal" and cfg.mask_token_id is None:
        raise UnmaskError(f"{lm.path}: config.json has no mask_token_id, so the diffusion bound cannot be computed")
    total = min(num_windows, len(shards) // window_len)
    if total == 0:
        raise UnmaskError(f"{shards_dir}: the {split!r} split has {len(shards)} tokens, less than one window "
                          f"of {window_len}")
    device = next(model.parameters()).device
    per_window: list[float] = []
    bar = _bar(total, progress)
    with torch.no_grad():
        # windows per forward pass: one row each (exact scores), one per sample, or one per sample and block
        step = {"random": max(1, batch_size // mc_samples),
                "blocks": max(1, batch_size // (mc_samples * (window_len // block_len)))}.get(scored, batch_size)
        if scored == "left-to-right" and not causal:
            step = max(1, batch_size // mc_samples)  # left_to_right_nll batches positions within a window
        for start in range(0, total, step):
            ids = range(start, min(total, start + step))
            x = torch.stack([torch.from_numpy(shards.read(i * window_len, window_len).astype("int64")) for i in ids])
            x = x.to(device)
            if causal:
                nats = ar_nll(model, x)
            elif scored == "left-to-right":
                nats = left_to_right_nll(model, x, mask_token_id=cfg.mask_token_id, shift_logits=cfg.shift_logits)
            elif scored == "confidence":
                nats = confidence_order_nll(model, x, mask_token_id=cfg.mask_token_id, shift_logits=cfg.shift_logits,
                                            block_size=block_len)
            else:
                groups = window_len // (block_len if scored == "blocks" else block or window_len)
                draws = [nelbo_draws(mc_samples, window_len, groups,
                                     torch.Generator().manual_seed(_window_seed(seed, i))) for i in ids]
                keys, count_u = torch.stack([d[0] for d in draws]), torch.stack([d[1] for d in draws])
                if scored == "blocks":
                    nats = block_order_nelbo_estimates(model, x, keys, count_u, mask_token_id=cfg.mask_token_id,
                                                       shift_logits=cfg.shift_logits, block_size=block_len).mean(1)
                else:
                    nats = nelbo_estimates(model, x, keys, count_u, mask_token_id=cfg.mask_token_id,
                                           shift_logits=cfg.shift_logits, block_size=block).mean(1)
            per_window.extend((nats / (window_len - 1)).tolist())
            bar.update(len(ids))
    bar.close()
    mean = sum(per_window) / len(per_window)
    stderr = (math.sqrt(sum((v - mean) ** 2 for v in per_window) / (len(per_window) - 1) / len(per_window))
              if len(per_window) > 1 else None)
    result: dict[str, Any] = {
        "task": "likelihood",
        "metric": "nll" if causal else {"left-to-right": "left_to_right_nll",
                                         "confidence": "confidence_order_nll"}.get(scored, "nelbo"),
        "order": scored,
        **({"block_len": block_len} if scored in ("blocks", "confidence") else {}),
        "objective": {"causal": "autoregressive", "bidirectional": "masked diffusion",
                      "block_causal": f"block diffusion (block {block})"}[cfg.attention],
        "nats_per_token": mean, "nats_per_token_stderr": stderr,
        "split": split, "windows": total, "window_len": window_len,
        "mc_samples": mc_samples if scored in ("random", "blocks") else None, "seed": seed,
    }
    num_bytes = (index.get("num_bytes") or {}).get(split)
    if num_bytes:
        tpb = len(shards) / float(num_bytes)
        result.update(tokens_per_byte=tpb, bits_per_byte=bits_per_byte(mean, tpb),
                      bits_per_byte_stderr=bits_per_byte(stderr, tpb) if stderr is not None else None)
    else:
        result.update(tokens_per_byte=None, bits_per_byte=None, bits_per_byte_stderr=None)
    result["per_window"] = [round(v, 6) for v in per_window]  # nats per token, for `unmask eval compare`
    return result


def _check_tokenizer(lm, index: dict, shards_dir: str) -> None:
    """Shards made with another tokenizer would score nonsense; the index records the tokenizer's hash."""
    recorded = index.get("tokenizer_sha256")
    if lm.tokenizer is None:
        return
    from ..data.tokenizer import tokenizer_sha256

    if recorded and recorded != tokenizer_sha256(lm.tokenizer):
        raise UnmaskError(f"{shards_dir}: the shards were tokenized with another tokenizer than {lm.path}'s "
                          "(index.json's tokenizer_sha256 differs)")
    if index.get("vocab_size", 0) > lm.model.config.vocab_size:
        raise UnmaskError(f"{shards_dir}: token ids up to {index['vocab_size'] - 1} do not fit the model's "
                          f"vocabulary of {lm.model.config.vocab_size}")


def _bar(total: int, enabled: bool):
    from .runner import progress_bar

    return progress_bar(total, "likelihood", not enabled, unit="window")
