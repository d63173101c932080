"""The scheduler between HTTP and the model: a bounded queue and one batch-loop thread that owns the models.

    engine = Engine(models, max_batch=16, max_queue=64, metrics=metrics)
    engine.start()                       # loads the models in the batch thread; engine.ready is set after
    job = engine.new_job(...)            # rows planned on the caller's side (tokenized, checked)
    engine.submit(job)                   # QueueFull at once when max_queue jobs already wait
    async for message in job.messages(): # ("delta" | "draft" | "done" | "error", choice index, payload)
    engine.cancel(job)                   # its rows leave the batch before the next step

The batch thread keeps one BatchRunner per (model, batch-level settings, drafts wanted), admits waiting
jobs in arrival order while the rows decoding stay within max_batch (a job larger than max_batch runs
alone), and steps every busy runner once per round, so batches of different settings share the model in
turn. A diffusion runner lets new rows join at its next block boundary, an autoregressive one at its next
step (runner.py), so a long request does not hold short ones hostage. Each row carries its own settings
and seed and decodes as it would alone (rng.py), so greedy results do not depend on the batch.

The model runs on this thread only; the asyncio side gets results through `call_soon_threadsafe`, so
the event loop (and /health, /metrics) stays responsive while the model computes.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable

from ..errors import UnmaskError
from ..sampling import infill
from ..sampling.config import SamplerConfig
from ..sampling.runner import BatchRunner, Codec, Outcome, Row

log = logging.getLogger("unmask.serve")


CANCELLED = (499, "the request was cancelled")  # (status, message) of an "error" message; 499: client gone


class QueueFull(UnmaskError):
    """max_queue jobs already wait for a place in a batch."""


class ShuttingDown(UnmaskError):
    """The server is stopping and admits no new work."""


@dataclass
class ServedModel:
    """A loaded model under the name clients use, with the sampler defaults of its requests."""

    name: str
    loaded: Any  # unmask.model.loading.LoadedModel
    defaults: SamplerConfig
    codec: Codec = field(init=False)

    def __post_init__(self) -> None:
        self.codec = Codec(self.loaded.tokenizer, self.loaded.model.config)

    @property
    def context(self) -> int:
        return self.loaded.model.config.max_position_embeddings


@dataclass
class ChoiceResult:
    text: str
    finish_reason: str  # "stop" or "length"
    completion_tokens: int
    forward_passes: int
    final_delta: str  # streaming: the text not sent yet


@dataclass
class Job:
    """One HTTP request: one or more choices, each one row (or several infilling candidates)."""

    id: int
    model: ServedModel
    choices: list[list[Row]]  # rows per choice; a row's `request` is (job id, choice index)
    drafts: bool = False
    created: float = field(default_factory=time.perf_counter)
    first_text_at: float | None = None
    outcomes: dict[int, list[tuple[Row, Outcome]]] = field(default_factory=dict)
    results: dict[int, ChoiceResult] = field(default_factory=dict)
    _loop: asyncio.AbstractEventLoop | None = None
    _queue: asyncio.Queue | None = None

    @property
    def num_rows(self) -> int:
        return sum(len(rows) for rows in self.choices)

    @property
    def batch_key(self) -> tuple:
        return (self.model.name, self.choices[0][0].config.batch_key(), self.drafts)

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop, self._queue = loop, asyncio.Queue()

    def post(self, kind: str, index: int, payload: Any) -> None:
        """From the batch thread: hand a message to the request's coroutine."""
        if self._loop is None:
            return
        try:
            self._loop.call_soon_threadsafe(self._queue.put_nowait, (kind, index, payload))
        except RuntimeError:  # the event loop is closed: nobody is listening any more
            pass

    async def messages(self):
        """Messages until every choice is done or an error; an error's payload is (HTTP status, message)."""
        done = 0
        while done < len(self.choices):
            kind, index, payload = await self._queue.get()
            yield kind, index, payload
            if kind == "error":
                return
            done += kind == "done"


