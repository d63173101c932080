"""`unmask eval compare`: paired sign tests between two results files."""

import json
import math

import pytest

from unmask.cli import main
from unmask.errors import UnmaskError
from unmask.evals.compare import compare_likelihoods, compare_results, sign_test_p


def _results(task, model, passed: dict[str, int], n=1, groups=()):
    return {"task": task, "model": {"name": model}, "by_group": {g: {} for g in groups},
            "per_task": [{"task_id": t, "n": n, "passed": p} for t, p in passed.items()]}


def test_sign_test_matches_the_binomial_by_hand():
    assert sign_test_p(7, 0) == pytest.approx(2 / 2 ** 7)
    assert sign_test_p(11, 1) == pytest.approx(2 * (1 + 12) / 2 ** 12) == sign_test_p(1, 11)
    assert sign_test_p(0, 0) == 1.0 and sign_test_p(3, 3) == 1.0
    # against the definition: the probability of a split at least as far from even as the observed one
    for n in range(1, 13):
        for k in range(n + 1):
            extreme = sum(math.comb(n, i) for i in range(n + 1) if abs(2 * i - n) >= abs(2 * k - n)) / 2 ** n
            assert sign_test_p(k, n - k) == pytest.approx(extreme)


def test_rows_pair_tasks_per_group_and_overall():
    a = _results("lines", "diff", {"f:1/infill": 1, "f:1/completion": 0, "f:2/infill": 1, "f:2/completion": 1,
                                   "f:3/infill": 0}, groups=("infill", "completion"))
    b = _results("lines", "ar", {"f:1/infill": 0, "f:1/completion": 1, "f:2/infill": 0, "f:2/completion": 1,
                                 "g:9/infill": 1}, groups=("infill", "completion"))
    rows = {r.group: r for r in compare_results(a, b)}
    assert list(rows) == ["all", "infill", "completion"]
    assert (rows["all"].tasks, rows["all"].only_a, rows["all"].only_b) == (4, 2, 1)  # f:3 and g:9 are not shared
    assert (rows["infill"].tasks, rows["infill"].only_a, rows["infill"].only_b) == (2, 2, 0)
    assert rows["infill"].pass_a == 1.0 and rows["infill"].pass_b == 0.0
    assert rows["infill"].p_value == pytest.approx(0.5)
    assert (rows["completion"].only_a, rows["completion"].only_b) == (0, 1)


def test_several_samples_compare_pass_rates():
    a = _results("humaneval", "x", {"t/0": 3, "t/1": 1}, n=4)
    b = _results("humaneval", "y", {"t/0": 1, "t/1": 1}, n=4)
    [row] = compare_results(a, b)
    assert (row.only_a, row.only_b, row.pass_a, row.pass_b) == (1, 0, 0.5, 0.25)


def test_mismatched_results_are_refused():
    with pytest.raises(UnmaskError, match="different tasks"):
        compare_results(_results("lines", "a", {"t": 1}), _results("humaneval", "b", {"t": 1}))
    with pytest.raises(UnmaskError, match="share no task"):
        compare_results(_results("lines", "a", {"t": 1}), _results("lines", "b", {"u": 1}))
    with pytest.raises(UnmaskError, match="no per-task"):
        compare_results({"task": "lines"}, _results("lines", "b", {"u": 1}))


def test_cli_prints_the_table_and_writes_json(tmp_path, capsys):
    a = tmp_path / "a.json"
    b = tmp_path / "b.json"
    a.write_text(json.dumps(_results("infill-single", "default", {f"t/{i}": int(i < 7) for i in range(20)})))
    b.write_text(json.dumps(_results("infill-single", "default-ar", {f"t/{i}": 0 for i in range(20)})))
    out = tmp_path / "cmp" / "compare.json"
    assert main(["eval", "compare", str(a), str(b), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| all | 20 | 0.3500 | 0.0000 | 7 | 0 | 0.01562 |" in printed
    saved = json.loads(out.read_text())
    assert saved["names"] == ["default", "default-ar"] and saved["rows"][0]["only_a"] == 7


def _likelihood(model, metric, per_window, **over):
    return {"task": "likelihood", "model": {"name": model}, "metric": metric, "shards": "/d/shards", "split": "val",
            "window_len": 256, "tokens_per_byte": 0.3 * math.log(2), "per_window": per_window, **over}


def test_likelihoods_pair_window_by_window():
    # nats/token x 0.3 ln 2 / ln 2 = 0.3 x nats in bits/byte; B has one window more (ignored)
    a = _likelihood("default", "nelbo", [5.0, 3.0, 4.0, 6.0])
    b = _likelihood("default-ar", "nll", [4.0, 2.5, 3.0, 5.5, 9.0])
    r = compare_likelihoods(a, b)
    diffs = [0.3, 0.15, 0.3, 0.15]
    assert (r.windows, r.metric_a, r.metric_b, r.a_lower) == (4, "nelbo", "nll", 0)
    assert r.bpb_a == pytest.approx(0.3 * 4.5) and r.bpb_b == pytest.approx(0.3 * 3.75)
    assert r.difference == pytest.approx(0.225)
    assert r.difference_stderr == pytest.approx(math.sqrt(sum((d - 0.225) ** 2 for d in diffs) / 3 / 4))
    with pytest.raises(UnmaskError, match="different windows"):
        compare_likelihoods(a, _likelihood("x", "nll", [1.0], window_len=128))
    with pytest.raises(UnmaskError, match="per-window"):
        compare_likelihoods(a, _likelihood("x", "nll", None))


def test_cli_compares_two_likelihood_results(tmp_path, capsys):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps(_likelihood("default", "nelbo", [5.0, 3.0, 4.0, 6.0])))
    b.write_text(json.dumps(_likelihood("default-ar", "nll", [4.0, 2.5, 4.5, 5.5])))
    out = tmp_path / "cmp.json"
    assert main(["eval", "compare", str(a), str(b), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| 4 | 1.3500 | 1.2375 | +0.1125 +- " in printed and printed.rstrip().endswith("| 1 |")
    assert json.loads(out.read_text())["difference"] == pytest.approx(0.1125)
    lines = tmp_path / "lines.json"
    lines.write_text(json.dumps(_results("lines", "x", {"t": 1})))
    assert main(["eval", "compare", str(a), str(lines)]) == 2
    assert "different tasks" in capsys.readouterr().err
    # a likelihood result of before "task" and per-window values: named as such, not as another task
    old = {k: v for k, v in _likelihood("x", "nll", None).items() if k not in ("task", "per_window")}
    b.write_text(json.dumps({**old, "nats_per_token": 2.4}))
    assert main(["eval", "compare", str(a), str(b)]) == 2
    assert "without per-window values (written by an older unmask?)" in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["compare", "only-one.json"], "two results files"),
    (["compare", "missing-a.json", "missing-b.json"], "cannot read results file"),
    (["humaneval", "stray"], "unexpected argument"),
])
def test_bad_compare_input_is_one_line_error(argv, message, capsys):
    assert main(["eval", *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
