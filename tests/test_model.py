"""The transformer: attention modes, caching, padding and dtypes."""

import pytest
import torch

from unmask.model import KVCache
from unmask.model.transformer import allowed_keys

from conftest import tiny_config, tiny_model

L = 12


def visible(mode: str, q: int, k: int, block_size: int = 4) -> bool:
    if mode == "bidirectional":
        return True
    if mode == "causal":
        return k <= q
    return k // block_size <= q // block_size


@pytest.mark.parametrize("mode", ["bidirectional", "causal", "block_causal"])
def test_attention_mode_sees_exactly_the_keys_it_should(mode):
    model = tiny_model(attention=mode, block_size=4 if mode == "block_causal" else None)
    x = torch.randint(2, 60, (1, L), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        base = model(x)
        for k in range(L):
            changed = x.clone()
            changed[0, k] = (x[0, k] + 7) % 60 + 2
            out = model(changed)
            for q in range(L):
                if q == k:
                    continue
                delta = (out[0, q] - base[0, q]).abs().max().item()
                if visible(mode, q, k):
                    assert delta > 1e-4, f"{mode}: query {q} ignored visible key {k}"
                else:
                    assert delta == 0.0, f"{mode}: query {q} saw hidden key {k} (delta {delta})"


def test_block_causal_predicate_position_by_position():
    cfg = tiny_config(attention="block_causal", block_size=3)
    pos = torch.arange(9)[None]
    allowed = allowed_keys(cfg, pos, pos)[0]
    for q in range(9):
        for k in range(9):
            assert bool(allowed[q, k]) == (k // 3 <= q // 3)


def test_explicit_mask_overrides_mode():
    model = tiny_model(attention="bidirectional")
    x = torch.randint(2, 60, (1, 6))
    causal = torch.ones(6, 6, dtype=torch.bool).tril()[None]
    twin = tiny_model(attention="causal")
    twin.load_state_dict(model.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(model(x, attn_mask=causal), twin(x), rtol=0, atol=1e-6)


@pytest.mark.parametrize("mode", ["causal", "block_causal"])
def test_incremental_cache_equals_full_forward(mode):
    model = tiny_model(attention=mode, block_size=4 if mode == "block_causal" else None)
    x = torch.randint(2, 60, (2, L))
    step = 1 if mode == "causal" else 4
    with torch.no_grad():
        full = model(x)
        cache = KVCache.for_model(model, batch_size=2, max_slots=L)
        pieces = [model(x[:, s:s + step], cache=cache, cache_start=s) for s in range(0, L, step)]
    torch.testing.assert_close(torch.cat(pieces, 1), full, rtol=1e-5, atol=1e-5)


def test_dual_cache_refreshed_equals_full_and_stale_keys_are_reused():
    model = tiny_model(attention="bidirectional")
    x = torch.randint(2, 60, (1, L))
    with torch.no_grad():
        full = model(x)
        cache = KVCache.for_model(model, 1, L)
        model(x, cache=cache, cache_start=0)  # fills every slot
        block = model(x[:, 4:8], cache=cache, cache_start=4)
        torch.testing.assert_close(block, full[:, 4:8], rtol=1e-5, atol=1e-5)
        # Change a token outside the block without refreshing: the block still sees the cached (stale) key.
        y = x.clone()
        y[0, 10] = (y[0, 10] + 1) % 60 + 2
        stale = model(y[:, 4:8], cache=cache, cache_start=4)
        torch.testing.assert_close(stale, full[:, 4:8], rtol=1e-5, atol=1e-5)
        fresh = model(y)[:, 4:8]
        assert (fresh - stale).abs().max() > 1e-4


@pytest.mark.parametrize("mode", ["bidirectional", "causal"])
def test_left_padding_with_positions_matches_unpadded(mode):
    model = tiny_model(attention=mode)
    short = torch.randint(2, 60, (1, 7))
    padded = torch.cat([torch.zeros(1, 3, dtype=torch.long), short], 1)
    mask = torch.tensor([[False] * 3 + [True] * 7])
    pos = (mask.long().cumsum(1) - 1).clamp(min=0)
    with torch.no_grad():
        ref = model(short)
        out = model(padded, attention_mask=mask, position_ids=pos)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out[:, 3:], ref, rtol=1e-5, atol=1e-5)


def test_logits_slice_and_hidden():
    model = tiny_model()
    x = torch.randint(2, 60, (2, 8))
    with torch.no_grad():
        full = model(x)
        torch.testing.assert_close(model(x, logits_slice=slice(-3, None)), full[:, -3:])
        assert model(x, return_hidden=True).shape == (2, 8, 32)


@pytest.mark.parametrize("mode", ["bidirectional", "causal", "block_causal"])
@pytest.mark.parametrize("part", [slice(-3, None), slice(2, 7), slice(0, 1)])
def test_logits_slice_trims_the_last_layer_without_changing_anything(mode, part):
    """The last layer computes outputs only for the sliced positions: the logits, the gradients and the keys
    and values a pass writes into a cache are those of the full pass (padding, custom positions, GQA)."""
    model = tiny_model(attention=mode, block_size=4 if mode == "block_causal" else None, qk_norm=True)
    x = torch.randint(2, 60, (2, 9), generator=torch.Generator().manual_seed(3))
    valid = torch.ones(2, 9, dtype=torch.bool)
    valid[1, :2] = False  # left padding
    pos = (torch.arange(9)[None] - torch.tensor([[0], [2]])).clamp(min=0)
    full = model(x, position_ids=pos, attention_mask=valid)
    full[:, part].sum().backward()
    grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    sliced = model(x, position_ids=pos, attention_mask=valid, logits_slice=part)
    torch.testing.assert_close(sliced, full[:, part], rtol=1e-5, atol=1e-5)
    sliced.sum().backward()
    for g, p in zip(grads, model.parameters()):
        torch.testing.assert_close(p.grad, g, rtol=1e-4, atol=1e-5)
    with torch.no_grad():
        caches = [KVCache.for_model(model, 2, 12) for _ in range(2)]
        model(x, position_ids=pos, attention_mask=valid, cache=caches[0])
        model(x, position_ids=pos, attention_mask=valid, cache=caches[1], logits_slice=part)
        for a, b in zip(caches[0].keys + caches[0].values, caches[1].keys + caches[1].values):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
        # A later pass against the cache (a decode step) sees the same keys.
        step = torch.randint(2, 60, (2, 2))
        outs = [model(step, position_ids=pos[:, -1:] + torch.arange(1, 3), cache=c, cache_start=9) for c in caches]
        torch.testing.assert_close(outs[0], outs[1], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_forward_on_cpu_in_dtype(dtype):
    model = tiny_model(attention="block_causal", block_size=4, qk_norm=True, attention_bias=True,
                       tie_word_embeddings=True).to(dtype)
    x = torch.randint(2, 60, (2, 10))
    with torch.no_grad():
        out = model(x)
    assert out.dtype == dtype and out.shape == (2, 10, 64)
    assert torch.isfinite(out.float()).all()


def test_gqa_and_parameter_count():
    cfg = tiny_config(num_attention_heads=4, num_key_value_heads=1, tie_word_embeddings=True, qk_norm=True,
                      attention_bias=True)
    from unmask.model import Transformer
    model = Transformer(cfg)
    assert sum(p.numel() for p in model.parameters()) == cfg.num_parameters()


@pytest.mark.parametrize("bad, field", [
    (dict(attention="sideways"), "attention"),
    (dict(attention="block_causal", block_size=None), "block_size"),
    (dict(num_key_value_heads=3), "num_key_value_heads"),
    (dict(mask_token_id=64), "mask_token_id"),
    (dict(hidden_size=0), "hidden_size"),
])
def test_config_rejects_bad_values(bad, field):
    with pytest.raises(ValueError, match=field):
        tiny_config(**bad)
