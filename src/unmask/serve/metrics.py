"""Prometheus metrics of the server (prometheus-client), on a registry of their own per app.

Request counts by route and status, queue depth, rows in the running batches, time to the first
text, end-to-end latency, output tokens (a counter: its rate is the output tokens/s), forward passes,
per-request tokens/s and tokens per forward pass; and the process's CPU time and memory.
"""

from __future__ import annotations


class Metrics:
    def __init__(self):
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector

        self.registry = r = CollectorRegistry()
        ProcessCollector(registry=r)  # CPU seconds, resident memory, open files of the server process
        seconds = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25, 60, 120)
        self.requests = Counter("unmask_requests", "HTTP requests by route and status code",
                                ["route", "status"], registry=r)
        self.cancelled = Counter("unmask_cancelled_requests", "requests dropped from a batch because the "
                                 "client disconnected", registry=r)
        self.queue_depth = Gauge("unmask_queue_depth", "requests waiting for a place in a batch", registry=r)
        self.batch_size = Gauge("unmask_batch_size", "rows decoding in the running batches", registry=r)
        self.time_to_first_token = Histogram("unmask_time_to_first_token_seconds", "from arrival to the first "
                                             "final text", buckets=seconds, registry=r)
        self.latency = Histogram("unmask_request_latency_seconds", "from arrival to the last token",
                                 buckets=seconds, registry=r)
        self.output_tokens = Counter("unmask_output_tokens", "completion tokens generated", registry=r)
        self.forward_passes = Counter("unmask_forward_passes", "forward passes spent on requests (summed over "
                                      "requests)", registry=r)
        self.tokens_per_second = Histogram("unmask_request_output_tokens_per_second", "completion tokens per "
                                           "second of each request", buckets=(1, 5, 10, 25, 50, 100, 250, 500, 1000,
                                                                               2500), registry=r)
        self.tokens_per_forward = Histogram("unmask_tokens_per_forward_pass", "completion tokens per forward pass "
                                            "of each request", buckets=(0.5, 1, 1.5, 2, 3, 4, 6, 8, 16), registry=r)

    def observe_job(self, seconds: float, tokens: int, forwards: int) -> None:
        self.latency.observe(seconds)
        self.output_tokens.inc(tokens)
        self.forward_passes.inc(forwards)
        if seconds > 0:
            self.tokens_per_second.observe(tokens / seconds)
        if forwards:
            self.tokens_per_forward.observe(tokens / forwards)

    def render(self) -> tuple[bytes, str]:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST
