"""Token healing (sampling/healing.py): a prompt ending inside a merged token lets the answer's first token
re-choose the merge; the answer's text never repeats what the prompt already ends with."""

import pytest
import torch
from tokenizers import decoders

from unmask.data.special_tokens import SPECIAL_TOKENS
from unmask.sampling import Request, SamplerConfig, generate, stream
from unmask.sampling.healing import TokenHealer

from sampling_helpers import byte_tokenizer, merged_tokenizer, one_thread, random_lm

TOK = merged_tokenizer()
VOCAB = TOK.get_vocab_size()
ALLOWED = {TOK.token_to_id("):"), TOK.token_to_id("):Ċ")}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    with one_thread():
        yield


def test_healer_removes_the_last_token_and_allows_its_extensions():
    ids = TOK.encode("def f(x):").ids
    assert TOK.id_to_token(ids[-1]) == "):"
    prompt, healing = TokenHealer(TOK).heal(ids)
    assert prompt == ids[:-1]
    assert set(healing.allowed_ids) == ALLOWED and healing.text == "):"
    assert healing.strip("):\n    return x") == "\n    return x"
    mask = healing.vocab_mask(VOCAB, "cpu")
    assert mask.sum() == 2 and all(mask[i] for i in ALLOWED)


@pytest.mark.parametrize("prompt_ids", [
    lambda: TOK.encode("def f(x):\n").ids,  # "):\n" has no longer extension
    lambda: TOK.encode("):").ids,  # a single token: nothing would be left of the prompt
    lambda: TOK.encode("def f(x)").ids + [SPECIAL_TOKENS.index("<|endoftext|>")],  # a special token
])
def test_healer_leaves_prompts_it_cannot_heal(prompt_ids):
    assert TokenHealer(TOK).heal(prompt_ids()) is None


def test_healer_is_off_for_tokenizers_it_cannot_heal_exactly():
    assert TokenHealer(byte_tokenizer()).heal(byte_tokenizer().encode("def f(x):").ids) is None  # no merges
    other = merged_tokenizer()
    other.decoder = decoders.Metaspace()
    assert not TokenHealer(other).enabled


@pytest.mark.parametrize("attention,shift", [("bidirectional", False), ("bidirectional", True), ("causal", True)])
def test_first_answer_token_is_an_extension_and_the_text_drops_it(attention, shift):
    prompts = ["def f(x):", "class A(B):", "print(y):"]
    configs = dict(max_new_tokens=12, stop_token_ids=(), threshold=0.5)
    for seed in range(3):
        model = random_lm(seed=seed, attention=attention, shift_logits=shift, vocab_size=VOCAB)
        healed = generate(model, TOK, prompts, SamplerConfig(**configs))
        plain = generate(model, TOK, prompts, SamplerConfig(token_healing=False, **configs))
        for h, p in zip(healed, plain):
            assert h.token_ids[0] in ALLOWED
            assert h.text == TOK.decode(h.token_ids)[2:]  # without the "):" the prompt ends with
            assert h.prompt_tokens == p.prompt_tokens - 1
            assert p.text == TOK.decode(p.token_ids)
    # A random model rarely picks "):" or "):\n" on its own: the constraint is what put them there.
    assert any(r.token_ids[0] not in ALLOWED for r in plain)


@pytest.mark.parametrize("attention", ["bidirectional", "causal"])
def test_healed_rows_decode_as_alone_in_a_batch(attention):
    model = random_lm(seed=1, attention=attention, shift_logits=True, vocab_size=VOCAB)
    cfg = SamplerConfig(max_new_tokens=10, stop_token_ids=(), block_length=4, threshold=0.5)
    requests = [Request("def f(x):"), Request("x = 1\ny = 2"), Request("if a(b):")]
    batch = generate(model, TOK, requests, cfg)
    queued = generate(model, TOK, requests, cfg, max_batch_size=1)  # rows join a running batch one by one
    alone = [generate(model, TOK, [r], cfg)[0] for r in requests]
    assert [r.token_ids for r in batch] == [r.token_ids for r in alone] == [r.token_ids for r in queued]
    assert [r.text for r in batch] == [r.text for r in alone]


def test_stream_increments_add_up_to_the_healed_text_and_stop_strings_apply_after_healing():
    model = random_lm(seed=2, attention="bidirectional", shift_logits=True, vocab_size=VOCAB)
    cfg = SamplerConfig(max_new_tokens=16, stop_token_ids=(), block_length=4, threshold=0.5)
    events = list(stream(model, TOK, ["def f(x):"], cfg))
    result = events[-1].result
    assert "".join(e.text for e in events) == result.text
    assert not result.text.startswith("):")
    if result.text:
        stop = result.text[len(result.text) // 2:][:1]
        cut = generate(model, TOK, ["def f(x):"], cfg.replace(stop=(stop,)))[0]
        assert cut.text == result.text[:result.text.index(stop)]


def test_infill_and_token_id_prompts_are_not_healed():
    model = random_lm(seed=0, attention="bidirectional", shift_logits=True, vocab_size=VOCAB)
    cfg = SamplerConfig(max_new_tokens=6, stop_token_ids=(), infill_length=4)
    ids = TOK.encode("def f(x):").ids
    by_ids = generate(model, TOK, [Request(prompt_ids=ids)], cfg)[0]
    assert by_ids.prompt_tokens == len(ids)
    middle = generate(model, TOK, [Request("def f(x):", suffix="\n    pass")], cfg)[0]
    assert middle.prompt_tokens == len(ids)
