"""The decoders on tiny random models: caches against recomputation, batch invariance, seeds, stopping, infilling."""

import pytest
import torch

from unmask.errors import UnmaskError
from unmask.sampling import DiffusionDecoder, Request, RowSettings, SamplerConfig, build_canvas, generate

from sampling_helpers import one_thread, random_lm

MASK, EOS, PAD = 1, 0, 2
PROMPTS = [[40, 41, 42], [50, 51, 52, 53, 54, 55, 56], [60, 61, 62, 63, 64, 65, 66, 67, 68, 69, 70, 71]]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    with one_thread():
        yield


def ids(*seqs):
    return [Request(prompt_ids=list(s)) for s in seqs]


def lockstep(a: DiffusionDecoder, b: DiffusionDecoder) -> int:
    """Drive two decoders of the same batch together, checking logits and canvases at every step."""
    steps = 0
    while not a.finished:
        assert not b.finished and (a.block_index, a.step_in_block) == (b.block_index, b.step_in_block)
        s, e = a.blocks[a.block_index]
        torch.testing.assert_close(a.block_logits(s, e), b.block_logits(s, e), rtol=1e-4, atol=1e-4)
        a.step()
        b.step()
        assert torch.equal(a.canvas.tokens, b.canvas.tokens)
        assert a.poll() == b.poll()
        steps += 1
    assert b.finished
    return steps


def decoder(model, cache, prompts=PROMPTS, answers=(9, 14, 6), block_length=4, refresh_every=0, **cfg):
    cfg.setdefault("policy", "threshold")
    cfg.setdefault("threshold", 0.05)
    c = model.config
    canvas = build_canvas(prompts, list(answers), mask_id=MASK, pad_id=PAD, block_length=block_length,
                          align=c.block_size if c.attention == "block_causal" else None)
    settings = RowSettings.from_configs([SamplerConfig(**cfg)] * len(prompts), canvas.block_length, "cpu")
    return DiffusionDecoder(model, canvas, settings, cache=cache, refresh_every=refresh_every)


@pytest.mark.parametrize("shift", [False, True])
@pytest.mark.parametrize("cache", ["dual", "prefix"])
def test_cache_refreshed_every_step_equals_no_cache(cache, shift):
    model = random_lm(shift_logits=shift)
    kw = dict(policy="steps", steps_per_block=2)
    assert lockstep(decoder(model, "none", **kw), decoder(model, cache, refresh_every=1, **kw)) == 8


@pytest.mark.parametrize("shift", [False, True])
def test_dual_cache_first_step_of_each_block_equals_no_cache(shift):
    """Without per-step refresh, the canvases may drift apart, but a block's first step sees a fresh cache."""
    model = random_lm(shift_logits=shift)
    ref, dual = decoder(model, "none", policy="steps"), decoder(model, "dual", policy="steps")
    while not dual.finished:
        s, e = dual.blocks[dual.block_index]
        if dual.step_in_block == 0:
            ref.canvas.tokens.copy_(dual.canvas.tokens)
            torch.testing.assert_close(dual.block_logits(s, e), ref.block_logits(s, e), rtol=1e-4, atol=1e-4)
        dual.step()
        dual.poll()


@pytest.mark.parametrize("shift", [False, True])
def test_exact_block_cache_equals_recomputation(shift):
    model = random_lm(attention="block_causal", block_size=4, shift_logits=shift)
    kw = dict(policy="steps", steps_per_block=2)
    assert lockstep(decoder(model, "none", **kw), decoder(model, "block", **kw)) >= 8


def fed_lengths(model, dec) -> list[int]:
    """Columns fed to the model by each forward call while `dec` runs to its end."""
    lengths = []
    hook = model.register_forward_hook(lambda m, args, kwargs, out: lengths.append(args[0].shape[1]),
                                       with_kwargs=True)
    try:
        run_to_end(dec)
    finally:
        hook.remove()
    return lengths


