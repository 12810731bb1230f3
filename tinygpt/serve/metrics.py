"""The server's Prometheus metrics (`GET /metrics`, text format), named as vLLM names its own where
there is a counterpart: requests by route and status, the queue, the running batch, prompt and
generated tokens, time to first token and per-token latency (one decode step), and the time of
each prefill.

Each server has its own registry (tests run several in one process; the global one would refuse
the second set of names).
"""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

# Routes counted by name; anything else is "other" (a scanner's paths must not grow the label set).
ROUTES = ("/v1/chat/completions", "/v1/models", "/worker_generate", "/worker_get_status", "/health", "/metrics")
CONTENT_TYPE = CONTENT_TYPE_LATEST


class ServeMetrics:
    def __init__(self):
        self.registry = r = CollectorRegistry()
        self.requests = Counter("tinygpt_requests", "HTTP requests answered, by route and status", ["route", "status"],
                                registry=r)
        self.held = Gauge("tinygpt_requests_held", "requests accepted and not yet answered", registry=r)
        self.queue_depth = Gauge("tinygpt_queue_depth", "rows waiting to join the running batch", registry=r)
        self.running = Gauge("tinygpt_running_batch_size", "rows in the running batch", registry=r)
        self.prompt_tokens = Counter("tinygpt_prompt_tokens", "prompt tokens prefilled (visual tokens included)",
                                     registry=r)
        self.generation_tokens = Counter("tinygpt_generation_tokens", "tokens generated", registry=r)
        self.ttft = Histogram("tinygpt_time_to_first_token_seconds", "from a request's acceptance to its first token",
                              buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40), registry=r)
        # The model thread's time: prefills (arrivals joining, their images encoded together) and, in
        # token_latency, decode steps; their sums over answers is the model's share of an answer.
        self.prefill = Histogram("tinygpt_prefill_seconds", "one prefill of the rows joining the batch",
                                 buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10), registry=r)
        self.visual_cache_hits = Counter("tinygpt_visual_cache_hits", "images whose visual tokens a prefill took "
                                         "from the cache (visual_cache.py) instead of encoding them", registry=r)
        self.input_cache_hits = Counter("tinygpt_input_cache_hits", "image files whose model input was taken from "
                                        "the cache (handoff.py) instead of decoding them again", registry=r)
        self.prefill_rows = Counter("tinygpt_prefill_rows", "rows prefilled (their number over prefills: rows per prefill)",
                                    registry=r)
        self.token_latency = Histogram("tinygpt_time_per_output_token_seconds", "one decode step of the running batch",
                                       buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1), registry=r)

    def count(self, path: str, status: int) -> None:
        self.requests.labels(path if path in ROUTES else "other", str(status)).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
