"""OpenAI's frequency and presence penalties in both decoders, checked against step-by-step references."""

import pytest
import torch

from unmask.sampling import Request, SamplerConfig, generate
from unmask.sampling.policies import RowSettings, apply_penalties, token_counts

from sampling_helpers import one_thread, random_lm

PROMPT = [40, 41, 42, 43, 44]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    with one_thread():
        yield


def test_penalty_formula():
    tokens = torch.tensor([[3, 1, 3, 3], [0, 0, 2, 2]])
    counted = torch.tensor([[True, True, True, False], [False, True, True, True]])
    counts = token_counts(tokens, counted, 5)
    assert counts.tolist() == [[0, 1, 0, 2, 0], [1, 0, 2, 0, 0]]
    settings = RowSettings.from_configs([SamplerConfig(frequency_penalty=0.5, presence_penalty=1.0),
                                         SamplerConfig()], 4, "cpu")
    out = apply_penalties(torch.zeros(2, 1, 5), counts, settings)
    assert out[0, 0].tolist() == [0, -1.5, 0, -2.0, 0] and out[1, 0].tolist() == [0] * 5


def _ar_reference(model, prompt, n, freq, pres):
    seq = list(prompt)
    for _ in range(n):
        logits = model(torch.tensor([seq]))[0, -1].float()
        counts = torch.bincount(torch.tensor(seq[len(prompt):], dtype=torch.long), minlength=logits.shape[0])
        logits = logits - freq * counts - pres * (counts > 0).float()
        seq.append(int(logits.argmax()))
    return seq[len(prompt):]


def _diffusion_reference(model, prompt, n, freq, pres):
    """One token per step over the whole answer: the most confident masked position, after the penalties."""
    mask = model.config.mask_token_id
    seq = list(prompt) + [mask] * n
    masked = [False] * len(prompt) + [True] * n
    for _ in range(n):
        logits = model(torch.tensor([seq]))[0].float()
        revealed = [t for t, m in zip(seq[len(prompt):], masked[len(prompt):]) if not m]
        counts = torch.bincount(torch.tensor(revealed, dtype=torch.long), minlength=logits.shape[-1])
        probs = torch.softmax(logits - freq * counts - pres * (counts > 0).float(), -1)
        conf, tok = probs.max(-1)
        conf = torch.where(torch.tensor(masked), conf, torch.full_like(conf, -1.0))
        i = int(conf.argmax())
        seq[i], masked[i] = int(tok[i]), False
    return seq[len(prompt):]


@pytest.mark.parametrize("freq,pres", [(0.0, 0.0), (1.5, 0.0), (0.0, 2.0), (0.7, 0.7)])
def test_autoregressive_penalties_match_the_reference(freq, pres):
    model = random_lm(seed=3, attention="causal", shift_logits=True)
    cfg = SamplerConfig(max_new_tokens=12, stop_token_ids=(), frequency_penalty=freq, presence_penalty=pres)
    got = generate(model, None, [Request(prompt_ids=PROMPT)], cfg)[0].token_ids
    assert got == _ar_reference(model, PROMPT, 12, freq, pres)


@pytest.mark.parametrize("freq,pres", [(0.0, 0.0), (1.5, 0.0), (0.0, 2.0)])
def test_diffusion_penalties_match_the_reference(freq, pres):
    model = random_lm(seed=4)
    cfg = SamplerConfig(max_new_tokens=10, stop_token_ids=(), threshold=2.0, block_length=0, cache="none",
                        frequency_penalty=freq, presence_penalty=pres)
    got = generate(model, None, [Request(prompt_ids=PROMPT)], cfg)[0].token_ids
    assert got == _diffusion_reference(model, PROMPT, 10, freq, pres)


def test_penalties_change_answers_that_repeat_and_rows_decode_as_alone():
    model = random_lm(seed=4)
    base = SamplerConfig(max_new_tokens=16, stop_token_ids=(), block_length=8)
    plain = generate(model, None, [Request(prompt_ids=PROMPT)], base)[0].token_ids
    assert len(set(plain)) < len(plain)  # this random model repeats itself...
    strong = base.replace(presence_penalty=2.0)
    penalised = generate(model, None, [Request(prompt_ids=PROMPT)], strong)[0].token_ids
    assert len(set(penalised)) > len(set(plain))  # ...and repeats less when penalised
    mixed = generate(model, None, [Request(prompt_ids=PROMPT, config=strong), Request(prompt_ids=PROMPT[1:])], base)
    assert mixed[0].token_ids == penalised
    assert mixed[1].token_ids == generate(model, None, [Request(prompt_ids=PROMPT[1:])], base)[0].token_ids


def test_penalties_outside_openais_range_are_refused():
    from unmask.errors import UnmaskError

    with pytest.raises(UnmaskError, match="frequency_penalty"):
        SamplerConfig(frequency_penalty=2.5)
    with pytest.raises(UnmaskError, match="presence_penalty"):
        SamplerConfig(presence_penalty=-3)