@pytest.mark.parametrize("shift", [False, True])
def test_lazy_dual_cache_feeds_the_whole_canvas_once_then_the_block_before_with_each_block(shift):
    model = random_lm(shift_logits=shift)
    kw = dict(policy="steps", steps_per_block=2)
    lazy, dual = decoder(model, "dual-lazy", prompts=PROMPTS[:1], answers=(12,), **kw), \
        decoder(model, "dual", prompts=PROMPTS[:1], answers=(12,), **kw)
    W, k = lazy.canvas.width, int(shift)
    # three 4-column blocks, two steps each: the first block starts with the whole canvas (as dual's every block
    # does), a later one with the block before it and itself, its second step with itself
    assert fed_lengths(model, lazy) == [W, 4 + k, 8 + k, 4 + k, 8 + k, 4 + k]
    assert fed_lengths(model, dual) == [W, 4 + k, W, 4 + k, W, 4 + k]


def test_lazy_dual_cache_equals_dual_on_the_first_block_and_with_one_block():
    model = random_lm(shift_logits=True)
    kw = dict(policy="threshold", threshold=0.1)
    one_block = [run_to_end(decoder(model, cache, answers=(9, 14, 6), block_length=16, **kw)) for cache in
                 ("dual", "dual-lazy")]
    assert one_block[0] == one_block[1]
    lazy, dual = decoder(model, "dual-lazy", **kw), decoder(model, "dual", **kw)
    while dual.block_index == 0 and not dual.finished:
        s, e = dual.blocks[0]
        torch.testing.assert_close(lazy.block_logits(s, e), dual.block_logits(s, e))
        lazy.step(), dual.step()
        assert lazy.poll() == dual.poll()


@pytest.mark.parametrize("attention, cache", [
    ("bidirectional", "none"), ("bidirectional", "dual"), ("bidirectional", "prefix"), ("bidirectional", "dual-lazy"),
    ("block_causal", "block"), ("causal", "kv"),
])
def test_greedy_output_does_not_depend_on_the_batch(attention, cache):
    model = random_lm(attention=attention, block_size=4 if attention == "block_causal" else None,
                      shift_logits=attention == "causal")
    block = None if attention == "block_causal" else 4
    configs = [SamplerConfig(cache=cache, policy="threshold", threshold=0.05, max_new_tokens=9, block_length=block),
               SamplerConfig(cache=cache, policy="steps", steps_per_block=2, max_new_tokens=14, block_length=block),
               SamplerConfig(cache=cache, policy="entropy", entropy_bound=2.0, max_new_tokens=6, block_length=block)]
    requests = [Request(prompt_ids=p, config=c) for p, c in zip(PROMPTS, configs)]
    together = generate(model, None, requests)
    alone = [generate(model, None, [r])[0] for r in requests]
    reordered = generate(model, None, requests[::-1])[::-1]
    in_pairs = generate(model, None, requests, max_batch_size=2)
    for t, a, r, p, c in zip(together, alone, reordered, in_pairs, configs):
        assert t.token_ids == a.token_ids == r.token_ids == p.token_ids
        assert len(t.token_ids) <= c.max_new_tokens
        assert t.stats.forward_passes == a.stats.forward_passes


@pytest.mark.parametrize("attention, cache", [
    ("bidirectional", "none"), ("bidirectional", "dual"), ("bidirectional", "prefix"), ("bidirectional", "dual-lazy"),
    ("block_causal", "block"),
])
def test_rows_done_with_the_block_are_left_out_of_the_pass_and_change_nothing(attention, cache):
    model = random_lm(attention=attention, block_size=4 if attention == "block_causal" else None)
    block = None if attention == "block_causal" else 4
    fast = SamplerConfig(cache=cache, policy="threshold", threshold=1e-9, max_new_tokens=12, block_length=block)
    slow = SamplerConfig(cache=cache, policy="steps", steps_per_block=4, max_new_tokens=12, block_length=block)
    requests = [Request(prompt_ids=PROMPTS[0], config=fast), Request(prompt_ids=PROMPTS[1], config=slow),
                Request(prompt_ids=PROMPTS[2], config=fast)]
    rows_fed = []
    hook = model.register_forward_hook(lambda module, inputs, output: rows_fed.append(output.shape[0]))
    try:
        together = generate(model, None, requests)
    finally:
        hook.remove()
    # The fast rows finish each block in one step and wait out of the pass: each row is fed exactly in the
    # passes in which it had a position to decide.
    assert sum(rows_fed) == sum(t.stats.forward_passes for t in together) < 3 * len(rows_fed)
    for t, a in zip(together, [generate(model, None, [r])[0] for r in requests]):
        assert t.token_ids == a.token_ids and t.stats.forward_passes == a.stats.forward_passes


