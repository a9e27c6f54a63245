"""Locust scenarios for the NLP service: one user class per task, plus a KServe v2 gRPC user.

Run it through `python -m loadtests run` (which also writes the report and applies the SLO
gates), or directly:

    locust -f loadtests/locustfile.py --headless --host http://127.0.0.1:3000 -u 10 -r 10 -t 60s

| user class         | weight | requests (Locust name)                                         |
|--------------------|--------|----------------------------------------------------------------|
| ClassifyUser       | 30     | POST /classify — one sentence, sometimes 2–8                    |
| EmbedUser          | 20     | POST /embed — one query sentence or a batch of 2–16 passages   |
| AnswerUser         | 10     | POST /answer — 56–900-word contexts, several windows each      |
| FillMaskUser       | 5      | POST /fill-mask — one sentence with one word masked            |
| RerankUser         | 5      | POST /rerank — a query against 4–16 passages (TEI payload)     |
| ZeroShotUser       | 5      | POST /zero-shot — one sentence against 2–7 candidate topics    |
| NerUser            | 5      | POST /ner — one sentence or 2–4, simple or first grouping      |
| GenerateUser       | 6      | POST /generate — prompts of 3–200 words, 16–48 new tokens      |
| GenerateStreamUser | 6      | SSE /generate stream (total) and TTFT /generate stream TTFT    |
| TranslateUser      | 8      | POST /translate — one sentence, new tokens scaled to its length |
| SummarizeUser      | 4      | POST /summarize — 2–6 sentences, new tokens about half the words |
| Text2TextUser      | 3      | POST /text2text — a T5 prompt (translate / summarize) + sentence |
| OpenAIUser         | 10     | POST /v1/completions; SSE /v1/chat/completions stream (+ TTFT)  |
| KServeGrpcUser     | 10     | grpc ModelInfer text-classification (tritonclient.grpc)        |

Encoder tasks (classification, embeddings) dominate real traffic and are cheap; generation is
rarer and costs the most. Every user paces itself at `LOADTEST_RPS_PER_USER` requests/s
(`constant_throughput`, default 1), so the number of users is the offered rate.

Environment:
- `LOADTEST_SHAPE`: steady | step | spike | soak (loadtests/shapes.py); unset: Locust's -u/-r/-t.
- `LOADTEST_GRPC_HOST`: HOST:PORT of the KServe v2 gRPC endpoint; unset, no gRPC user exists.
- `LOADTEST_GRPC_MODEL`, `LOADTEST_COMPLETION_MODEL`, `LOADTEST_CHAT_MODEL`: model names; unset,
  they are discovered once per process from `GET /models` (the default text-classification model;
  the default text-generation model; the first generation model that answers a chat request).
- `LOADTEST_SAMPLES_DIR`: if set, every request is also written to `samples-<host>-<pid>.csv` there
  (time, type, name, ms, ok, users) so the report can compute exact per-step percentiles.

Payloads are real English sentences (models/data/sentences_en.tsv: movie reviews, tweets, Amazon
and NYT snippets from the vaderSentiment distribution, MIT licence) and QA contexts, prompts and
chats built from them (loadtests/data/, `python -m loadtests.data.build`).
"""

from __future__ import annotations

import csv
import json
import os
import random
import socket
import sys
import threading
import time
import urllib.request
from pathlib import Path

from locust import FastHttpUser, User, constant_throughput, events, task
from locust.exception import StopUser

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from loadtests import shapes as _shapes  # noqa: E402

DATA = HERE / "data"
CORPUS = ROOT / "models" / "data" / "sentences_en.tsv"
GRPC_HOST = os.environ.get("LOADTEST_GRPC_HOST", "").strip()
RPS_PER_USER = float(os.environ.get("LOADTEST_RPS_PER_USER", "1") or 1)

# The load shape: exactly one shape class may be visible to Locust in this module.
if os.environ.get("LOADTEST_SHAPE", "").strip():
    SelectedShape = _shapes.get(os.environ["LOADTEST_SHAPE"].strip())


# --- payloads ------------------------------------------------------------------------------


def _load_sentences() -> list[str]:
    with CORPUS.open(encoding="utf-8") as f:
        rows = csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        # Everything but one-word fragments ("wow!"): 2 to ~90 words, as they come.
        return [r["text"].strip() for r in rows if len(r["text"].split()) >= 2]


