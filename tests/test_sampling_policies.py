"""Reveal rules, token sampling and SamplerConfig: pure functions checked on hand-made tensors."""

import math

import pytest
import torch

from unmask.errors import UnmaskError
from unmask.sampling import SamplerConfig
from unmask.sampling import policies as P
from unmask.sampling.config import resolve_cache
from unmask.sampling.rng import RowNoise


def settings(n=1, **kw):
    cfgs = [SamplerConfig(**kw) for _ in range(n)]
    return P.RowSettings.from_configs(cfgs, block_length=8, device="cpu")


def test_threshold_reveals_all_confident_and_always_the_best():
    conf = torch.tensor([[0.95, 0.2, 0.91, 0.5], [0.3, 0.4, 0.1, 0.35]])
    cand = torch.tensor([[True, True, True, True], [True, False, True, True]])
    got = P.reveal_threshold(conf, cand, torch.tensor([0.9, 0.9]))
    assert got.tolist() == [[True, False, True, False], [False, False, False, True]]  # row 1: best candidate only


def test_threshold_above_one_reveals_exactly_one():
    conf = torch.rand(5, 16, generator=torch.Generator().manual_seed(0))
    cand = torch.rand(5, 16, generator=torch.Generator().manual_seed(1)) < 0.7
    got = P.reveal_threshold(conf, cand, torch.full((5,), 1.5))
    assert got.sum(-1).tolist() == cand.any(-1).long().tolist()
    best = conf.masked_fill(~cand, -1).argmax(-1)
    assert all(got[i, best[i]] for i in range(5) if cand[i].any())


def test_reveal_top_counts_per_row_and_breaks_ties_leftmost():
    conf = torch.tensor([[0.5, 0.5, 0.9, 0.1], [0.2, 0.8, 0.8, 0.8]])
    cand = torch.ones(2, 4, dtype=torch.bool)
    got = P.reveal_top(conf, cand, torch.tensor([2, 2]))
    assert got.tolist() == [[True, False, True, False], [False, True, True, False]]


def test_steps_quota_is_llada_linear_schedule():
    initial, steps = torch.tensor([10, 3, 8]), torch.tensor([4, 4, 8])
    quotas = torch.stack([P.steps_quota(initial, steps, i) for i in range(4)])
    assert quotas[:, 0].tolist() == [3, 3, 2, 2]  # 10 over 4 steps, remainder first
    assert quotas[:, 1].tolist() == [1, 1, 1, 1]  # fewer masks than steps: never zero
    assert quotas[:, 2].tolist() == [1, 1, 1, 1]


def test_entropy_bound_accepts_prefix_in_confidence_order():
    conf = torch.tensor([[0.9, 0.8, 0.7, 0.6]])
    ent = torch.tensor([[0.1, 0.2, 0.3, 0.05]])
    cand = torch.ones(1, 4, dtype=torch.bool)
    # prefixes: {0}: 0; {0,1}: 0.3-0.2=0.1; {0,1,2}: 0.6-0.3=0.3; all: 0.65-0.3=0.35
    for bound, expect in [(0.0, 1), (0.09, 1), (0.11, 2), (0.29, 2), (0.31, 3), (0.36, 4)]:
        got = P.reveal_entropy_bounded(conf, ent, cand, torch.tensor([bound]))
        assert got.sum().item() == expect, bound
        assert got[0, :expect].all()


def test_filter_logits_top_k_and_top_p():
    logits = torch.log(torch.tensor([[[0.5, 0.3, 0.15, 0.05]]]))
    k2 = P.filter_logits(logits, torch.tensor([2]), torch.tensor([1.0]))
    assert torch.isinf(k2[0, 0, 2:]).all() and torch.isfinite(k2[0, 0, :2]).all()
    p = P.filter_logits(logits, torch.tensor([0]), torch.tensor([0.7]))  # 0.5 + 0.3 covers 0.7
    assert torch.isfinite(p[0, 0, :2]).all() and torch.isinf(p[0, 0, 2:]).all()
    tiny = P.filter_logits(logits, torch.tensor([0]), torch.tensor([0.01]))
    assert torch.isfinite(tiny[0, 0, 0]) and torch.isinf(tiny[0, 0, 1:]).all()


