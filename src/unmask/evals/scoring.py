"""How a finished sample is judged: by running it against the tests, or by exact match of a line.

A scorer receives (task, completion) pairs and reports, for each, an outcome dict
{"status", "error_type", "detail", "returncode"} with status passed / failed / timed out / error.
The runner stays the same for both; only the judging differs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from .sandbox import SandboxConfig, describe_isolation, probe_isolation, run_programs
from .tasks import Task

OnDone = Callable[[int, dict], None]


class ExecutionScorer:
    """Runs prompt + completion (+ suffix) + the task's tests in the sandbox, in parallel."""

    measures_compile = True  # the completed code should parse, so a compile rate means something

    def __init__(self, sandbox: SandboxConfig | None = None):
        self.sandbox = sandbox or SandboxConfig()

    def fingerprint(self) -> dict[str, Any]:
        sb = asdict(self.sandbox)
        sb.pop("workers")  # how many run at once does not change an outcome
        return {"kind": "execute", **sb}

    def describe(self) -> dict[str, Any]:
        iso = probe_isolation(self.sandbox)
        return {**asdict(self.sandbox), "isolation": asdict(iso), "summary": describe_isolation(iso)}

    def score(self, items: list[tuple[Task, str]], on_done: OnDone) -> None:
        def done(i, result):
            on_done(i, {"status": result.status, "error_type": result.error_type, "detail": result.detail,
                        "returncode": result.returncode})

        run_programs([task.program(completion) for task, completion in items], self.sandbox, on_done=done)


class ExactLineScorer:
    """Passes when the completion, stripped of surrounding whitespace, equals the reference gap stripped."""

    measures_compile = False  # a line cut out of a file does not parse on its own

    def fingerprint(self) -> dict[str, Any]:
        return {"kind": "exact-line"}

    def describe(self) -> dict[str, Any]:
        return {"kind": "exact match of the stripped line", "summary": "scoring: exact match of the stripped line"}

    def score(self, items: list[tuple[Task, str]], on_done: OnDone) -> None:
        for i, (task, completion) in enumerate(items):
            ok = completion.strip() == (task.canonical or "").strip()
            on_done(i, {"status": "passed" if ok else "failed", "error_type": None,
                        "detail": "" if ok else "differs from the reference line", "returncode": None})