def _load_jsonl(name: str) -> list[dict]:
    with (DATA / name).open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


SENTENCES = _load_sentences()
SHORT_SENTENCES = [s for s in SENTENCES if len(s.split()) <= 40]
QA = _load_jsonl("qa.jsonl")
PROMPTS = _load_jsonl("prompts.jsonl")
# OpenAI routes take no truncation: keep prompts and chats that fit the tiny profile's 256
# positions beside max_tokens (its tokenizer makes ~2.2 tokens a word; the template ~30).
SHORT_PROMPTS = [p for p in PROMPTS if p["words"] <= 70]
CHATS = [c for c in _load_jsonl("chats.jsonl") if c["words"] <= 50]


def sentences(low: int, high: int) -> list[str]:
    return random.sample(SENTENCES, random.randint(low, high))


# --- model discovery -----------------------------------------------------------------------

_models: dict[str, str] = {}
_models_lock = threading.Lock()


def _http_json(url: str, body: dict | None = None, timeout: float = 10.0):
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers={"content-type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())


def served_models(host: str) -> dict[str, str]:
    """{"grpc", "completion", "chat"} -> model name (env first, then `GET /models`); once per
    process. A role with no model is missing from the dict."""
    with _models_lock:
        if _models:
            return _models
        found = {
            "grpc": os.environ.get("LOADTEST_GRPC_MODEL", ""),
            "completion": os.environ.get("LOADTEST_COMPLETION_MODEL", ""),
            "chat": os.environ.get("LOADTEST_CHAT_MODEL", ""),
        }
        if not all(found.values()):
            models = _http_json(f"{host.rstrip('/')}/models")
            by_task: dict[str, list[str]] = {}
            for m in sorted(models, key=lambda m: not m.get("default")):
                by_task.setdefault(m["task"], []).append(m["name"])
            classifiers = by_task.get("text-classification", [])
            generators = by_task.get("text-generation", [])
            found["grpc"] = found["grpc"] or (classifiers[0] if classifiers else "")
            found["completion"] = found["completion"] or (generators[0] if generators else "")
            if not found["chat"]:
                for name in generators:  # the first one with a chat template
                    try:
                        _http_json(
                            f"{host.rstrip('/')}/v1/chat/completions",
                            {
                                "model": name,
                                "max_tokens": 1,
                                "messages": [{"role": "user", "content": "Hi"}],
                            },
                        )
                    except Exception:  # noqa: BLE001 - 400: no chat template
                        continue
                    found["chat"] = name
                    break
        _models.update({k: v for k, v in found.items() if v})
        return _models


# --- raw samples (exact per-step percentiles in the report) ---------------------------------

_samples_file = None
_environment = None


@events.init.add_listener
def _open_samples(environment, **_kwargs):
    global _samples_file, _environment
    _environment = environment  # its runner gives the user count of each sample
    folder = os.environ.get("LOADTEST_SAMPLES_DIR", "").strip()
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        # Host name too: distributed workers in containers may share a pid (and a volume).
        path = Path(folder) / f"samples-{socket.gethostname()}-{os.getpid()}.csv"
        _samples_file = open(path, "w", encoding="utf-8", buffering=1 << 16)  # noqa: SIM115
        _samples_file.write("time,type,name,ms,ok,users\n")


@events.request.add_listener
def _record_sample(request_type, name, response_time, exception=None, **_kwargs):
    if _samples_file is not None:
        _samples_file.write(
            f"{time.time():.3f},{request_type},{name},{response_time:.3f},"
            f"{0 if exception else 1},{_runner_user_count()}\n"
        )


def _runner_user_count() -> int:
    runner = _environment.runner if _environment is not None else None
    return runner.user_count if runner is not None else 0


@events.quitting.add_listener
def _close_samples(**_kwargs):
    if _samples_file is not None:
        _samples_file.flush()


@events.test_stop.add_listener
def _flush_samples(**_kwargs):
    if _samples_file is not None:
        _samples_file.flush()


# --- HTTP users ----------------------------------------------------------------------------


def _http_error(response) -> str:
    if not response.status_code:  # no HTTP answer at all
        return f"connection error: {getattr(response, 'error', None)!r}"
    return f"HTTP {response.status_code}: {(response.text or '')[:200]}"


class _HttpTaskUser(FastHttpUser):
    abstract = True
    wait_time = constant_throughput(RPS_PER_USER)
    # Long generations under overload must not hang a user forever.
    network_timeout = 60.0
    connection_timeout = 10.0

    def post_json(self, path: str, body: dict, name: str, check) -> None:
        """POST, then mark the request failed unless it is a 200 whose JSON passes `check`."""
        with self.client.post(path, json=body, name=name, catch_response=True) as response:
            if response.status_code != 200:
                response.failure(_http_error(response))
                return
            try:
                ok = check(response.json())
            except ValueError as err:
                response.failure(f"bad JSON: {err}")
                return
            if not ok:
                response.failure(f"unexpected body: {(response.text or '')[:200]}")

    def post_stream(self, path: str, body: dict, name: str, is_token) -> None:
        """POST a streaming request and read its SSE events: reports the whole stream as
        `SSE name` and the time to the first token (`is_token(event)`) as `TTFT name TTFT`."""
        start = time.perf_counter()
        ttft_ms: float | None = None
        events_seen = 0
        error = None
        length = 0
        with self.client.post(
            path, json=body, name=name, stream=True, catch_response=True
        ) as response:
            if response.status_code != 200:
                error = _http_error(response)
            else:
                buffer = ""
                for chunk in response.iter_content(chunk_size=4096, decode_content=True):
                    if isinstance(chunk, bytes):
                        chunk = chunk.decode("utf-8", errors="replace")
                    length += len(chunk)
                    buffer += chunk
                    while "\n" in buffer:
                        line, buffer = buffer.split("\n", 1)
                        line = line.strip()
                        if not line.startswith("data:"):
                            continue
                        payload = line[5:].strip()
                        if payload == "[DONE]":
                            continue
                        try:
                            event = json.loads(payload)
                        except ValueError:
                            error = f"bad SSE event: {payload[:120]}"
                            continue
                        if "error" in event:
                            error = f"stream error: {str(event['error'])[:200]}"
                        events_seen += 1
                        if ttft_ms is None and is_token(event):
                            ttft_ms = (time.perf_counter() - start) * 1000
                if error is None and ttft_ms is None:
                    error = f"stream ended without a token ({events_seen} events)"
            total_ms = (time.perf_counter() - start) * 1000
            response.request_meta["request_type"] = "SSE"
            response.request_meta["response_time"] = total_ms
            response.request_meta["response_length"] = length
            if error:
                response.failure(error)
            else:
                response.success()
        if ttft_ms is not None:
            self.environment.events.request.fire(
                request_type="TTFT",
                name=f"{name} TTFT",
                response_time=ttft_ms,
                response_length=0,
                exception=None,
                context={},
            )


def _is_list(body) -> bool:
    return isinstance(body, list) and len(body) > 0


class ClassifyUser(_HttpTaskUser):
    """Sentiment of one sentence (85%) or a small batch of them (a page of reviews)."""

    weight = 30

    @task
    def classify(self) -> None:
        texts = sentences(1, 1) if random.random() < 0.85 else sentences(2, 8)
        inputs = texts[0] if len(texts) == 1 else texts
        params = {"truncate": True}
        if random.random() < 0.3:
            params["top_k"] = 2
        self.post_json(
            "/classify",
            {"inputs": inputs, "parameters": params},
            "/classify",
            lambda b: _is_list(b) and len(b) == len(texts),
        )


class EmbedUser(_HttpTaskUser):
    """A search query (one sentence, 60%) or an indexing batch of 2–16 passages."""

    weight = 20

    @task
    def embed(self) -> None:
        texts = sentences(1, 1) if random.random() < 0.6 else sentences(2, 16)
        self.post_json(
            "/embed",
            {"inputs": texts, "parameters": {"truncate": True}},
            "/embed",
            lambda b: _is_list(b) and len(b) == len(texts),
        )


class AnswerUser(_HttpTaskUser):
    """Extractive QA over multi-paragraph contexts (several windows per request)."""

    weight = 10

    @task
    def answer(self) -> None:
        item = random.choice(QA)
        body = {"inputs": {"question": item["question"], "context": item["context"]}}
        self.post_json("/answer", body, "/answer", lambda b: isinstance(b, dict) and "answer" in b)


class FillMaskUser(_HttpTaskUser):
    """One sentence of at most 40 words with one word masked (a writing assistant's
    suggestions); the route, like the pipeline, refuses a text over the model's limit, which two
    of the corpus's longest sentences are for the tiny models (136 and 172 tokens)."""

    weight = 5

    @task
    def fill_mask(self) -> None:
        words = random.choice(SHORT_SENTENCES).split()
        words[random.randrange(len(words))] = "[MASK]"
        self.post_json(
            "/fill-mask",
            {"inputs": " ".join(words), "parameters": {"top_k": 5}},
            "/fill-mask",
            lambda b: _is_list(b) and "token_str" in b[0],
        )


class RerankUser(_HttpTaskUser):
    """A search query against 4-16 retrieved passages (TEI's `/rerank`)."""

    weight = 5

    @task
    def rerank(self) -> None:
        query, *texts = sentences(5, 17)
        body = {"query": query, "texts": texts, "truncate": True}
        self.post_json("/rerank", body, "/rerank", lambda b: _is_list(b) and len(b) == len(texts))


ZERO_SHOT_LABELS = ["sports", "politics", "technology", "food", "travel", "music", "health"]


class ZeroShotUser(_HttpTaskUser):
    """One sentence against 2-7 candidate topics (one NLI pair per topic)."""

    weight = 5

    @task
    def zero_shot(self) -> None:
        labels = random.sample(ZERO_SHOT_LABELS, random.randint(2, len(ZERO_SHOT_LABELS)))
        body = {
            "inputs": sentences(1, 1)[0],
            "parameters": {"candidate_labels": labels, "multi_label": random.random() < 0.3},
        }
        self.post_json(
            "/zero-shot",
            body,
            "/zero-shot",
            lambda b: isinstance(b, dict) and sorted(b.get("labels", [])) == sorted(labels),
        )


class NerUser(_HttpTaskUser):
    """Entities of one sentence (70%) or of 2-4 (a document's paragraphs); the Inference API's
    default grouping, `first` in 30%; `stride`, so that a text over the model's limit is read in
    windows rather than refused."""

    weight = 5

    @task
    def ner(self) -> None:
        texts = sentences(1, 1) if random.random() < 0.7 else sentences(2, 4)
        params: dict = {"stride": 32}
        if random.random() < 0.3:
            params["aggregation_strategy"] = "first"
        inputs = texts[0] if len(texts) == 1 else texts
        self.post_json(
            "/ner",
            {"inputs": inputs, "parameters": params},
            "/ner",
            lambda b: _is_list(b) and (len(texts) == 1 or len(b) == len(texts)),
        )


def _generation_parameters(prompt_words: int) -> dict:
    params = {"max_new_tokens": random.choice((16, 24, 32, 48)), "truncate": True}
    if random.random() < 0.5:
        params.update(do_sample=True, temperature=0.8, top_p=0.95)
    return params


class GenerateUser(_HttpTaskUser):
    """TGI-style completion of a prompt, whole answer at once."""

    weight = 6

    @task
    def generate(self) -> None:
        item = random.choice(PROMPTS)
        body = {"inputs": item["prompt"], "parameters": _generation_parameters(item["words"])}
        self.post_json(
            "/generate", body, "/generate", lambda b: isinstance(b, dict) and "generated_text" in b
        )


class GenerateStreamUser(_HttpTaskUser):
    """The same prompts streamed (TGI SSE): time to first token and total time."""

    weight = 6

    @task
    def generate_stream(self) -> None:
        item = random.choice(PROMPTS)
        body = {
            "inputs": item["prompt"],
            "stream": True,
            "parameters": _generation_parameters(item["words"]),
        }
        self.post_stream("/generate", body, "/generate stream", lambda e: "token" in e)


class TranslateUser(_HttpTaskUser):
    """One sentence to translate; new tokens capped at ~1.5x its words (random-weight models
    never stop early, so the cap is what a real model's end-of-sentence would do)."""

    weight = 8

    @task
    def translate(self) -> None:
        text = random.choice(SENTENCES)
        params = {"max_new_tokens": min(64, 8 + int(1.5 * len(text.split()))), "truncate": True}
        self.post_json(
            "/translate",
            {"inputs": text, "parameters": params},
            "/translate",
            lambda b: _is_list(b) and "translation_text" in b[0],
        )


class SummarizeUser(_HttpTaskUser):
    """Two to six sentences to summarize; new tokens capped at about half their words (as a
    real summarizer's end of summary would)."""

    weight = 4

    @task
    def summarize(self) -> None:
        text = " ".join(sentences(2, 6))
        params = {"max_new_tokens": min(48, 8 + len(text.split()) // 2), "truncate": True}
        self.post_json(
            "/summarize",
            {"inputs": text, "parameters": params},
            "/summarize",
            lambda b: _is_list(b) and "summary_text" in b[0],
        )


T5_PROMPTS = ("translate English to German: ", "translate English to French: ", "summarize: ")


class Text2TextUser(_HttpTaskUser):
    """T5's own prompts: a task prefix and one sentence."""

    weight = 3

    @task
    def text2text(self) -> None:
        text = random.choice(T5_PROMPTS) + random.choice(SENTENCES)
        params = {"max_new_tokens": min(48, 8 + len(text.split())), "truncate": True}
        self.post_json(
            "/text2text",
            {"inputs": text, "parameters": params},
            "/text2text",
            lambda b: _is_list(b) and "generated_text" in b[0],
        )


class OpenAIUser(_HttpTaskUser):
    """OpenAI-compatible clients: plain completions (2/3) and streamed chat (1/3)."""

    weight = 10

    def on_start(self) -> None:
        models = served_models(self.host)
        self.completion_model = models.get("completion")
        self.chat_model = models.get("chat")
        if not self.completion_model and not self.chat_model:
            raise StopUser()

    @task(2)
    def completion(self) -> None:
        if not self.completion_model:
            return
        item = random.choice(SHORT_PROMPTS)
        body = {
            "model": self.completion_model,
            "prompt": item["prompt"],
            "max_tokens": random.choice((16, 32)),
            "temperature": random.choice((0, 0.7)),
        }
        self.post_json(
            "/v1/completions",
            body,
            "/v1/completions",
            lambda b: isinstance(b, dict) and bool(b.get("choices")),
        )

    @task(1)
    def chat_stream(self) -> None:
        if not self.chat_model:
            return
        body = {
            "model": self.chat_model,
            "messages": random.choice(CHATS)["messages"],
            "max_tokens": random.choice((16, 32)),
            "temperature": 0.7,
            "stream": True,
        }
        self.post_stream(
            "/v1/chat/completions",
            body,
            "/v1/chat/completions stream",
            lambda e: bool(e.get("choices")) and "content" in e["choices"][0].get("delta", {}),
        )


# --- KServe v2 gRPC user ---------------------------------------------------------------------

if GRPC_HOST:
    # grpcio must cooperate with gevent, or one blocking call would stall every Locust user.
    import grpc.experimental.gevent as _grpc_gevent

    _grpc_gevent.init_gevent()

    import numpy as np
    import tritonclient.grpc as grpcclient

    class KServeGrpcUser(User):
        """KServe v2 `ModelInfer` on the default text-classification model over gRPC
        (tritonclient.grpc, as Triton's clients call it): one sentence per request."""

        weight = 10
        wait_time = constant_throughput(RPS_PER_USER)

        def on_start(self) -> None:
            self.model = served_models(self.host).get("grpc")
            if not self.model:
                raise StopUser()
            self.client = grpcclient.InferenceServerClient(url=GRPC_HOST)

        def on_stop(self) -> None:
            self.client.close()

        @task
        def model_infer(self) -> None:
            text = random.choice(SENTENCES)
            tensor = grpcclient.InferInput("text", [1], "BYTES")
            tensor.set_data_from_numpy(np.array([text.encode("utf-8")], dtype=np.object_))
            start_time = time.time()
            start = time.perf_counter()
            exception = None
            length = 0
            try:
                # Like the HTTP users: a few corpus sentences are longer than a tiny model's
                # 128 positions, which the service refuses unless truncation is asked for.
                result = self.client.infer(
                    self.model, [tensor], client_timeout=60.0, parameters={"truncate": True}
                )
                labels = result.as_numpy("label")
                if labels is None or labels.shape[0] != 1:
                    raise ValueError(f"unexpected outputs: {result.get_response(as_json=True)}")
                length = len(result.get_response().SerializeToString())
            except grpcclient.InferenceServerException as err:
                # Its repr drops the status and message; Locust groups failures by repr.
                exception = RuntimeError(f"{err.status()}: {err.message()}")
            except Exception as err:  # noqa: BLE001 - every failure is reported to Locust
                exception = err
            self.environment.events.request.fire(
                request_type="grpc",
                name="ModelInfer text-classification",
                response_time=(time.perf_counter() - start) * 1000,
                response_length=length,
                exception=exception,
                context={},
                start_time=start_time,
            )
