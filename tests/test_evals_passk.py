"""The unbiased pass@k estimator against values worked out by hand."""

import math

import pytest

from unmask.evals.passk import mean_pass_at_k, pass_at_k


@pytest.mark.parametrize("n, c, k, expected", [
    (1, 1, 1, 1.0),
    (1, 0, 1, 0.0),
    (10, 3, 1, 0.3),  # pass@1 is the fraction that passed
    (5, 2, 2, 1 - 3 / 10),  # 1 - C(3,2)/C(5,2) = 1 - 3/10
    (10, 1, 10, 1.0),  # all ten drawn: the one passing sample is always among them
    (10, 2, 5, 1 - 56 / 252),  # 1 - C(8,5)/C(10,5)
    (4, 0, 3, 0.0),
    (20, 1, 10, 0.5),  # 1 - C(19,10)/C(20,10) = 1 - 10/20
])
def test_pass_at_k_matches_hand_computed_values(n, c, k, expected):
    assert pass_at_k(n, c, k) == pytest.approx(expected, abs=1e-12)


def test_pass_at_k_equals_the_binomial_formula_for_large_n():
    n, c, k = 200, 37, 10
    exact = 1 - math.comb(n - c, k) / math.comb(n, k)
    assert pass_at_k(n, c, k) == pytest.approx(exact, rel=1e-12)


def test_pass_at_k_rejects_impossible_counts():
    with pytest.raises(ValueError):
        pass_at_k(3, 4, 1)
    with pytest.raises(ValueError):
        pass_at_k(3, 1, 5)


def test_mean_over_problems_and_missing_k():
    # problem A: 2 of 4 pass; problem B: 0 of 4. pass@1 = (0.5 + 0) / 2; pass@2 = (1 - C(2,2)/C(4,2)) / 2
    out = mean_pass_at_k([(4, 2), (4, 0)], [1, 2, 10])
    assert out["pass@1"] == pytest.approx(0.25)
    assert out["pass@2"] == pytest.approx((1 - 1 / 6) / 2)
    assert out["pass@10"] is None  # fewer than 10 samples per problem: not estimable
