"""Paired comparison of two evaluation results on the same tasks (`unmask eval compare A.json B.json`).

Two models scored on the same tasks differ most informatively on the tasks only one of them solves: an exact
two-sided sign test over those tasks says how likely a split at least that lopsided is if neither model were
better (McNemar's exact test when every task has one sample). A task's score is its pass@1 estimate
(passed / n), so with several samples per task a task counts for the model with the higher rate.

Two `eval likelihood` results on the same windows (same shards, split and window length: the first windows
of the split) are compared window by window instead: the mean of the per-window differences in bits per
byte and its paired standard error, which is far smaller than either result's own error when the windows'
difficulty dominates both (a hard window is hard for both models).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from ..errors import UnmaskError


@dataclass
class PairedRow:
    group: str  # "all", or a result's group ("infill", "completion", ... for `lines`)
    tasks: int  # tasks scored in both results
    pass_a: float  # mean per-task pass@1 over these tasks
    pass_b: float
    only_a: int  # tasks where A's rate is higher
    only_b: int
    p_value: float  # exact two-sided sign test on only_a vs only_b


def sign_test_p(wins: int, losses: int) -> float:
    """Exact two-sided sign test: P(a split at least this uneven | each discordant task a fair coin)."""
    n = wins + losses
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(wins, losses) + 1)) / 2 ** n
    return min(1.0, 2 * tail)


def _rates(results: dict[str, Any], name: str) -> dict[str, float]:
    per_task = results.get("per_task")
    if not isinstance(per_task, list) or not per_task:
        raise UnmaskError(f"{name}: no per-task scores (expected an `unmask eval` results file)")
    return {t["task_id"]: t["passed"] / t["n"] for t in per_task if t.get("n")}


def _group_of(results: dict[str, Any]):
    """A task's group: the last '/' part of its id when that names one of the result's groups (`lines` ids
    end in /infill, /infill-line, /completion), else none."""
    groups = set(results.get("by_group", {}))

    def group_of(task_id: str) -> str | None:
        last = task_id.rsplit("/", 1)[-1]
        return last if last in groups else None
    return group_of


def result_task(results: dict[str, Any]) -> str | None:
    """The task a results file is of; likelihood results written before they recorded "task" have
    nats_per_token."""
    return results.get("task") or ("likelihood" if "nats_per_token" in results else None)


def compare_results(a: dict[str, Any], b: dict[str, Any]) -> list[PairedRow]:
    """One row for all shared tasks, then one per group the results share (in A's order)."""
    if a.get("task") != b.get("task"):
        raise UnmaskError(f"the results are of different tasks ({a.get('task')!r} vs {b.get('task')!r})")
    rates_a, rates_b = _rates(a, "first results"), _rates(b, "second results")
    shared = [t for t in rates_a if t in rates_b]
    if not shared:
        raise UnmaskError("the two results share no task ids (same task, --limit and --seed?)")
    group_of = _group_of(a)
    groups: dict[str, list[str]] = {"all": shared}
    for t in shared:
        if (g := group_of(t)) is not None:
            groups.setdefault(g, []).append(t)
    rows = []
    for group, ids in groups.items():
        only_a = sum(rates_a[t] > rates_b[t] for t in ids)
        only_b = sum(rates_b[t] > rates_a[t] for t in ids)
        rows.append(PairedRow(group, len(ids), sum(rates_a[t] for t in ids) / len(ids),
                              sum(rates_b[t] for t in ids) / len(ids), only_a, only_b, sign_test_p(only_a, only_b)))
    return rows


@dataclass
class LikelihoodPair:
    windows: int  # windows scored in both results (the first ones of the split)
    metric_a: str  # "nll", "nelbo", "left_to_right_nll", ...
    metric_b: str
    bpb_a: float  # mean bits per byte over those windows
    bpb_b: float
    difference: float  # mean of (A - B) per window, bits per byte
    difference_stderr: float  # paired standard error of that mean
    a_lower: int  # windows where A's figure is lower (better)


def compare_likelihoods(a: dict[str, Any], b: dict[str, Any]) -> LikelihoodPair:
    for key in ("shards", "split", "window_len", "tokens_per_byte"):
        if a.get(key) != b.get(key):
            raise UnmaskError(f"the likelihood results were measured on different windows ({key}: {a.get(key)!r} "
                              f"vs {b.get(key)!r})")
    if not a.get("tokens_per_byte"):
        raise UnmaskError("the likelihood results have no tokens_per_byte (the shard index records no byte counts)")
    per_a, per_b = a.get("per_window"), b.get("per_window")
    if not per_a or not per_b:
        raise UnmaskError("a likelihood result without per-window values (written by an older unmask?)")
    n = min(len(per_a), len(per_b))
    scale = a["tokens_per_byte"] / math.log(2)  # nats/token -> bits/byte
    xa, xb = [v * scale for v in per_a[:n]], [v * scale for v in per_b[:n]]
    diffs = [u - v for u, v in zip(xa, xb)]
    mean = sum(diffs) / n
    stderr = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (n - 1) / n) if n > 1 else float("nan")
    return LikelihoodPair(n, a.get("metric", "?"), b.get("metric", "?"), sum(xa) / n, sum(xb) / n, mean, stderr,
                          sum(d < 0 for d in diffs))


def format_likelihood_pair(r: LikelihoodPair, name_a: str, name_b: str) -> str:
    return "\n".join([
        f"| windows | {name_a} bits/byte ({r.metric_a}) | {name_b} bits/byte ({r.metric_b}) | {name_a} - {name_b} "
        f"(paired) | windows where {name_a} is lower |", "|---|---|---|---|---|",
        f"| {r.windows} | {r.bpb_a:.4f} | {r.bpb_b:.4f} | {r.difference:+.4f} +- {r.difference_stderr:.4f} "
        f"| {r.a_lower} |"])


def format_table(rows: list[PairedRow], name_a: str, name_b: str) -> str:
    lines = [f"| group | tasks | {name_a} pass@1 | {name_b} pass@1 | only {name_a} better | only {name_b} better "
             "| sign test p |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r.group} | {r.tasks} | {r.pass_a:.4f} | {r.pass_b:.4f} | {r.only_a} | {r.only_b} "
                     f"| {r.p_value:.4g} |")
    return "\n".join(lines)
