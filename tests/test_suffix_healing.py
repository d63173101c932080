"""Suffix healing (sampling/infill.py): a text suffix that starts with a newline gives it to the middle, so the
middle's last token may merge a line's end with its newline, and one trailing newline comes off the answer."""

import pytest
import torch

from unmask.sampling import Request, SamplerConfig, generate, stream
from unmask.sampling.infill import fim_prompt, healed_suffix
from unmask.sampling.runner import Codec, Row, plan_rows

from sampling_helpers import merged_tokenizer, one_thread, random_lm

TOK = merged_tokenizer()
VOCAB = TOK.get_vocab_size()


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    with one_thread():
        yield


def test_healed_suffix_moves_one_leading_newline_only():
    on, off = SamplerConfig(), SamplerConfig(suffix_healing=False)
    assert healed_suffix("\n    pass\n", on) == ("    pass\n", True)
    assert healed_suffix("\n\nx = 1", on) == ("\nx = 1", True)
    assert healed_suffix("\n", on) == ("\n", False)  # an infill keeps a suffix to end at
    assert healed_suffix(" pass\n", on) == (" pass\n", False)
    assert healed_suffix("\n    pass\n", off) == ("\n    pass\n", False)


@pytest.mark.parametrize("attention", ["bidirectional", "causal"])
def test_the_model_sees_the_suffix_from_the_next_line(attention):
    model = random_lm(attention=attention, shift_logits=True, vocab_size=VOCAB)
    codec = Codec(TOK, model.config)
    prefix, suffix = "def f(x", "\n    return x\n"
    enc = lambda text: TOK.encode(text, add_special_tokens=False).ids  # noqa: E731
    bos = [model.config.bos_token_id] if model.config.bos_token_id is not None else []
    for healing, seen in ((True, suffix[1:]), (False, suffix)):
        cfg = SamplerConfig(suffix_healing=healing, infill_length=4)
        [row] = plan_rows(model, codec, "r", Request(prefix, suffix=suffix), cfg)
        assert row.newline_moved is healing
        if attention == "causal":
            assert row.prompt_ids == fim_prompt(bos + enc(prefix), enc(seen)) and row.kind == "fim"
        else:
            assert row.suffix_ids == enc(seen) and row.prompt_ids == bos + enc(prefix)
    # ids given by the caller are the model's view as they are; a request by ids alone moves nothing
    [row] = plan_rows(model, codec, "r", Request(prompt_ids=enc(prefix), suffix_ids=enc(suffix)),
                      SamplerConfig(infill_length=4))
    assert not row.newline_moved


def test_the_answer_loses_the_moved_newline_once():
    moved = Row("r", SamplerConfig(), [1], 4, [2], "middle", newline_moved=True)
    kept = Row("r", SamplerConfig(), [1], 4, [2], "middle")
    ids = TOK.encode("(x):\n").ids
    assert TOK.id_to_token(ids[-1]) == "):Ċ"  # the merge a middle could not end with before
    assert moved.text(TOK.decode, ids) == "(x):" and kept.text(TOK.decode, ids) == "(x):\n"
    assert moved.text(TOK.decode, TOK.encode("x\n\n").ids) == "x\n"
    assert moved.text(TOK.decode, TOK.encode("x = 1").ids) == "x = 1"  # no newline: returned as it is


@pytest.mark.parametrize("attention", ["bidirectional", "causal"])
@pytest.mark.parametrize("newline_bias", [0.0, 30.0])
def test_results_and_streams_drop_the_newline_the_middle_ends_with(attention, newline_bias):
    """Random models, and the same with "):\n" pushed up so that every middle ends with a newline."""
    prefix, suffix = "def f(x", "\n    return x\n"
    ended_with_newline = 0
    for seed in range(4):
        model = random_lm(seed=seed, attention=attention, shift_logits=True, vocab_size=VOCAB)
        bias = torch.zeros(VOCAB)
        bias[TOK.token_to_id("):Ċ")] = newline_bias
        model.lm_head.register_forward_hook(lambda module, args, out: out + bias)
        cfg = SamplerConfig(infill_length=3, max_new_tokens=3, threshold=0.5, stop_token_ids=())
        healed = generate(model, TOK, [Request(prefix, suffix=suffix)], cfg)[0]
        decoded = TOK.decode(healed.token_ids)
        ended_with_newline += decoded.endswith("\n")
        assert healed.text == (decoded[:-1] if decoded.endswith("\n") else decoded)
        events = list(stream(model, TOK, [Request(prefix, suffix=suffix)], cfg))
        assert "".join(e.text for e in events) == events[-1].result.text == healed.text
        plain = generate(model, TOK, [Request(prefix, suffix=suffix)], cfg.replace(suffix_healing=False))[0]
        assert plain.text == TOK.decode(plain.token_ids)
    if newline_bias:
        assert ended_with_newline == 4
