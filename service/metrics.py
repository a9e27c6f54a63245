"""Prometheus metrics of the data plane, shared by every protocol.

Names follow TEI's split of one request into stages (queue, tokenization, inference), with
bounded labels only: model (a served model name, or `unknown` when a request named none that is
served), task, protocol (http | grpc) and outcome (ok | client_error | overload | server_error |
cancelled | timeout). Latency buckets span 100 µs to 60 s: tokenizing a sentence or waiting for
an idle model takes tens of microseconds, a tiny model answers in about a millisecond,
generation can take tens of seconds. BentoML runs workers with prometheus_client's multiprocess
mode, so these appear at its `/metrics` beside its own metrics. docs/metrics.md is the reference
table.
"""

from __future__ import annotations

import os

from prometheus_client import Counter, Gauge, Histogram

LATENCY_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)

# The model label of requests refused before a served model was found (never the name sent).
UNKNOWN_MODEL = "unknown"

REQUESTS = Counter(
    "nlp_requests_total",
    "Requests that reached the data plane, by outcome (ok, client_error, overload, "
    "server_error, cancelled, timeout)",
    ["model", "task", "protocol", "outcome"],
)
REQUEST_DURATION = Histogram(
    "nlp_request_duration_seconds",
    "Data-plane time of a request: queue, tokenization, inference and post-processing "
    "(a whole stream for generation)",
    ["model", "task", "protocol"],
    buckets=LATENCY_BUCKETS,
)
QUEUE_DURATION = Histogram(
    "nlp_queue_duration_seconds",
    "Time an input waited for its batch to start (generation: for a generation slot)",
    ["model", "task"],
    buckets=LATENCY_BUCKETS,
)
TOKENIZATION_DURATION = Histogram(
    "nlp_tokenization_duration_seconds",
    "Time one batch (generation: one request) spent tokenizing its inputs",
    ["model", "task"],
    buckets=LATENCY_BUCKETS,
)
INFERENCE_DURATION = Histogram(
    "nlp_inference_duration_seconds",
    "Time one batch (generation: one request's decoding) spent in the model and "
    "post-processing, tokenization excluded",
    ["model", "task"],
    buckets=LATENCY_BUCKETS,
)
BATCH_SIZE = Histogram(
    "nlp_batch_size",
    "Inputs per batch run",
    ["model", "task"],
    buckets=BATCH_BUCKETS,
)
# BentoML's own batch-size histogram (same name and labels as its batchable APIs record), so
# dashboards written for BentoML show our batches too.
BENTOML_BATCH_SIZE = Histogram(
    "bentoml_service_adaptive_batch_size",
    "Service adaptive batch size",
    ["runner_name", "worker_index", "method_name", "service_version", "service_name"],
    buckets=BATCH_BUCKETS,
)
INPUT_TOKENS = Counter(
    "nlp_input_tokens_total",
    "Tokens fed to the model: inputs after truncation, special tokens and every QA window "
    "included; the prompt for generation",
    ["model", "task"],
)
GENERATED_TOKENS = Counter(
    "nlp_generated_tokens_total",
    "Tokens generated, counted as each decode step computes them (a cancelled generation "
    "stops adding)",
    ["model", "task"],
)
TIME_TO_FIRST_TOKEN = Histogram(
    "nlp_time_to_first_token_seconds",
    "Generation: request start to first token",
    ["model", "task"],
    buckets=LATENCY_BUCKETS,
)
TIME_PER_OUTPUT_TOKEN = Histogram(
    "nlp_time_per_output_token_seconds",
    "Generation: mean time per token after the first",
    ["model", "task"],
    buckets=LATENCY_BUCKETS,
)
GRAMMAR_LOOKUPS = Counter(
    "nlp_grammar_cache_total",
    "Structured generation: grammar lookups by result (hit: compiled for an earlier request; "
    "miss: compiled for this one)",
    ["model", "result"],
)
GRAMMAR_COMPILE_DURATION = Histogram(
    "nlp_grammar_compile_seconds",
    "Structured generation: time to compile a grammar the cache did not hold",
    ["model"],
    buckets=LATENCY_BUCKETS,
)
# The autoscaling signal (deploy/k8s/hpa-requests.yaml): work a model has taken in and not yet
# answered, queued or running, summed over live workers. CPU utilisation lags it and cannot see
# requests waiting for a generation slot.
ACTIVE_REQUESTS = Gauge(
    "nlp_requests_active",
    "Requests of a model in the data plane (queued or in progress), not yet answered",
    ["model", "task"],
    multiprocess_mode="livesum",
)
MODEL_INFO = Gauge(
    "nlp_model_info",
    "Served models (value 1) with their store version",
    ["model", "task", "version", "optimization", "quantization"],
    multiprocess_mode="max",
)


def worker_index() -> str:
    return os.environ.get("BENTOML_WORKER_INDEX", "1")