@pytest.mark.parametrize("attention", ["bidirectional", "causal"])
def test_sampling_is_determined_by_the_seed_alone(attention):
    model = random_lm(attention=attention, shift_logits=attention == "causal")
    cfg = SamplerConfig(temperature=1.0, top_p=0.9, seed=3, max_new_tokens=12, block_length=4, threshold=0.2)
    target = Request(prompt_ids=PROMPTS[1], config=cfg)
    first = generate(model, None, [target])[0].token_ids
    again = generate(model, None, [target])[0].token_ids
    others = [Request(prompt_ids=PROMPTS[0], config=cfg.replace(seed=9, temperature=0.0)),
              Request(prompt_ids=PROMPTS[2], config=cfg.replace(seed=1))]
    in_batch = generate(model, None, [others[0], target, others[1]])[1].token_ids
    assert first == again == in_batch
    other_seed = generate(model, None, [Request(prompt_ids=PROMPTS[1], config=cfg.replace(seed=4))])[0].token_ids
    assert other_seed != first


def test_random_order_steps_policy_is_seeded():
    model = random_lm()
    cfg = SamplerConfig(policy="steps", order="random", steps_per_block=4, max_new_tokens=8, block_length=8)
    a = generate(model, None, ids(PROMPTS[0]), cfg)[0]
    b = generate(model, None, ids(PROMPTS[0]), cfg)[0]
    assert a.token_ids == b.token_ids and a.stats.forward_passes == 4


def test_autoregressive_decoder_equals_naive_greedy_loop():
    model = random_lm(attention="causal", shift_logits=True)
    model.config.eos_token_id = 7  # a token this model emits now and then, so that some rows stop early
    cfg = SamplerConfig(max_new_tokens=15)
    results = generate(model, None, ids(*PROMPTS), cfg)
    for prompt, result in zip(PROMPTS, results):
        seq, expect = list(prompt), []
        with torch.no_grad():
            for _ in range(15):
                token = int(model(torch.tensor([seq]))[0, -1].argmax())
                if token == 7:
                    break
                expect.append(token)
                seq.append(token)
        assert result.token_ids == expect
        assert result.finish_reason == ("stop" if len(expect) < 15 else "length")
        assert result.stats.forward_passes == len(expect) + (len(expect) < 15)


@pytest.mark.parametrize("attention", ["bidirectional", "block_causal"])
def test_end_of_text_ends_the_answer_and_no_step_is_spent_after_it(attention):
    model = random_lm(attention=attention, block_size=4 if attention == "block_causal" else None)
    probe = generate(model, None, ids(PROMPTS[1]), SamplerConfig(max_new_tokens=16, threshold=2.0))[0].token_ids
    eos = probe[5]  # declare a token the model emits at position 5 the end-of-text token
    model.config.eos_token_id = eos
    result = generate(model, None, ids(PROMPTS[1]), SamplerConfig(max_new_tokens=16, threshold=2.0))[0]
    assert result.finish_reason == "stop" and eos not in result.token_ids
    # One token per step: a step for each token, one for the end, at most a few revealed past it before
    # the end was found, and none for the positions after it.
    assert len(result.token_ids) + 1 <= result.stats.forward_passes < 16


def test_threshold_above_one_reveals_one_token_per_step():
    model = random_lm()
    dec = decoder(model, "dual", threshold=1.5)
    while not dec.finished:
        before = dec.canvas.masked.sum(-1)
        active = (dec.canvas.masked[:, slice(*dec.blocks[dec.block_index])]).any(-1)
        dec.step()
        assert torch.equal(before - dec.canvas.masked.sum(-1), active.long())
        dec.poll()


