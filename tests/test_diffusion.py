"""The diffusion math: noising, losses, the block-diffusion layout, FIM, and the likelihood bound
checked against exact computations on models small enough to enumerate."""

import itertools
import math

import pytest
import torch

from conftest import tiny_model
from unmask.data.special_tokens import ENDOFTEXT_ID, FIM_MIDDLE_ID, FIM_PREFIX_ID, FIM_SUFFIX_ID
from unmask.diffusion import (apply_mask, ar_nll, bits_per_byte, block_causal, block_diagonal,
                              block_diffusion_inputs, block_diffusion_mask, block_order_nelbo_estimates,
                              block_output_logits, confidence_order_nll, count_masks, fim_rewrite, first_token_given,
                              left_to_right_nll, masked_diffusion_loss, nelbo_draws, nelbo_estimates,
                              next_token_loss, offset_block_causal, stratified_times, token_mask)

MASK = 3  # the enumerable models: vocabulary {0, 1, 2} plus the mask token 3


def small_model(seed=0, **overrides):
    return tiny_model(seed, vocab_size=4, mask_token_id=MASK, max_position_embeddings=16, **overrides)


# ---------------------------------------------------------------- noising


def test_stratified_times_cover_the_interval_evenly():
    t = stratified_times(torch.tensor(0.37), 8, eps=0.1)
    assert t.shape == (8,) and (t >= 0.1).all() and (t < 1).all()
    gaps = t.sort().values.diff()
    assert torch.allclose(gaps, torch.full_like(gaps, 0.9 / 8), atol=1e-6)


def test_token_mask_follows_t_and_respects_maskable():
    g = torch.Generator().manual_seed(0)
    u = torch.rand(4, 20000, generator=g)
    t = torch.tensor([0.0, 0.25, 0.5, 1.0])
    masked = token_mask(u, t)
    assert torch.allclose(masked.float().mean(1), t, atol=0.01)
    maskable = first_token_given(20000)
    assert not token_mask(u, t, maskable)[:, 0].any()
    x_t = apply_mask(torch.zeros(4, 20000, dtype=torch.long), masked, 9)
    assert torch.equal(x_t == 9, masked)


def test_count_masks_mask_exactly_k_per_group_with_weight_n_over_k():
    keys = torch.rand(3, 12, generator=torch.Generator().manual_seed(1))
    count_u = torch.tensor([[0.0, 0.5, 0.99], [0.3, 0.3, 0.3], [0.99, 0.0, 0.6]])
    maskable = first_token_given(12)
    masked, weight = count_masks(keys, count_u, maskable, group_size=4)
    n = torch.tensor([3.0, 4.0, 4.0])
    k = 1 + torch.floor(n * count_u)
    assert torch.equal(masked.view(3, 3, 4).sum(-1).float(), k)
    assert not masked[:, 0].any()
    for row in range(3):
        for g in range(3):
            w = weight[row, 4 * g : 4 * g + 4][masked[row, 4 * g : 4 * g + 4]]
            assert torch.allclose(w, n[g] / k[row, g])
    assert (weight[~masked] == 0).all()


# ---------------------------------------------------------------- losses


def _loop_loss(logits, x0, masked, t, shift):
    total, slots = 0.0, 0
    B, L, _ = logits.shape
    for b in range(B):
        for i in range(1 if shift else 0, L):
            slots += 1
            if masked[b, i]:
                row = logits[b, i - 1] if shift else logits[b, i]
                total += -torch.log_softmax(row, -1)[x0[b, i]].item() / t[b].item()
    return total / slots


@pytest.mark.parametrize("shift", [False, True])
def test_masked_diffusion_loss_is_the_1_over_t_weighted_ce_per_token(shift):
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(3, 7, 11, generator=g)
    x0 = torch.randint(0, 11, (3, 7), generator=g)
    t = torch.tensor([0.2, 0.6, 0.9])
    masked = token_mask(torch.rand(3, 7, generator=g), t, first_token_given(7) if shift else None)
    got = masked_diffusion_loss(logits, x0, masked, t, shift_logits=shift)
    assert got.item() == pytest.approx(_loop_loss(logits, x0, masked, t, shift), rel=1e-5)


