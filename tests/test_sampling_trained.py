"""Sampling on tiny models trained in the test (a few seconds each): parallel decoding, stops, streaming."""

import random

import pytest

from unmask.sampling import BatchRunner, Request, SamplerConfig, generate, stream
from unmask.sampling.streaming import MASK_PLACEHOLDER

from sampling_helpers import LETTERS, PERIOD, byte_tokenizer, one_thread, train_tiny


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    with one_thread():
        yield


@pytest.fixture(scope="module")
def tok():
    return byte_tokenizer()


@pytest.fixture(scope="module")
def diffusion():
    # 500 steps: at 300 the run learnt the motifs on an AVX-512 CPU but not on an AVX2 one (float kernels differ;
    # measured there: 300 steps 3/8 motifs and 2.0 tokens/forward, 500 steps 6/8 and 4.6, 800 steps 8/8 and 8.0)
    return train_tiny("bidirectional", steps=500)


@pytest.fixture(scope="module")
def twin():
    return train_tiny("causal")


def motif_prompts(n=8, seed=0):
    rnd = random.Random(seed)
    motifs = ["".join(rnd.choice(LETTERS) for _ in range(PERIOD)) for _ in range(n)]
    return [(m * 6)[:8] for m in motifs], [(m * 6)[8:24] for m in motifs]


def tokens_per_forward(results):
    return sum(r.stats.tokens for r in results) / sum(r.stats.forward_passes for r in results)


def test_threshold_decoding_reveals_several_tokens_per_forward(diffusion, tok):
    prompts, truth = motif_prompts()
    base = SamplerConfig(max_new_tokens=16, block_length=8)
    vanilla = generate(diffusion, tok, prompts, base.replace(policy="steps"))
    fast = generate(diffusion, tok, prompts, base.replace(policy="threshold", threshold=0.9))
    eb = generate(diffusion, tok, prompts, base.replace(policy="entropy", entropy_bound=0.5))
    assert tokens_per_forward(vanilla) == 1.0
    assert tokens_per_forward(fast) >= 2.5
    assert tokens_per_forward(eb) >= 2.5
    # The task is learnt: most answers continue their motif exactly.
    assert sum(r.text == t for r, t in zip(fast, truth)) >= len(truth) // 2
    assert sum(r.text == t for r, t in zip(vanilla, truth)) >= 1


def test_autoregressive_twin_learns_the_task_at_one_token_per_forward(twin, tok):
    prompts, truth = motif_prompts()
    results = generate(twin, tok, prompts, SamplerConfig(max_new_tokens=16))
    assert sum(r.text == t for r, t in zip(results, truth)) >= len(truth) // 2
    assert all(r.stats.forward_passes == 16 and r.stats.tokens == 16 for r in results)


@pytest.mark.parametrize("which", ["diffusion", "twin"])
@pytest.mark.parametrize("stop", ["da", "c", "dabc"])
def test_stop_strings_stop(which, stop, request, tok):
    model = request.getfixturevalue(which)
    cfg = SamplerConfig(max_new_tokens=16, block_length=8)
    full = generate(model, tok, ["abcdabcd"], cfg)[0]
    cut = generate(model, tok, ["abcdabcd"], cfg.replace(stop=(stop, "zz")))[0]
    assert stop in full.text  # the test needs a stop string that the full answer contains
    assert cut.text == full.text[: full.text.index(stop)]
    assert cut.finish_reason == "stop" and stop not in cut.text
    assert cut.stats.forward_passes <= full.stats.forward_passes
    assert tok.decode(cut.token_ids).startswith(cut.text)


@pytest.mark.parametrize("which", ["diffusion", "twin"])
def test_stream_final_text_adds_up_to_the_result(which, request, tok):
    model = request.getfixturevalue(which)
    prompts, _ = motif_prompts(3, seed=1)
    configs = [SamplerConfig(max_new_tokens=16, block_length=8), SamplerConfig(max_new_tokens=12, stop=("ab",)),
               SamplerConfig(max_new_tokens=9, policy="entropy", temperature=0.8, seed=5)]
    requests = [Request(p, config=c) for p, c in zip(prompts, configs)]
    texts = {i: "" for i in range(3)}
    results, steps = {}, {i: [] for i in range(3)}
    saw_mask = False
    for event in stream(model, tok, requests):
        assert event.index not in results  # nothing after a request's last event
        texts[event.index] += event.text
        steps[event.index].append(event.step)
        saw_mask |= MASK_PLACEHOLDER in (event.draft or "")
        if event.done:
            results[event.index] = event.result
    expected = generate(model, tok, requests)
    for i in range(3):
        assert texts[i] == results[i].text == expected[i].text
        assert steps[i] == sorted(steps[i])
    assert saw_mask == (which == "diffusion")


def test_infill_returns_only_the_middle_and_keeps_the_sides(diffusion, tok):
    prefix, suffix = "abcdabcdab", "abcd"
    fixed = generate(diffusion, tok, [Request(prefix, suffix, SamplerConfig(infill_length=2))])[0]
    assert fixed.infill_length == 2 and len(fixed.token_ids) <= 2
    variable = generate(diffusion, tok, [Request(prefix, suffix, SamplerConfig(infill_candidates=(2, 3, 6)))])[0]
    assert variable.infill_length in (2, 3, 6)
    joined = prefix + variable.text + suffix
    assert joined.startswith(prefix) and joined.endswith(suffix)


@pytest.mark.parametrize("which", ["diffusion", "twin"])
def test_runner_admits_and_cancels_requests_mid_run(which, request, tok):
    model = request.getfixturevalue(which)
    cfg = SamplerConfig(max_new_tokens=16, block_length=8, threshold=0.9)
    prompts, _ = motif_prompts(3, seed=2)
    late = Request(prompts[2], config=cfg.replace(stop=(prompts[2][1:3],), max_new_tokens=12))  # in its motif
    runner = BatchRunner(model, tok, emit=True)
    runner.admit(runner.plan("a", Request(prompts[0]), cfg) + runner.plan("b", Request(prompts[1]), cfg))
    outcomes, streamed = {}, {"b": "", "c": ""}

    def collect(updates):
        for u in updates:
            assert u.row.request != "a" or not cancelled
            if u.outcome is not None:
                outcomes[u.row.request] = u.outcome
            if u.row.request in streamed:
                streamed[u.row.request] += u.event.text if u.event else u.final_text

    cancelled = False
    collect(runner.step())
    runner.admit(runner.plan("c", late, late.config))  # joins at the next block boundary
    runner.cancel("a")
    cancelled = True
    while runner.busy:
        collect(runner.step())
    assert set(outcomes) == {"b", "c"}
    alone = generate(model, tok, [Request(prompts[1]), late], cfg)
    assert [outcomes["b"].text, outcomes["c"].text] == [r.text for r in alone]
    assert [streamed["b"], streamed["c"]] == [r.text for r in alone]
    assert outcomes["c"].finish_reason == "stop"
