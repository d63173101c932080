"""The unmask transformer: one LLaMA-style decoder stack with three attention modes.

Shape legend: B batch, L tokens fed, K keys attended (cache slots or L), V vocabulary, D width,
H query heads, H_kv key/value heads, D_h head width.

Token embedding -> N x [RMSNorm -> attention (GQA, rotary, optional q/k bias and q/k norm) ->
residual -> RMSNorm -> SwiGLU MLP -> residual] -> RMSNorm -> LM head. Module names follow the
Qwen2/LLaMA convention (`model.layers.N.self_attn.q_proj`), so the state dict is the checkpoint.

Attention modes (ModelConfig.attention), stated as "query at position p may see key at position k":
- bidirectional: always;
- causal: k <= p;
- block_causal: k // block_size <= p // block_size (its own block and every earlier one).
Keys of padding (attention_mask False) are never seen; every query always sees itself, so rows
of padding stay finite instead of turning into NaN that would leak through later layers.

The model knows nothing of noising, sampling or serving: it maps token ids to logits.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import ModelConfig
from .kv_cache import KVCache


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Normalise in float32 for bf16 stability, as LLaMA and Qwen do.
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * xf.to(x.dtype)


def rope_inverse_frequencies(head_dim: int, theta: float, scaling: dict | None = None,
                             device: torch.device | str | None = None) -> torch.Tensor:
    """Rotary inverse frequencies [D_h/2], float32, optionally rescaled (see ModelConfig.rope_scaling)."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, device=device, dtype=torch.float32) / head_dim))
    if scaling is None:
        return inv_freq
    factor = float(scaling["factor"])
    if scaling["rope_type"] == "linear":  # positions divided by `factor`
        return inv_freq / factor
    # "llama3": wavelengths shorter than original_len / high_freq_factor are kept, longer than
    # original_len / low_freq_factor are stretched by `factor`, and the band between is interpolated
    # linearly in original_len / wavelength (the rule Meta published with LLaMA 3.1).
    low, high = float(scaling["low_freq_factor"]), float(scaling["high_freq_factor"])
    original = float(scaling["original_max_position_embeddings"])
    ratio = original * inv_freq / (2 * torch.pi)  # original_len / wavelength
    smooth = ((ratio - low) / (high - low)).clamp(0.0, 1.0)
    return (1 - smooth) * inv_freq / factor + smooth * inv_freq