def test_shifted_loss_refuses_a_masked_first_token():
    masked = torch.ones(1, 4, dtype=torch.bool)
    with pytest.raises(AssertionError):
        masked_diffusion_loss(torch.zeros(1, 4, 5), torch.zeros(1, 4, dtype=torch.long), masked,
                              torch.ones(1), shift_logits=True)


def test_next_token_loss_matches_a_loop():
    g = torch.Generator().manual_seed(3)
    logits, x = torch.randn(2, 6, 9, generator=g), torch.randint(0, 9, (2, 6), generator=g)
    want = sum(-torch.log_softmax(logits[b, j - 1], -1)[x[b, j]].item() for b in range(2) for j in range(1, 6)) / 10
    assert next_token_loss(logits, x).item() == pytest.approx(want, rel=1e-5)


# ---------------------------------------------------------------- block diffusion layout


def test_block_mask_literal_for_length_4_block_2():
    # rows: queries x_t[0..3], x_0[0..3]; columns: keys in the same order. 1 = may attend.
    want = torch.tensor([
        [1, 1, 0, 0, 0, 0, 0, 0],
        [1, 1, 0, 0, 0, 0, 0, 0],
        [0, 0, 1, 1, 1, 1, 0, 0],
        [0, 0, 1, 1, 1, 1, 0, 0],
        [0, 0, 0, 0, 1, 1, 0, 0],
        [0, 0, 0, 0, 1, 1, 0, 0],
        [0, 0, 0, 0, 1, 1, 1, 1],
        [0, 0, 0, 0, 1, 1, 1, 1],
    ], dtype=torch.bool)
    assert torch.equal(block_diffusion_mask(4, 2), want)


@pytest.mark.parametrize("length,block", [(12, 4), (12, 3), (8, 1), (6, 6)])
def test_block_mask_position_by_position(length, block):
    mask = block_diffusion_mask(length, block)
    bd, obc, bc = block_diagonal(length, block), offset_block_causal(length, block), block_causal(length, block)
    for q in range(2 * length):
        for k in range(2 * length):
            q_noisy, k_noisy = q < length, k < length
            qb, kb = (q % length) // block, (k % length) // block
            if q_noisy:  # a noisy token sees its own noisy block and the clean copy of earlier blocks
                allowed = (k_noisy and kb == qb) or (not k_noisy and kb < qb)
            else:  # a clean token sees the clean copy of its own and earlier blocks, never noise
                allowed = not k_noisy and kb <= qb
            assert bool(mask[q, k]) == allowed, (q, k)
            assert bool(bd[q, k]) == ((q_noisy == k_noisy) and qb == kb)
            assert bool(obc[q, k]) == (q_noisy and not k_noisy and kb < qb)
            assert bool(bc[q, k]) == (not q_noisy and not k_noisy and kb <= qb)
    with pytest.raises(ValueError):
        block_diffusion_mask(10, 4)


