"""The unbiased pass@k estimator of Chen et al. 2021 ("Evaluating Large Language Models Trained on Code").

With n samples of a problem of which c pass, the chance that at least one of k samples drawn without
replacement passes is 1 - C(n - c, k) / C(n, k). It is computed as a product of ratios so that it stays
exact for large n, where the binomial coefficients themselves would overflow a float.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence


def pass_at_k(n: int, c: int, k: int) -> float:
    """pass@k of one problem with `n` samples of which `c` passed; needs 0 <= c <= n and 1 <= k <= n."""
    if not (0 <= c <= n):
        raise ValueError(f"need 0 <= c <= n, got n={n}, c={c}")
    if not (1 <= k <= n):
        raise ValueError(f"pass@{k} needs at least {k} samples per problem, got n={n}")
    if n - c < k:  # every draw of k samples contains a passing one
        return 1.0
    # C(n-c, k) / C(n, k) = prod_{i=n-c+1}^{n} (1 - k / i)
    miss = 1.0
    for i in range(n - c + 1, n + 1):
        miss *= 1.0 - k / i
    return 1.0 - miss


def mean_pass_at_k(counts: Iterable[tuple[int, int]], ks: Sequence[int]) -> dict[str, float | None]:
    """{"pass@k": mean over problems} for (n, c) pairs; None for a k larger than some problem's n."""
    counts = list(counts)
    out: dict[str, float | None] = {}
    for k in ks:
        if not counts or any(n < k for n, _ in counts):
            out[f"pass@{k}"] = None
        else:
            out[f"pass@{k}"] = sum(pass_at_k(n, c, k) for n, c in counts) / len(counts)
    return out