def rotary_cos_sin(positions: torch.Tensor, head_dim: int, theta: float,
                   scaling: dict | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin [B, 1, L, D_h] for positions [B, L], half-split (GPT-NeoX / HF-LLaMA) layout, float32."""
    inv_freq = rope_inverse_frequencies(head_dim, theta, scaling, positions.device)
    angles = positions.float()[..., None] * inv_freq  # [B, L, D_h/2]
    angles = torch.cat([angles, angles], dim=-1)[:, None]  # [B, 1, L, D_h]
    return angles.cos(), angles.sin()


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    xf = x.float()
    rotated = torch.cat([-xf[..., half:], xf[..., :half]], dim=-1)
    return (xf * cos + rotated * sin).to(x.dtype)


def allowed_keys(config: ModelConfig, q_pos: torch.Tensor, k_pos: torch.Tensor) -> torch.Tensor | None:
    """Bool [B, L, K]: may the query at q_pos [B, L] see the key at k_pos [B, K]? None means 'all'."""
    if config.attention == "bidirectional":
        return None
    if config.attention == "causal":
        return k_pos[:, None, :] <= q_pos[:, :, None]
    block = config.block_size
    return (k_pos[:, None, :] // block) <= (q_pos[:, :, None] // block)


class Attention(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        d, hd = config.hidden_size, config.resolved_head_dim
        self.num_heads, self.num_kv_heads, self.head_dim = config.num_attention_heads, config.num_key_value_heads, hd
        self.q_proj = nn.Linear(d, self.num_heads * hd, bias=config.attention_bias)
        self.k_proj = nn.Linear(d, self.num_kv_heads * hd, bias=config.attention_bias)
        self.v_proj = nn.Linear(d, self.num_kv_heads * hd, bias=config.attention_bias)
        self.o_proj = nn.Linear(self.num_heads * hd, d, bias=False)
        if config.qk_norm:
            self.q_norm = RMSNorm(hd, config.rms_norm_eps)
            self.k_norm = RMSNorm(hd, config.rms_norm_eps)
        else:
            self.q_norm = self.k_norm = None

    def forward(self, x, cos, sin, mask, is_causal, cache: KVCache | None, layer: int, cache_start: int,
                queries: slice | None = None):
        """queries: compute the output only for these positions (keys and values still cover all of x)."""
        B, L, _ = x.shape
        xq = x if queries is None else x[:, queries]
        Lq = xq.shape[1]
        q = self.q_proj(xq).view(B, Lq, self.num_heads, self.head_dim)
        k = self.k_proj(x).view(B, L, self.num_kv_heads, self.head_dim)
        v = self.v_proj(x).view(B, L, self.num_kv_heads, self.head_dim)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # [B, H, L, D_h]
        cos_q, sin_q = (cos, sin) if queries is None else (cos[:, :, queries], sin[:, :, queries])
        q, k = apply_rotary(q, cos_q, sin_q), apply_rotary(k, cos, sin)
        if cache is not None:
            k, v = cache.write(layer, cache_start, k, v)  # [B, H_kv, K, D_h]
        if self.num_kv_heads != self.num_heads:
            repeat = self.num_heads // self.num_kv_heads
            k, v = k.repeat_interleave(repeat, dim=1), v.repeat_interleave(repeat, dim=1)
        if queries is not None and mask is not None:
            mask = mask[:, :, queries]
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal)
        return self.o_proj(out.transpose(1, 2).reshape(B, Lq, -1))


class MLP(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        d, f = config.hidden_size, config.intermediate_size
        self.gate_proj = nn.Linear(d, f, bias=False)
        self.up_proj = nn.Linear(d, f, bias=False)
        self.down_proj = nn.Linear(f, d, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class DecoderLayer(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.self_attn = Attention(config)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.mlp = MLP(config)

    def forward(self, x, cos, sin, mask, is_causal, cache, layer, cache_start, queries: slice | None = None):
        """queries: return only these positions (the last layer, when only some logits are wanted)."""
        h = self.self_attn(self.input_layernorm(x), cos, sin, mask, is_causal, cache, layer, cache_start, queries)
        x = (x if queries is None else x[:, queries]) + h
        return x + self.mlp(self.post_attention_layernorm(x))


class Transformer(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.model = nn.ModuleDict(dict(
            embed_tokens=nn.Embedding(config.vocab_size, config.hidden_size),
            layers=nn.ModuleList(DecoderLayer(config) for _ in range(config.num_hidden_layers)),
            norm=RMSNorm(config.hidden_size, config.rms_norm_eps),
        ))
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        if config.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight

    def init_weights(self, std: float = 0.02, seed: int | None = None) -> None:
        """Normal(0, std) for matrices, scaled by depth on the residual outputs (GPT-2 style); ones for norms."""
        gen = torch.Generator().manual_seed(seed) if seed is not None else None
        out_std = std / (2 * self.config.num_hidden_layers) ** 0.5
        for name, p in self.named_parameters():
            if name.endswith("norm.weight"):
                nn.init.ones_(p)
            elif name.endswith(".bias"):
                nn.init.zeros_(p)
            else:
                s = out_std if name.endswith(("o_proj.weight", "down_proj.weight")) else std
                with torch.no_grad():
                    p.copy_(torch.randn(p.shape, generator=gen) * s)

    def forward(
        self,
        input_ids: torch.Tensor,
        *,
        position_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        cache: KVCache | None = None,
        cache_start: int = 0,
        attn_mask: torch.Tensor | None = None,
        logits_slice: slice | None = None,
        return_hidden: bool = False,
    ) -> torch.Tensor:
        """Logits [B, L', V] for input_ids [B, L] (L' = L, or the length of `logits_slice`).

        position_ids [B, L]: rotary positions (default: cache_start + 0..L-1, the same for every row).
        attention_mask [B, L] bool: False marks padding; such keys are never attended.
        cache, cache_start: write this pass's keys/values into cache slots [cache_start, cache_start + L)
            and attend over all written slots (see kv_cache.py).
        attn_mask [B or 1, L, K] bool: an explicit "may attend" mask that replaces the attention mode's
            rule (block-diffusion training uses it for its noisy/clean layout). Key padding still applies.
        logits_slice: only compute the LM head (and the last layer's outputs) for these positions.
        return_hidden: return the final normed hidden states [B, L', D] instead of logits.
        """
        B, L = input_ids.shape
        device = input_ids.device
        default_positions = position_ids is None
        if default_positions:
            position_ids = (torch.arange(L, device=device) + cache_start).expand(B, L)
        valid = attention_mask.bool() if attention_mask is not None else None

        if cache is not None:
            written = valid if valid is not None else torch.ones_like(position_ids, dtype=torch.bool)
            cache.write_tokens(cache_start, position_ids, written)
            k_pos, k_valid = cache.slot_positions[:, : cache.end], cache.slot_valid[:, : cache.end]
            q_slot = torch.arange(cache_start, cache_start + L, device=device)
            k_slot = torch.arange(cache.end, device=device)
        else:
            k_pos, k_valid = position_ids, valid
            q_slot = k_slot = torch.arange(L, device=device)

        mask, is_causal = self._attention_mask(position_ids, k_pos, k_valid, q_slot, k_slot, attn_mask, cache,
                                              default_positions)
        cos, sin = rotary_cos_sin(position_ids, self.config.resolved_head_dim, self.config.rope_theta,
                                  self.config.rope_scaling)
        x = self.model.embed_tokens(input_ids)
        # With logits_slice, the last layer computes its attention output and MLP only for those positions
        # (its keys and values still cover every position): the same result, and on a CPU a cheaper pass for a
        # diffusion decoder, which feeds the whole canvas for one block's logits. The fused causal kernel
        # (is_causal) aligns queries with keys from the first position on, so it keeps every query.
        last = len(self.model.layers) - 1
        trim = logits_slice if logits_slice is not None and not is_causal and last >= 0 else None
        for i, layer in enumerate(self.model.layers):
            x = layer(x, cos, sin, mask, is_causal, cache, i, cache_start, trim if i == last else None)
        if logits_slice is not None and trim is None:
            x = x[:, logits_slice]
        x = self.model.norm(x)
        return x if return_hidden else self.lm_head(x)

    def _attention_mask(self, q_pos, k_pos, k_valid, q_slot, k_slot, explicit, cache, default_positions):
        """(bool mask [B, 1, L, K] or None, is_causal flag) for scaled_dot_product_attention."""
        plain = cache is None and explicit is None and k_valid is None
        if plain and self.config.attention == "bidirectional":
            return None, False
        # The fused causal kernel assumes key j sits at position j; custom positions take the explicit mask.
        if plain and self.config.attention == "causal" and default_positions:
            return None, True
        allowed = explicit if explicit is not None else allowed_keys(self.config, q_pos, k_pos)
        if k_valid is not None:
            key_ok = k_valid[:, None, :]
            allowed = key_ok if allowed is None else allowed & key_ok
        if allowed is None:
            return None, False
        allowed = allowed | (k_slot[None, None, :] == q_slot[None, :, None])
        return allowed[:, None], False
