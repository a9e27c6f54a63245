"""Prometheus metrics of the data plane, shared by every protocol.

Names follow TEI's split of one request into stages (queue, tokenization, inference), with
bounded labels only: model (a served model name), task, protocol (http | grpc) and outcome.
Buckets span 0.5 ms to 60 s: tiny models answer in about a millisecond, generation can take tens
of seconds. BentoML runs workers with prometheus_client's multiprocess mode, so these appear at
its `/metrics` beside its own metrics.
"""

from __future__ import annotations

import os

from prometheus_client import Counter, Gauge, Histogram

LATENCY_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    30.0, 60.0,
)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)
TOKEN_BUCKETS = (1, 4, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)

REQUESTS = Counter(
    "nlp_requests_total", "Requests by outcome (ok, client_error, overload, server_error)",
    ["model", "task", "protocol", "outcome"],
)
REQUEST_DURATION = Histogram(
    "nlp_request_duration_seconds", "Time from request parsed to response ready",
    ["model", "task", "protocol"], buckets=LATENCY_BUCKETS,
)
QUEUE_DURATION = Histogram(
    "nlp_queue_duration_seconds", "Time an input waited for its batch to start",
    ["model", "task"], buckets=LATENCY_BUCKETS,
)
INFERENCE_DURATION = Histogram(
    "nlp_inference_duration_seconds", "Time one batch spent in the model (incl. tokenization)",
    ["model", "task"], buckets=LATENCY_BUCKETS,
)
BATCH_SIZE = Histogram(
    "nlp_batch_size", "Inputs per batch run", ["model", "task"], buckets=BATCH_BUCKETS,
)
# BentoML's own batch-size histogram (same name and labels as its batchable APIs record), so
# dashboards written for BentoML show our batches too.
BENTOML_BATCH_SIZE = Histogram(
    "bentoml_service_adaptive_batch_size", "Service adaptive batch size",
    ["runner_name", "worker_index", "method_name", "service_version", "service_name"],
    buckets=BATCH_BUCKETS,
)
INPUT_TOKENS = Counter(
    "nlp_input_tokens_total", "Prompt/input tokens processed", ["model", "task"],
)
GENERATED_TOKENS = Counter(
    "nlp_generated_tokens_total", "Tokens generated", ["model", "task"],
)
TIME_TO_FIRST_TOKEN = Histogram(
    "nlp_time_to_first_token_seconds", "Generation: request start to first token",
    ["model", "task"], buckets=LATENCY_BUCKETS,
)
TIME_PER_OUTPUT_TOKEN = Histogram(
    "nlp_time_per_output_token_seconds", "Generation: mean time per token after the first",
    ["model", "task"], buckets=LATENCY_BUCKETS,
)
MODEL_INFO = Gauge(
    "nlp_model_info", "Served models (value 1) with their store version",
    ["model", "task", "version", "optimization", "quantization"],
    multiprocess_mode="max",
)


def worker_index() -> str:
    return os.environ.get("BENTOML_WORKER_INDEX", "1")