def test_max_new_tokens_is_respected_by_every_decoder():
    for attention in ["bidirectional", "block_causal", "causal"]:
        model = random_lm(attention=attention, block_size=4 if attention == "block_causal" else None,
                          shift_logits=attention == "causal")
        for n in (1, 5, 13):
            whole = None if attention == "block_causal" else 0
            r = generate(model, None, ids(PROMPTS[0]), SamplerConfig(max_new_tokens=n, block_length=whole))[0]
            assert len(r.token_ids) == n and r.finish_reason == "length", (attention, n)


def test_infill_never_touches_prefix_or_suffix():
    model = random_lm()
    prefix, suffix = [40, 41, 42, 43, 44], [90, 91, 92, 93]
    canvas = build_canvas([prefix, prefix[:2]], [6, 3], [suffix, suffix[1:]], mask_id=MASK, pad_id=PAD, block_length=4)
    before = canvas.tokens.clone()
    settings = RowSettings.from_configs([SamplerConfig(threshold=0.05)] * 2, 4, "cpu", default_stop_ids=(EOS,))
    dec = DiffusionDecoder(model, canvas, settings, cache="dual", eos_fill=[False, False])
    while not dec.finished:
        dec.step()
        dec.poll()
    assert torch.equal(canvas.tokens[~canvas.answer], before[~canvas.answer])
    assert not canvas.masked.any()
    row0 = canvas.rows[0]
    assert canvas.tokens[0, row0.answer_end:row0.end].tolist() == suffix


def test_infill_through_generate_fixed_and_variable_length():
    model = random_lm()
    fixed = generate(model, None, [Request(prompt_ids=[40, 41, 42], suffix_ids=[90, 91],
                                           config=SamplerConfig(infill_length=5))])[0]
    assert fixed.infill_length == 5 and len(fixed.token_ids) <= 5 and fixed.finish_reason == "stop"
    cfg = SamplerConfig(infill_candidates=(2, 4, 8), max_new_tokens=6)
    variable = generate(model, None, [Request(prompt_ids=[40, 41, 42], suffix_ids=[90, 91], config=cfg)])[0]
    assert variable.infill_length in (2, 4)  # 8 exceeds max_new_tokens
    alone = [generate(model, None, [Request(prompt_ids=[40, 41, 42], suffix_ids=[90, 91],
                                            config=cfg.replace(infill_length=m))])[0] for m in (2, 4)]
    # Each candidate costs what it costs alone, plus its junction-scoring pass.
    assert variable.stats.forward_passes == sum(a.stats.forward_passes + 1 for a in alone)
    assert variable.token_ids in [a.token_ids for a in alone]


def test_autoregressive_infill_uses_the_fim_format_and_block_models_refuse():
    ar = random_lm(attention="causal", shift_logits=True)
    r = generate(ar, None, [Request(prompt_ids=[40, 41], suffix_ids=[90])], SamplerConfig(max_new_tokens=4))[0]
    assert r.prompt_tokens == 2 + 1 + 3 and r.infill_length is None
    block = random_lm(attention="block_causal", block_size=4)
    with pytest.raises(UnmaskError, match="cannot infill"):
        generate(block, None, [Request(prompt_ids=[40, 41], suffix_ids=[90])])


def test_bad_requests_are_clear_errors():
    model = random_lm()
    with pytest.raises(UnmaskError, match="empty"):
        generate(model, None, [Request(prompt_ids=[])])
    with pytest.raises(UnmaskError, match="context of 96"):
        generate(model, None, [Request(prompt_ids=[40] * 96)])
    with pytest.raises(UnmaskError, match="tokenizer"):
        generate(model, None, ["text needs a tokenizer"])
    block = random_lm(attention="block_causal", block_size=4)
    with pytest.raises(UnmaskError, match="block_size 4"):
        generate(block, None, ids([40, 41]), SamplerConfig(block_length=8))


def test_long_prompt_clamps_the_answer_to_the_context():
    model = random_lm()
    r = generate(model, None, ids([40] * 90), SamplerConfig(max_new_tokens=50))[0]
    assert len(r.token_ids) == 6