def test_greedy_sampling_is_argmax_with_probability_and_entropy():
    logits = torch.randn(2, 3, 7, generator=torch.Generator().manual_seed(0))
    tokens, conf, ent = P.sample_tokens(logits, settings(2, policy="entropy"))
    probs = logits.softmax(-1)
    assert torch.equal(tokens, logits.argmax(-1))
    torch.testing.assert_close(conf, probs.max(-1).values)
    torch.testing.assert_close(ent, -(probs * probs.log()).sum(-1))
    # only the entropy policy reads the entropy; the others get the same tokens and confidences without it
    tokens_t, conf_t, ent_t = P.sample_tokens(logits, settings(2, policy="threshold"))
    assert torch.equal(tokens_t, tokens) and torch.equal(conf_t, conf) and not ent_t.any()


def test_sampled_tokens_follow_the_distribution():
    probs = torch.tensor([0.6, 0.3, 0.1])
    n = 4000
    logits = probs.log().expand(1, n, 3)
    s = settings(1, temperature=1.0)
    noise = RowNoise("cpu").gumbel(7, (0, 0), (n, 3))[None]
    tokens, _, _ = P.sample_tokens(logits, s, noise)
    freq = torch.bincount(tokens[0], minlength=3).float() / n
    assert (freq - probs).abs().max() < 0.03


def test_low_temperature_concentrates_and_policies_mix_in_one_batch():
    cfgs = [SamplerConfig(policy="steps", steps_per_block=2), SamplerConfig(policy="threshold", threshold=0.5),
            SamplerConfig(policy="entropy", entropy_bound=0.0)]
    s = P.RowSettings.from_configs(cfgs, block_length=4, device="cpu")
    conf = torch.tensor([[0.9, 0.6, 0.7, 0.1]] * 3)
    ent = torch.zeros(3, 4)
    cand = torch.ones(3, 4, dtype=torch.bool)
    got = P.select_reveals(s, conf, ent, cand, initial_masked=torch.tensor([4, 4, 4]), step_index=0)
    assert got.sum(-1).tolist() == [2, 3, 4]  # quota 4/2; three >= 0.5; zero entropy accepts all


@pytest.mark.parametrize("bad, word", [
    (dict(policy="fastest"), "policy"), (dict(threshold=0.0), "threshold"), (dict(temperature=-1), "temperature"),
    (dict(top_p=1.5), "top_p"), (dict(max_new_tokens=0), "max_new_tokens"), (dict(block_length=-1), "block_length"),
    (dict(stop=("",)), "stop"), (dict(cache="disk"), "cache"), (dict(top_k=-2), "top_k"),
])
def test_config_rejects_bad_values(bad, word):
    with pytest.raises(UnmaskError, match=word):
        SamplerConfig(**bad)


def test_config_reads_generation_config_then_overrides():
    gen = {"threshold": 0.7, "block_size": 16, "steps": 4, "mask_token_id": 1, "do_sample": False, "stop": ["\n\n"]}
    cfg = SamplerConfig.from_generation_config(gen, threshold=None, temperature=0.5)
    assert (cfg.threshold, cfg.block_length, cfg.steps_per_block, cfg.temperature) == (0.7, 16, 4, 0.5)
    assert cfg.stop == ("\n\n",)
    assert SamplerConfig.from_generation_config({"block_length": 0}).block_length == 0


def test_cache_resolution_per_attention_mode():
    assert resolve_cache("auto", "bidirectional") == "dual"
    assert resolve_cache("auto", "block_causal") == "block"
    assert resolve_cache("auto", "causal") == "kv"
    with pytest.raises(UnmaskError, match="dual"):
        resolve_cache("dual", "causal")


def test_entropy_is_in_nats():
    logits = torch.zeros(1, 1, 4)
    _, conf, ent = P.sample_tokens(logits, settings(1, policy="entropy"))
    assert math.isclose(ent.item(), math.log(4), rel_tol=1e-6) and math.isclose(conf.item(), 0.25, rel_tol=1e-6)