def choice_seed(seed: int, index: int) -> int:
    """Choice 0 uses the request's seed itself (so n=1 matches `unmask generate --seed`); others derive one."""
    from ..sampling.rng import derive_seed

    return seed if index == 0 else derive_seed(seed, index)


class Engine:
    def __init__(self, load: Callable[[], list[ServedModel]], *, max_batch: int = 16, max_queue: int = 64,
                 metrics=None):
        """load: called on the batch thread to load the models (so that the server can answer /health meanwhile)."""
        self._load = load
        self.max_batch, self.max_queue = max_batch, max_queue
        self.metrics = metrics
        self.models: dict[str, ServedModel] = {}
        self.ready = threading.Event()
        self.load_error: BaseException | None = None
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._waiting: deque[Job] = deque()
        self._cancelled: list[Job] = []
        self._running: dict[int, Job] = {}
        self._runners: dict[tuple, BatchRunner] = {}
        self._stopping = False
        self._thread = threading.Thread(target=self._main, name="unmask-batch-loop", daemon=True)

    # ----------------------------------------------------------------- the asyncio side

    def start(self) -> None:
        self._thread.start()

    def new_job(self, model: ServedModel, choices: list[list[Row]], drafts: bool = False) -> Job:
        return Job(next(self._ids), model, choices, drafts)

    def submit(self, job: Job) -> None:
        """Queue a job bound to the running event loop; QueueFull or ShuttingDown at once if it cannot wait."""
        job.bind(asyncio.get_running_loop())
        with self._lock:
            if self._stopping:
                raise ShuttingDown("the server is shutting down")
            if len(self._waiting) >= self.max_queue:
                raise QueueFull(f"the request queue is full ({self.max_queue} waiting); retry later")
            self._waiting.append(job)
            self._gauge_queue()
            self._wake.notify()

    def cancel(self, job: Job) -> None:
        """The client went away: drop the job from the queue, or from its batch before the next step."""
        with self._lock:
            if job in self._waiting:
                self._waiting.remove(job)
                self._gauge_queue()
                job.post("error", 0, CANCELLED)
                if self.metrics is not None:
                    self.metrics.cancelled.inc()
            elif job.id in self._running:
                self._cancelled.append(job)
            self._wake.notify()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop admitting, fail what is queued or running, and end the batch thread."""
        with self._lock:
            self._stopping = True
            self._wake.notify()
        if self._thread.is_alive():
            self._thread.join(timeout)

    @property
    def queue_depth(self) -> int:
        return len(self._waiting)

    @property
    def rows_running(self) -> int:
        return sum(r.size for r in self._runners.values())

    # ----------------------------------------------------------------- the batch thread

    def _main(self) -> None:
        try:
            self.models = {m.name: m for m in self._load()}
        except BaseException as e:  # reported by the CLI, which then shuts the server down
            self.load_error = e
            return
        finally:
            self.ready.set()
        while True:
            with self._lock:
                while not self._stopping and not self._waiting and not self._cancelled and not self._busy():
                    self._wake.wait()
                if self._stopping:
                    break
                cancelled, self._cancelled = self._cancelled, []
                admitted = self._take_admissible()
            try:
                for job in cancelled:
                    self._drop(job)
                for job in admitted:
                    self._admit(job)
                for key, runner in list(self._runners.items()):
                    if runner.busy:
                        self._step(key, runner)
                    if not runner.busy:
                        self._runners.pop(key, None)
            except Exception as e:  # a bug: fail what runs rather than leave its clients hanging, keep serving
                log.exception("the batch loop failed")
                self._fail_running(500, f"internal error: {type(e).__name__}: {e}")
            self._gauge_batch()
        self._fail_all(503, "the server is shutting down")

    def _busy(self) -> bool:
        return any(r.busy for r in self._runners.values())

    def _take_admissible(self) -> list[Job]:
        """Waiting jobs, in arrival order, that fit beside the rows decoding (under the lock)."""
        taken, rows = [], self.rows_running
        while self._waiting:
            job = self._waiting[0]
            if rows and rows + job.num_rows > self.max_batch:
                break
            taken.append(self._waiting.popleft())
            self._running[job.id] = job  # now, under the lock, so that a cancel() in between finds it
            rows += job.num_rows
        if taken:
            self._gauge_queue()
        return taken

    def _admit(self, job: Job) -> None:
        key = job.batch_key
        runner = self._runners.get(key)
        if runner is None:
            runner = self._runners[key] = BatchRunner(job.model.loaded.model, job.model.loaded.tokenizer, emit=True,
                                                      drafts=job.drafts)
        runner.admit([row for rows in job.choices for row in rows])

    def _drop(self, job: Job) -> None:
        if self._running.pop(job.id, None) is None:
            return
        runner = self._runners.get(job.batch_key)
        if runner is not None:
            for index in range(len(job.choices)):
                runner.cancel((job.id, index))
        job.post("error", 0, CANCELLED)  # ends the request's coroutine, if it still waits
        if self.metrics is not None:
            self.metrics.cancelled.inc()

    def _step(self, key: tuple, runner: BatchRunner) -> None:
        try:
            updates = runner.step()
        except Exception as e:  # a bug or a device error: fail this batch's requests, keep serving the rest
            log.exception("a batch failed")
            self._runners.pop(key, None)
            for job in [j for j in self._running.values() if j.batch_key == key]:
                self._running.pop(job.id)
                job.post("error", 0, (500, f"the batch failed: {type(e).__name__}: {e}"))
            return
        now = time.perf_counter()
        for update in updates:
            job_id, index = update.row.request
            job = self._running.get(job_id)
            if job is None:
                continue
            if update.outcome is None:
                if update.event.text:
                    self._first_text(job, now)
                    job.post("delta", index, update.event.text)
                if update.event.draft is not None:
                    job.post("draft", index, update.event.draft)
                continue
            job.outcomes.setdefault(index, []).append((update.row, update.outcome))
            if len(job.outcomes[index]) < len(job.choices[index]):
                continue
            result = _choice_result(job.outcomes.pop(index), update.final_text)
            if result.text:
                self._first_text(job, now)
            job.results[index] = result
            job.post("done", index, result)
            if len(job.results) == len(job.choices):
                self._running.pop(job_id)
                self._finished(job, now)

    def _first_text(self, job: Job, now: float) -> None:
        if job.first_text_at is None:
            job.first_text_at = now
            if self.metrics is not None:
                self.metrics.time_to_first_token.observe(now - job.created)

    def _finished(self, job: Job, now: float) -> None:
        if self.metrics is None:
            return
        tokens = sum(r.completion_tokens for r in job.results.values())
        forwards = sum(r.forward_passes for r in job.results.values())
        self.metrics.observe_job(now - job.created, tokens, forwards)

    def _fail_running(self, status: int, message: str) -> None:
        with self._lock:
            running, self._running = list(self._running.values()), {}
        for job in running:
            job.post("error", 0, (status, message))
        self._runners.clear()

    def _fail_all(self, status: int, message: str) -> None:
        with self._lock:
            waiting, self._waiting = list(self._waiting), deque()
        for job in waiting:
            job.post("error", 0, (status, message))
        self._fail_running(status, message)

    def _gauge_queue(self) -> None:
        if self.metrics is not None:
            self.metrics.queue_depth.set(len(self._waiting))

    def _gauge_batch(self) -> None:
        if self.metrics is not None:
            self.metrics.batch_size.set(self.rows_running)


def _choice_result(candidates: list[tuple[Row, Outcome]], final_delta: str) -> ChoiceResult:
    """One choice's answer; of several infilling candidates, the best by infill.candidate_score (as generate does)."""
    row, best = max(candidates, key=lambda ro: infill.candidate_score(ro[1].logprob, ro[1].revealed, ro[1].junction))
    forwards = sum(o.forwards for _, o in candidates)
    # A candidate streamed nothing (runner.py), so its whole text is still to be sent.
    delta = best.text if row.candidate else final_delta
    return ChoiceResult(best.text, best.finish_reason, len(best.ids), forwards, delta)