def run_to_end(dec, merge_after: int | None = None, newcomer=None):
    """Step a decoder to the end; after `merge_after` steps, admit `newcomer` at the next chance."""
    steps = 0
    while not dec.finished:
        boundary = getattr(dec, "at_block_boundary", True)
        if newcomer is not None and steps >= merge_after and boundary:
            dec.merge(newcomer)
            newcomer = None
        dec.step()
        dec.poll()
        steps += 1
    assert newcomer is None, "the batch ended before the newcomer could join"
    return [dec.answer_ids(b) for b in range(dec.batch_size)]


@pytest.mark.parametrize("attention, cache", [
    ("bidirectional", "none"), ("bidirectional", "dual"), ("bidirectional", "prefix"), ("bidirectional", "dual-lazy"),
    ("block_causal", "block"),
])
def test_rows_admitted_at_a_block_boundary_decode_as_alone(attention, cache):
    model = random_lm(attention=attention, block_size=4 if attention == "block_causal" else None, shift_logits=True)
    first, later = (PROMPTS[0], PROMPTS[2]), (PROMPTS[1], [80, 81, 82, 83, 84])
    kw = dict(policy="threshold", threshold=0.1)
    running = decoder(model, cache, prompts=list(first), answers=(14, 10), **kw)
    newcomer = decoder(model, cache, prompts=list(later), answers=(9, 6), **kw)
    merged = run_to_end(running, merge_after=3, newcomer=newcomer)
    alone = [run_to_end(decoder(model, cache, prompts=[p], answers=(m,), **kw))[0]
             for p, m in zip(first + later, (14, 10, 9, 6))]
    assert merged == alone


@pytest.mark.parametrize("newcomer_prompt", [[80, 81], list(range(80, 100))])
def test_lazy_dual_cache_keeps_a_running_batchs_keys_when_rows_join(newcomer_prompt):
    """The running rows keep their (stale by design) keys, moved with their columns, whichever batch is padded;
    only the newcomers get the whole canvas, so every row decodes as alone."""
    model = random_lm(shift_logits=True)
    kw = dict(policy="steps", steps_per_block=2)
    running = decoder(model, "dual-lazy", prompts=[PROMPTS[1], PROMPTS[0]], answers=(16, 12), **kw)
    newcomer = decoder(model, "dual-lazy", prompts=[newcomer_prompt], answers=(8,), **kw)
    merged = run_to_end(running, merge_after=4, newcomer=newcomer)
    alone = [run_to_end(decoder(model, "dual-lazy", prompts=[p], answers=(m,), **kw))[0]
             for p, m in ((PROMPTS[1], 16), (PROMPTS[0], 12), (newcomer_prompt, 8))]
    assert merged == alone

def test_rows_admitted_into_an_autoregressive_batch_decode_as_alone():
    from unmask.sampling import ARDecoder

    model = random_lm(attention="causal", shift_logits=True)
    settings = lambda n: RowSettings.from_configs([SamplerConfig()] * n, 1, "cpu")  # noqa: E731
    make = lambda ps, ms: ARDecoder(model, ps, ms, settings(len(ps)), pad_id=PAD)  # noqa: E731
    merged = run_to_end(make([PROMPTS[0], PROMPTS[2]], [12, 7]), merge_after=3,
                        newcomer=make([PROMPTS[1], [80, 81]], [9, 15]))
    alone = [run_to_end(make([p], [m]))[0] for p, m in zip([PROMPTS[0], PROMPTS[2], PROMPTS[1], [80, 81]],
                                                              [12, 7, 9, 15])]
    assert merged == alone


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("attention, cache", [("bidirectional", "dual"), ("block_causal", "block"), ("causal", "kv")])
def test_on_cuda_outputs_are_batch_invariant_and_seeded(attention, cache):
    model = random_lm(attention=attention, block_size=4 if attention == "block_causal" else None,
                      shift_logits=attention == "causal").cuda()
    cfg = SamplerConfig(cache=cache, max_new_tokens=10, threshold=0.1,
                        block_length=None if attention == "block_causal" else 4)
    requests = [Request(prompt_ids=p, config=cfg.replace(temperature=t, seed=i))
                for i, (p, t) in enumerate(zip(PROMPTS, (0.0, 1.0, 0.7)))]
    together = generate(model, None, requests)
    alone = [generate(model, None, [r])[0] for r in requests]
    assert [r.token_ids for r in together] == [r.token_ids for r in alone]