def test_block_layout_matches_block_causal_forwards():
    """Clean half == a block_causal forward of x0; noisy block b == a block_causal forward of
    [x0 blocks < b ; x_t block b]: what a block-by-block sampler with an exact cache computes."""
    L, S = 8, 2
    model = tiny_model(4, attention="block_causal", block_size=S)
    g = torch.Generator().manual_seed(5)
    x0 = torch.randint(0, 60, (2, L), generator=g)
    x_t = apply_mask(x0, torch.rand(2, L, generator=g) < 0.5, 63)
    ids, positions, attn = block_diffusion_inputs(x_t, x0, S)
    assert positions[0].tolist() == list(range(L)) * 2
    with torch.no_grad():
        out = model(ids, position_ids=positions, attn_mask=attn)
        torch.testing.assert_close(out[:, L:], model(x0), atol=1e-5, rtol=1e-5)
        for b in range(L // S):
            prefix = torch.cat([x0[:, : b * S], x_t[:, b * S : (b + 1) * S]], dim=1)
            torch.testing.assert_close(out[:, b * S : (b + 1) * S], model(prefix)[:, b * S :], atol=1e-5, rtol=1e-5)


def test_block_output_logits_shifted_take_the_clean_last_position_of_each_block():
    logits = torch.arange(2 * 6, dtype=torch.float32).view(1, 12, 1)  # noisy 0..5, clean 6..11
    assert block_output_logits(logits, 6, 3, False).flatten().tolist() == [0, 1, 2, 3, 4, 5]
    assert block_output_logits(logits, 6, 3, True).flatten().tolist() == [0, 1, 8, 3, 4, 11]


# ---------------------------------------------------------------- fill-in-the-middle


def test_fim_rewrite_keeps_length_and_content():
    L = 16
    x = torch.arange(100, 100 + 3 * L).view(3, L)
    apply = torch.tensor([True, False, True])
    cuts = torch.tensor([[0.2, 0.7], [0.5, 0.5], [0.0, 0.999]])
    out = fim_rewrite(x, apply, cuts)
    assert out.shape == x.shape and torch.equal(out[1], x[1])
    for row, (a, b) in [(0, (2, 9)), (2, (0, 12))]:
        seq = out[row].tolist()
        assert seq[0] == FIM_PREFIX_ID and seq[-1] == ENDOFTEXT_ID
        s, m = seq.index(FIM_SUFFIX_ID), seq.index(FIM_MIDDLE_ID)
        prefix, suffix, middle = seq[1:s], seq[s + 1 : m], seq[m + 1 : -1]
        assert (len(prefix), len(middle)) == (a, b - a)
        assert prefix + middle + suffix == x[row, : L - 4].tolist()
    with pytest.raises(ValueError):
        fim_rewrite(x[:, :4], apply, cuts)


# ---------------------------------------------------------------- likelihood against enumeration


def _exact_nelbo(model, x, shift, weight, block_size=None, later_masked=False):
    """sum over blocks, over nonempty masks M of the block's maskable positions, of
    weight(n, |M|) * sum_{i in M} -log p(x_i | clean earlier blocks, block with M masked),
    computed with plain forwards (block_causal or bidirectional) and no 2L layout. later_masked: a
    bidirectional model sees the later blocks as masks (the semi-autoregressive bound)."""
    L = x.numel()
    S = block_size or L
    total = 0.0
    for start in range(0, L, S):
        positions = [i for i in range(start, start + S) if i > 0]
        n = len(positions)
        for k in range(1, n + 1):
            for M in itertools.combinations(positions, k):
                x_t = x.clone()
                x_t[list(M)] = MASK
                if later_masked:
                    x_t[start + S:] = MASK
                seq = x_t[: start + S] if block_size and not later_masked else x_t
                logp = torch.log_softmax(model(seq[None])[0], -1)
                total += weight(n, k) * sum(-logp[i - 1 if shift else i, x[i]].item() for i in M)
    return total


def _elbo_weight(n, k):
    return math.factorial(k - 1) * math.factorial(n - k) / math.factorial(n)


@pytest.mark.parametrize("attention,block_size,shift", [
    ("bidirectional", None, False), ("bidirectional", None, True),
    ("block_causal", 2, False), ("block_causal", 2, True)])
def test_monte_carlo_bound_matches_the_exact_elbo(attention, block_size, shift):
    model = small_model(6, attention=attention, block_size=block_size, shift_logits=shift)
    x = torch.tensor([2, 0, 1, 2])
    with torch.no_grad():
        exact = _exact_nelbo(model, x, shift, _elbo_weight, block_size)
    S = 3000
    groups = 4 // (block_size or 4)
    keys, count_u = nelbo_draws(S, 4, groups, torch.Generator().manual_seed(7))
    est = nelbo_estimates(model, x[None], keys[None], count_u[None], mask_token_id=MASK, shift_logits=shift,
                          block_size=block_size)[0]
    stderr = est.std().item() / math.sqrt(S)  # i.i.d. formula: conservative for stratified draws
    assert stderr < 0.02 * exact
    assert abs(est.mean().item() - exact) < 4 * stderr, (est.mean().item(), exact, stderr)


@pytest.mark.parametrize("shift", [False, True])
def test_block_order_bound_matches_its_exact_elbo(shift):
    model = small_model(6, shift_logits=shift)
    x = torch.tensor([2, 0, 1, 2, 2, 1])
    with torch.no_grad():
        exact = _exact_nelbo(model, x, shift, _elbo_weight, block_size=2, later_masked=True)
        S = 3000
        keys, count_u = nelbo_draws(S, 6, 3, torch.Generator().manual_seed(7))
        est = block_order_nelbo_estimates(model, x[None], keys[None], count_u[None], mask_token_id=MASK,
                                          shift_logits=shift, block_size=2)[0]
    stderr = est.std().item() / math.sqrt(S)
    assert stderr < 0.02 * exact
    assert abs(est.mean().item() - exact) < 4 * stderr, (est.mean().item(), exact, stderr)


def test_block_order_bound_ends_are_the_random_order_bound_and_the_left_to_right_nll():
    model = small_model(9, shift_logits=True)
    x = torch.tensor([[2, 0, 1, 2, 0, 1, 0, 2], [1, 1, 0, 2, 2, 1, 0, 1]])
    with torch.no_grad():
        keys, count_u = nelbo_draws(5, 8, 1, torch.Generator().manual_seed(3))
        keys, count_u = keys[None].expand(2, -1, -1), count_u[None].expand(2, -1, -1)
        whole = block_order_nelbo_estimates(model, x, keys, count_u, mask_token_id=MASK, shift_logits=True,
                                            block_size=8)
        assert torch.allclose(whole, nelbo_estimates(model, x, keys, count_u, mask_token_id=MASK, shift_logits=True),
                              rtol=1e-5)
        keys, count_u = nelbo_draws(2, 8, 8, torch.Generator().manual_seed(4))
        ones = block_order_nelbo_estimates(model, x, keys[None].expand(2, -1, -1), count_u[None].expand(2, -1, -1),
                                           mask_token_id=MASK, shift_logits=True, block_size=1)
        l2r = left_to_right_nll(model, x, mask_token_id=MASK, shift_logits=True)
        assert torch.allclose(ones, l2r[:, None].expand(-1, 2), rtol=1e-5)


def test_bound_is_above_the_exact_nll_of_the_random_order_sampler():
    """-log p(x | x_0) of the distribution 'unmask positions 1..3 in a uniformly random order', enumerated
    over every sequence (it sums to 1), is below the exact ELBO for every x."""
    model = small_model(8)
    first = 1
    with torch.no_grad():
        probs = {}
        for tail in itertools.product(range(4), repeat=3):
            x = torch.tensor([first, *tail])
            p = 0.0
            for order in itertools.permutations([1, 2, 3]):
                x_t, q = x.clone(), 1.0
                x_t[1:] = MASK
                for i in order:
                    q *= torch.softmax(model(x_t[None])[0, i], -1)[x[i]].item()
                    x_t[i] = x[i]
                p += q / 6
            probs[tail] = p
        assert sum(probs.values()) == pytest.approx(1.0, abs=1e-5)
        for tail in [(0, 1, 2), (2, 2, 0), (1, 0, 0)]:
            x = torch.tensor([first, *tail])
            assert _exact_nelbo(model, x, False, _elbo_weight) >= -math.log(probs[tail]) - 1e-6


def test_training_loss_expectation_is_the_elbo_over_t_in_eps_1():
    """E over t ~ U[eps, 1] and masks of the 1/t-weighted loss = sum_M CE(M) (1/(1-eps)) int_eps^1
    t^(k-1) (1-t)^(n-k) dt, per token; here every position is maskable (n = L = 3)."""
    model = small_model(9)
    x = torch.tensor([0, 2, 1])
    eps, n = 0.05, 3

    def weight(n_, k):
        integral = sum(math.comb(n_ - k, j) * (-1) ** j * (1 - eps ** (k + j)) / (k + j) for j in range(n_ - k + 1))
        return integral / (1 - eps)

    with torch.no_grad():
        total = 0.0
        for k in range(1, n + 1):
            for M in itertools.combinations(range(n), k):
                x_t = x.clone()
                x_t[list(M)] = MASK
                logp = torch.log_softmax(model(x_t[None])[0], -1)
                total += weight(n, k) * sum(-logp[i, x[i]].item() for i in M)
        want = total / n
        g = torch.Generator().manual_seed(10)
        means = []
        for _ in range(40):
            R = 500
            t = stratified_times(torch.rand((), generator=g), R, eps)
            masked = token_mask(torch.rand(R, n, generator=g), t)
            x0 = x.expand(R, n)
            means.append(masked_diffusion_loss(model(apply_mask(x0, masked, MASK)), x0, masked, t, False).item())
    means = torch.tensor(means)
    stderr = means.std().item() / math.sqrt(len(means))
    assert abs(means.mean().item() - want) < 4 * stderr, (means.mean().item(), want, stderr)


def test_ar_nll_is_exact_and_normalised():
    model = small_model(11, attention="causal", shift_logits=True)
    with torch.no_grad():
        seqs = torch.tensor([[2, *tail] for tail in itertools.product(range(4), repeat=3)])
        nll = ar_nll(model, seqs)
        assert torch.exp(-nll).sum().item() == pytest.approx(1.0, abs=1e-5)
        logits = model(seqs[:1])
        want = -sum(torch.log_softmax(logits[0, j - 1], -1)[seqs[0, j]].item() for j in range(1, 4))
        assert nll[0].item() == pytest.approx(want, rel=1e-5)


@pytest.mark.parametrize("shift", [False, True])
def test_left_to_right_nll_is_exact_and_normalised(shift):
    model = small_model(12, shift_logits=shift)
    with torch.no_grad():
        seqs = torch.tensor([[2, *tail] for tail in itertools.product(range(4), repeat=3)])
        nll = left_to_right_nll(model, seqs, mask_token_id=MASK, shift_logits=shift, rows_per_pass=2)
        assert torch.exp(-nll).sum().item() == pytest.approx(1.0, abs=1e-5)
        x, want = seqs[37], 0.0
        for j in range(1, 4):
            x_t = x.clone()
            x_t[j:] = MASK
            want -= torch.log_softmax(model(x_t[None])[0, j - 1 if shift else j], -1)[x[j]].item()
        assert nll[37].item() == pytest.approx(want, rel=1e-5)


@pytest.mark.parametrize("shift,block", [(False, 4), (True, 4), (True, 2)])
def test_confidence_order_nll_is_exact_and_normalised(shift, block):
    model = small_model(13, shift_logits=shift)
    with torch.no_grad():
        # every value of the model's vocabulary, the mask id included (the distribution is over all of them)
        seqs = torch.tensor([[2, *tail] for tail in itertools.product(range(4), repeat=3)])
        nll = confidence_order_nll(model, seqs, mask_token_id=MASK, shift_logits=shift, block_size=block)
        assert torch.exp(-nll).sum().item() == pytest.approx(1.0, abs=1e-5)
        # by hand for one sequence: reveal the most confident masked column of the first unfinished block
        x, want = seqs[22], 0.0  # no mask id among its tokens
        hidden = [True] * 4
        hidden[0] = False
        while any(hidden):
            x_t = torch.where(torch.tensor(hidden), torch.full_like(x, MASK), x)
            logp = torch.log_softmax(model(x_t[None])[0], -1)
            first = hidden.index(True)
            cols = [j for j in range(first // block * block, min(4, first // block * block + block)) if hidden[j]]
            best = max(cols, key=lambda j: logp[j - 1 if shift else j].max().item())
            want -= logp[best - 1 if shift else best, x[best]].item()
            hidden[best] = False
        assert nll[22].item() == pytest.approx(want, rel=1e-5)
        ones = confidence_order_nll(model, seqs, mask_token_id=MASK, shift_logits=shift, block_size=1)
        assert torch.allclose(ones, left_to_right_nll(model, seqs, mask_token_id=MASK, shift_logits=shift), rtol=1e-5)


def test_bits_per_byte():
    assert bits_per_byte(math.log(2), 0.25) == pytest.approx(0.25)
    assert bits_per_byte(3.0, 1.0) == pytest.approx(3.0 / math.log(2))
