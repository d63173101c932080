"""The `lines` task: held-out lines as infill and completion tasks, fitted to the context, scored by exact match."""

import pytest

from unmask.errors import UnmaskError
from unmask.evals.completers import Completion
from unmask.evals.lines import build_line_tasks, mode_of, read_sources
from unmask.evals.runner import EvalSettings, run_eval
from unmask.evals.scoring import ExactLineScorer


def _words(text):
    return len(text.split())


@pytest.fixture
def source_folder(tmp_path):
    folder = tmp_path / "src"
    folder.mkdir()
    for n in range(3):
        body = "".join(f"def f{n}_{i}(x):\n    y = x * {i} + {n}\n\n    return y - {i}\n\n" for i in range(60))
        (folder / f"m{n}.py").write_text(body)
    (folder / "notes.txt").write_text("not python\n")
    return folder


def test_tasks_are_deterministic_and_cut_from_the_files(source_folder):
    docs = read_sources(source_folder)
    assert len(docs) == 3  # .py files only
    texts = dict(docs)
    kw = dict(seed=3, count_tokens=_words, context_tokens=200, budget_tokens=16)
    tasks = build_line_tasks(docs, 20, **kw)
    assert [t.task_id for t in tasks] == [t.task_id for t in build_line_tasks(docs, 20, **kw)]
    assert [t.task_id for t in tasks] != [t.task_id for t in build_line_tasks(docs, 20, **{**kw, "seed": 4})]
    assert len(tasks) == 60 and [mode_of(t) for t in tasks[:3]] == ["infill", "infill-line", "completion"]
    for infill, infill_line, completion in zip(tasks[::3], tasks[1::3], tasks[2::3]):
        assert (infill_line.prompt, infill_line.suffix, infill_line.canonical) == (infill.prompt, infill.suffix,
                                                                                  infill.canonical)
        assert infill.stop == () and infill_line.stop == ("\n",)
        path, line_number = infill.problem_id.rsplit(":", 1)
        line = texts[path].splitlines()[int(line_number) - 1]
        assert infill.canonical == line and line.strip()
        assert infill.prompt + line + infill.suffix in texts[path]  # contiguous, exactly as in the file
        assert infill.suffix.startswith("\n") and completion.prompt == infill.prompt and completion.suffix == ""
        assert completion.stop == ("\n",)
        assert len(infill.prompt) <= 1500 and len(infill.suffix) <= 601
        assert _words(infill.prompt) + _words(infill.suffix) + 16 + 3 <= 200  # fits the model's context


def test_gap_newline_moves_the_line_end_into_the_gap(source_folder):
    docs = read_sources(source_folder)
    kw = dict(seed=3, count_tokens=_words, context_tokens=200, budget_tokens=16)
    plain = build_line_tasks(docs, 20, **kw)
    with_newline = build_line_tasks(docs, 20, gap_newline=True, **kw)
    assert [mode_of(t) for t in with_newline[:3]] == ["infill+nl", "infill-line+nl", "completion"]
    for old, new in zip(plain, with_newline):
        assert (new.problem_id, new.prompt, new.canonical, new.stop) == (old.problem_id, old.prompt, old.canonical,
                                                                        old.stop)
        if mode_of(old) == "completion":
            assert new == old
        else:  # the same text, the newline now part of the gap: the line + "\n" + the suffix is the file's
            assert old.suffix == "\n" + new.suffix or old.suffix == new.suffix == "\n"  # a file's last line
            assert new.task_id == old.task_id + "+nl"
    # a paired comparison cannot mistake one protocol for the other: no infill task id is shared
    assert {t.task_id for t in plain} & {t.task_id for t in with_newline} == {t.task_id for t in plain
                                                                             if mode_of(t) == "completion"}


def test_a_context_smaller_than_the_budget_is_refused(source_folder):
    with pytest.raises(UnmaskError, match="no room"):
        build_line_tasks(read_sources(source_folder), 5, seed=0, count_tokens=_words, context_tokens=16,
                         budget_tokens=16)


def test_missing_source_is_reported(tmp_path):
    with pytest.raises(UnmaskError, match="no such file"):
        read_sources(tmp_path / "nope")


class LineOracle:
    """Writes the right line when infilling and a wrong one when completing."""

    def __init__(self, tasks):
        self.answer = {t.prompt + "|" + t.suffix: t.canonical for t in tasks}

    def identity(self):
        return {"name": "oracle"}

    def settings(self):
        return {}

    def count_tokens(self, text):
        return _words(text)

    def complete(self, requests):
        return [Completion(text=self.answer[r.prompt + "|" + r.suffix] + "\n  trailing" if r.suffix else "nope\n",
                           num_tokens=5, num_forwards=5, seconds=0.1) for r in requests]


def test_exact_match_per_mode(source_folder, tmp_path):
    tasks = build_line_tasks(read_sources(source_folder), 6, seed=0, count_tokens=_words, context_tokens=300,
                             budget_tokens=16)
    results = run_eval(tasks, LineOracle(tasks), EvalSettings(task="lines"), tmp_path / "lines.json",
                       ExactLineScorer(), progress=False, log=lambda *a: None, group_of=mode_of)
    # The infill answer has a second line, so it is not the line: exact match is strict; cut at the
    # first newline it is the line.
    assert results["by_group"]["infill"]["metrics"]["pass@1"] == 0.0
    assert results["by_group"]["infill-line"]["metrics"]["pass@1"] == 1.0
    assert results["by_group"]["completion"]["metrics"]["pass@1"] == 0.0
    assert results["metrics"]["compile_rate"] is None


def test_exact_match_ignores_surrounding_whitespace(source_folder, tmp_path):
    tasks = build_line_tasks(read_sources(source_folder), 4, seed=0, count_tokens=_words, context_tokens=300,
                             budget_tokens=16)

    class Right(LineOracle):
        def complete(self, requests):
            return [Completion(text=" " + self.answer[r.prompt + "|" + (r.suffix or "")].strip() + " \n", num_tokens=5,
                               num_forwards=2, seconds=0.1) for r in requests]

    results = run_eval(tasks, Right(tasks), EvalSettings(task="lines"), tmp_path / "lines.json",
                       ExactLineScorer(), progress=False, log=lambda *a: None, group_of=mode_of)
    assert results["by_group"]["infill"]["metrics"]["pass@1"] == 1.0
    assert results["by_group"]["completion"]["metrics"]["pass@1"] == 1.0
    assert results["by_group"]["infill"]["speed"]["tokens_per_forward"] == pytest.approx(2.5)


def test_more_lines_keep_the_lines_drawn_before(source_folder):
    docs = read_sources(source_folder)
    kw = dict(seed=1, count_tokens=_words, context_tokens=300, budget_tokens=16)
    few = {t.task_id for t in build_line_tasks(docs, 5, **kw)}
    many = {t.task_id for t in build_line_tasks(docs, 12, **kw)}
    assert few < many
