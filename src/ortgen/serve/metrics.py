"""Prometheus metrics at ``GET /metrics``.

Named as vLLM names them where vLLM has the metric (``vllm:num_requests_running``,
``vllm:time_to_first_token_seconds``, ...), so dashboards and autoscalers written for vLLM read
ortgen unchanged; the rest are ``ortgen_*``. Every series carries ``model_name``.

- requests: ``ortgen_http_requests_total{route,status}`` (every HTTP request, by route template and
  status), ``vllm:request_success_total{finished_reason}``, ``ortgen_requests_cancelled_total``,
  ``ortgen_requests_rejected_total`` (429);
- the scheduler now: ``vllm:num_requests_running``, ``vllm:num_requests_waiting``,
  ``ortgen_running_sequences``, ``ortgen_kv_cache_reserved_bytes``;
- per step: ``ortgen_step_rows`` (requests in one decoder call), ``ortgen_step_tokens``,
  ``ortgen_step_seconds``;
- per request: ``vllm:time_to_first_token_seconds``, ``vllm:inter_token_latency_seconds`` (the
  request's mean time per token after the first), ``vllm:e2e_request_latency_seconds``,
  ``vllm:request_queue_time_seconds``, ``vllm:prompt_tokens_total``, ``vllm:generation_tokens_total``.
"""

from __future__ import annotations

import threading

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

disable_created_metrics()  # no *_created series: they double the exposition and nothing reads them

from ortgen.runtime.request import RequestHandle

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 80, 160, 320, 640)
TOKEN_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5)
ROW_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)
STEP_TOKEN_BUCKETS = (1, 4, 16, 64, 128, 256, 512, 1024)


class Metrics:
    """The registry of one served model; the scheduler's gauges are read when scraped."""

    def __init__(self, model_name: str, generator) -> None:
        self.registry = registry = CollectorRegistry()
        labels = {"model_name": model_name}
        self._labels = labels
        self.http = Counter("ortgen_http_requests", "HTTP requests by route template and status",
                            ["model_name", "route", "status"], registry=registry)
        self.success = Counter("vllm:request_success", "Requests finished, by reason", ["model_name", "finished_reason"],
                               registry=registry)
        self.cancelled_total = Counter("ortgen_requests_cancelled", "Requests cancelled (client gone, timeout)",
                                       ["model_name"], registry=registry).labels(**labels)
        self.rejected_total = Counter("ortgen_requests_rejected", "Requests refused with 429 (queue full)",
                                      ["model_name"], registry=registry).labels(**labels)
        self.prompt_tokens = Counter("vllm:prompt_tokens", "Prompt tokens of finished requests", ["model_name"],
                                     registry=registry).labels(**labels)
        self.generation_tokens = Counter("vllm:generation_tokens", "Generated tokens of finished requests",
                                         ["model_name"], registry=registry).labels(**labels)
        self.ttft = Histogram("vllm:time_to_first_token_seconds", "Arrival to first token", ["model_name"],
                              buckets=LATENCY_BUCKETS, registry=registry).labels(**labels)
        self.itl = Histogram("vllm:inter_token_latency_seconds", "Mean time per token after the first, per request",
                             ["model_name"], buckets=TOKEN_BUCKETS, registry=registry).labels(**labels)
        self.e2e = Histogram("vllm:e2e_request_latency_seconds", "Arrival to last token", ["model_name"],
                             buckets=LATENCY_BUCKETS, registry=registry).labels(**labels)
        self.queue = Histogram("vllm:request_queue_time_seconds", "Arrival to admission (a KV row)", ["model_name"],
                               buckets=LATENCY_BUCKETS, registry=registry).labels(**labels)
        self.step_rows = Histogram("ortgen_step_rows", "Requests in one decoder call", ["model_name"],
                                   buckets=ROW_BUCKETS, registry=registry).labels(**labels)
        self.step_tokens = Histogram("ortgen_step_tokens", "New tokens in one decoder call", ["model_name"],
                                     buckets=STEP_TOKEN_BUCKETS, registry=registry).labels(**labels)
        self.step_seconds = Histogram("ortgen_step_seconds", "Duration of one decoder call", ["model_name"],
                                      buckets=TOKEN_BUCKETS, registry=registry).labels(**labels)

        def scheduler_value(read):
            def value() -> float:
                scheduler = generator._scheduler
                return float(read(scheduler)) if scheduler is not None else 0.0
            return value

        for name, doc, read in (
            ("vllm:num_requests_running", "Requests holding a KV row", lambda s: s.running),
            ("vllm:num_requests_waiting", "Requests waiting for admission", lambda s: s.waiting),
            ("ortgen_running_sequences", "Sequences (beams, samples) decoding", lambda s: s.running_sequences),
            ("ortgen_kv_cache_reserved_bytes", "KV cache reserved by running requests", lambda s: s.reserved_bytes),
        ):
            Gauge(name, doc, ["model_name"], registry=registry).labels(**labels).set_function(scheduler_value(read))
        self._lock = threading.Lock()
        self._listening = False
        self._generator = generator

    def attach(self) -> None:
        """Observe every decoder step of the generator's scheduler (once it exists)."""
        with self._lock:
            if not self._listening:
                self._generator.scheduler.step_listeners.append(self._on_step)
                self._listening = True

    def _on_step(self, rows: int, tokens: int, seconds: float) -> None:
        self.step_rows.observe(rows)
        self.step_tokens.observe(tokens)
        self.step_seconds.observe(seconds)

    def http_request(self, route: str, status: int) -> None:
        self.http.labels(model_name=self._labels["model_name"], route=route, status=str(status)).inc()

    def submitted(self, handle: RequestHandle) -> None:
        self.attach()

    def rejected(self) -> None:
        self.rejected_total.inc()

    def cancelled(self) -> None:
        self.cancelled_total.inc()

    def finished(self, handle: RequestHandle) -> None:
        output = handle._output
        if output is None:
            return
        t = output.timings
        if t.first_token_seconds is not None:
            self.ttft.observe(t.first_token_seconds)
        if t.total_seconds is not None:
            self.e2e.observe(t.total_seconds)
        if t.queue_seconds is not None:
            self.queue.observe(t.queue_seconds)
        longest = max((len(s.token_ids) for s in output.sequences), default=0)
        if longest > 1 and t.first_token is not None and t.finished is not None:
            self.itl.observe((t.finished - t.first_token) / (longest - 1))
        self.prompt_tokens.inc(output.prompt_tokens)
        self.generation_tokens.inc(output.completion_tokens)
        reasons = {s.stop_reason for s in output.sequences}
        reason = "length" if reasons == {"length"} else "stop"
        self.success.labels(model_name=self._labels["model_name"], finished_reason=reason).inc()

    def exposition(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
