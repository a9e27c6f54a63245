"""The HTTP service against its contract (docs/api.md), over real HTTP to `bentoml serve`.

Every task endpoint's output is compared with the `transformers` pipeline on the same tiny
checkpoint the served model was exported from (the tiny builders are deterministic).
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import requests

from models.tiny import corpus_sentences

SENTENCES = [s for s in corpus_sentences()[:40] if len(s.split()) < 40][:8] + [
    "Un café, s'il vous plaît — très bien ☕",
    "Short.",
]


@pytest.fixture(scope="module")
def url(live_server) -> str:
    return live_server.url


def post(url: str, path: str, body: dict, **kwargs) -> requests.Response:
    return requests.post(f"{url}{path}", json=body, timeout=60, **kwargs)


@pytest.fixture(scope="module")
def pipelines(tiny_checkpoint):
    from transformers import pipeline

    cache: dict[tuple[str, str], object] = {}

    def get(task: str, kind: str):
        if (task, kind) not in cache:
            cache[(task, kind)] = pipeline(task, model=str(tiny_checkpoint(kind)))
        return cache[(task, kind)]

    return get


# --- task endpoints equal the pipelines -------------------------------------------------------


def test_classify_matches_transformers_pipeline(url, pipelines):
    expected = pipelines("text-classification", "bert-classifier")(SENTENCES, top_k=2)
    got = post(url, "/classify", {"inputs": SENTENCES, "parameters": {"top_k": 2}}).json()
    assert len(got) == len(expected)
    for ours, theirs in zip(got, expected, strict=True):
        assert [o["label"] for o in ours] == [t["label"] for t in theirs]
        np.testing.assert_allclose(
            [o["score"] for o in ours], [t["score"] for t in theirs], atol=1e-4
        )


def test_classify_single_input_and_named_model(url, pipelines):
    expected = pipelines("text-classification", "distilbert-classifier")(SENTENCES[0])
    got = post(
        url, "/classify", {"inputs": SENTENCES[0], "model": "tiny-distilbert-classifier"}
    ).json()
    # One list per input, a single string included (the HF Inference API's shape).
    assert isinstance(got, list) and len(got) == 1 and len(got[0]) == 1
    assert got[0][0]["label"] == expected[0]["label"]
    assert abs(got[0][0]["score"] - expected[0]["score"]) < 1e-4


def _same_labels(ours: list[dict], theirs: list[dict]) -> None:
    assert [o["label"] for o in ours] == [t["label"] for t in theirs]
    np.testing.assert_allclose([o["score"] for o in ours], [t["score"] for t in theirs], atol=1e-4)


def test_tei_predict_matches_transformers_pipeline(url, pipelines):
    """TEI's `/predict`: every label, best first; a flat pair is one sequence (text, text_pair),
    as the pipeline's `{"text", "text_pair"}`; a list of lists is a batch."""
    classify = pipelines("text-classification", "bert-classifier")
    text, pair = SENTENCES[0], SENTENCES[1]
    _same_labels(post(url, "/predict", {"inputs": text}).json(), classify(text, top_k=None))
    pair_expected = classify({"text": text, "text_pair": pair}, top_k=None)
    _same_labels(post(url, "/predict", {"inputs": [text, pair]}).json(), pair_expected)
    assert pair_expected != classify(text, top_k=None)  # the pair really reached the model
    batch = post(url, "/predict", {"inputs": [[text], [text, pair], [SENTENCES[2]]]}).json()
    for ours, theirs in zip(
        batch,
        [classify(text, top_k=None), pair_expected, classify(SENTENCES[2], top_k=None)],
        strict=True,
    ):
        _same_labels(ours, theirs)
    raw = post(url, "/predict", {"inputs": text, "raw_scores": True}).json()
    _same_labels(raw, classify(text, top_k=None, function_to_apply="none"))
    long_text = " ".join(SENTENCES) * 20
    for direction in ("Left", "right"):
        cut = post(
            url,
            "/predict",
            {"inputs": [long_text, pair], "truncate": True, "truncation_direction": direction},
        ).json()
        classify.tokenizer.truncation_side = direction.lower()
        try:
            expected = classify({"text": long_text, "text_pair": pair}, top_k=None, truncation=True)
        finally:
            classify.tokenizer.truncation_side = "right"
        _same_labels(cut, expected)
    refused = post(url, "/predict", {"inputs": long_text})
    assert refused.status_code == 422 and refused.json()["field"] == "inputs"
    for inputs, field in (
        ([text, pair, text], "inputs"),
        ([[text], []], "inputs.1"),
        ([[text], [text, pair, text]], "inputs.1"),
    ):
        bad = post(url, "/predict", {"inputs": inputs})
        assert bad.status_code == 422 and bad.json()["field"] == field, (inputs, bad.text)


def test_answer_matches_transformers_pipeline(url, pipelines):
    context = " ".join(corpus_sentences()[:30])  # several windows of the 128-token model
    question = "What did the critics think of the film?"
    qa = pipelines("question-answering", "distilbert-qa")
    expected = qa(question=question, context=context, top_k=3)
    got = post(
        url,
        "/answer",
        {"inputs": {"question": question, "context": context}, "parameters": {"top_k": 3}},
    ).json()
    assert [(g["answer"], g["start"], g["end"]) for g in got] == [
        (e["answer"], e["start"], e["end"]) for e in expected
    ]
    np.testing.assert_allclose([g["score"] for g in got], [e["score"] for e in expected], atol=1e-4)
    single = post(url, "/answer", {"inputs": {"question": question, "context": context}}).json()
    assert single["answer"] == expected[0]["answer"]


def test_generate_matches_transformers_pipeline(url, pipelines):
    prompt = "The movie was"
    expected = pipelines("text-generation", "llama-chat")(
        prompt, max_new_tokens=12, do_sample=False, return_full_text=False
    )
    got = post(url, "/generate", {"inputs": prompt, "parameters": {"max_new_tokens": 12}}).json()
    assert got == {"generated_text": expected[0]["generated_text"]}
    full = post(
        url,
        "/generate",
        {
            "inputs": prompt,
            "model": "tiny-gpt2",
            "parameters": {"max_new_tokens": 12, "return_full_text": True},
        },
    ).json()
    gpt2 = pipelines("text-generation", "gpt2")(prompt, max_new_tokens=12, do_sample=False)
    assert full["generated_text"] == gpt2[0]["generated_text"]


def test_generate_stream_is_tgi_sse(url, pipelines):
    prompt = "I would watch it again because"
    expected = pipelines("text-generation", "llama-chat")(
        prompt, max_new_tokens=10, do_sample=False, return_full_text=False
    )[0]["generated_text"]
    response = requests.post(
        f"{url}/generate",
        timeout=60,
        stream=True,
        json={
            "inputs": prompt,
            "stream": True,
            "parameters": {"max_new_tokens": 10, "details": True},
        },
    )
    assert response.headers["content-type"].startswith("text/event-stream")
    events = [
        json.loads(line[5:])
        for line in response.iter_lines(decode_unicode=True)
        if line.startswith("data:")
    ]
    assert len(events) == 10
    assert all(e["generated_text"] is None for e in events[:-1])
    assert events[-1]["generated_text"] == expected
    assert "".join(e["token"]["text"] for e in events) == expected
    assert events[-1]["details"]["finish_reason"] == "length"
    assert events[-1]["details"]["generated_tokens"] == 10


def test_translate_matches_transformers_pipeline(url, pipelines):
    texts = SENTENCES[:4]
    t5 = pipelines("translation_en_to_fr", "t5")
    expected = t5(texts, max_new_tokens=16)
    got = post(url, "/translate", {"inputs": texts, "parameters": {"max_new_tokens": 16}}).json()
    assert got == expected
    marian = pipelines("translation", "marian")
    expected = marian(texts[:2], max_new_tokens=16, num_beams=2)
    got = post(
        url,
        "/translate",
        {
            "inputs": texts[:2],
            "model": "tiny-marian",
            "parameters": {"max_new_tokens": 16, "num_beams": 2},
        },
    ).json()
    assert got == expected


def test_embed_matches_sentence_transformers(url, tiny_checkpoint):
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(tiny_checkpoint("bert-embedder")), device="cpu")
    expected = model.encode(SENTENCES)
    got = np.array(post(url, "/embed", {"inputs": SENTENCES}).json())
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, atol=1e-4)


def test_models_lists_every_served_model_with_defaults(url):
    models = requests.get(f"{url}/models", timeout=10).json()
    by_name = {m["name"]: m for m in models}
    assert by_name["tiny-bert-classifier"]["default"] is True
    assert by_name["tiny-distilbert-classifier"]["default"] is False
    assert by_name["tiny-distilbert-classifier-o2-int8"]["quantization"] == "int8"
    from service.runtime.registry import TASKS

    # The tiny profile serves every registered task, each with one default.
    defaults = [m["task"] for m in models if m["default"]]
    assert sorted(defaults) == sorted(TASKS)
    for m in models:
        assert set(m) == {
            "task",
            "name",
            "tag",
            "source",
            "graph",
            "optimization",
            "quantization",
            "default",
            "untrained",
        }
        assert m["untrained"] is True  # the tiny profile: random weights, and it says so
        assert m["tag"].startswith(m["name"] + ":")


def test_openapi_document_lists_every_endpoint(url):
    spec = requests.get(f"{url}/docs.json", timeout=10).json()
    for path in (
        "/classify",
        "/answer",
        "/generate",
        "/translate",
        "/embed",
        "/predict",
        "/generate_stream",
        "/",
        "/fill-mask",
        "/rerank",
        "/zero-shot",
        "/summarize",
        "/text2text",
        "/ner",
        "/v1/rerank",
        "/models",
        "/v1/completions",
        "/v1/chat/completions",
        "/v1/embeddings",
        "/v1/models",
    ):
        assert path in spec["paths"], path
    body = spec["paths"]["/classify"]["post"]["requestBody"]["content"]["application/json"]
    assert "schema" in body


# --- batching ---------------------------------------------------------------------------------


def _histogram(metrics_text: str, name: str, label: str) -> dict[str, float]:
    buckets: dict[str, float] = {}
    for line in metrics_text.splitlines():
        if line.startswith(f"{name}_bucket{{") and label in line:
            le = line.split('le="')[1].split('"')[0]
            buckets[le] = buckets.get(le, 0.0) + float(line.rsplit(" ", 1)[1])
    return buckets


def test_concurrent_requests_are_batched(url):
    label = 'method_name="classify"'
    before = _histogram(
        requests.get(f"{url}/metrics", timeout=10).text,
        "bentoml_service_adaptive_batch_size",
        label,
    )
    body = {"inputs": SENTENCES[:4], "model": "tiny-distilbert-classifier"}
    with ThreadPoolExecutor(16) as pool:
        statuses = list(pool.map(lambda _: post(url, "/classify", body).status_code, range(64)))
    assert statuses == [200] * 64
    after = _histogram(
        requests.get(f"{url}/metrics", timeout=10).text,
        "bentoml_service_adaptive_batch_size",
        label,
    )
    batches = after["+Inf"] - before.get("+Inf", 0.0)
    single = after["1.0"] - before.get("1.0", 0.0)
    assert batches > 0
    assert batches - single > 0, "no batch larger than one input under 16 concurrent clients"
    # 64 requests of 4 inputs ran in fewer model calls than inputs.
    assert batches < 64 * 4


# --- errors -----------------------------------------------------------------------------------

ERROR_CASES = [
    ("/classify", b'{"inputs": ', 400, "body"),
    ("/classify", {"inputs": 42}, 422, "inputs"),
    ("/classify", {"inputs": ""}, 422, "inputs"),
    ("/classify", {"inputs": ["fine", "   "]}, 422, "inputs[1]"),
    ("/classify", {"inputs": ["x"] * 65}, 422, "inputs"),
    ("/classify", {"inputs": "word " * 400}, 422, "inputs"),
    ("/classify", {"inputs": "fine", "parameters": {"colour": "red"}}, 422, "parameters.colour"),
    ("/classify", {"inputs": "fine", "parameters": {"top_k": "many"}}, 422, "parameters.top_k"),
    ("/classify", {"inputs": "fine", "unknown": 1}, 422, "unknown"),
    ("/classify", {"inputs": "fine", "model": "tiny-t5"}, 422, "model"),
    ("/answer", {"inputs": {"question": "Who?"}}, 422, "inputs.context"),
    (
        "/generate",
        {"inputs": "Hi", "parameters": {"max_new_tokens": 100000}},
        422,
        "parameters.max_new_tokens",
    ),
    ("/generate", {"inputs": "Hi", "parameters": {"watermark": True}}, 422, "parameters"),
    ("/generate", {"inputs": "word " * 400}, 422, "inputs"),
    ("/translate", {"inputs": "Hi", "parameters": {"num_beams": 0}}, 422, "parameters.num_beams"),
    ("/embed", {"inputs": []}, 422, "inputs"),
]


@pytest.mark.parametrize(("path", "body", "status", "field"), ERROR_CASES)
def test_bad_input_gets_4xx_naming_the_field(url, path, body, status, field):
    if isinstance(body, bytes):
        response = requests.post(
            f"{url}{path}", data=body, timeout=30, headers={"content-type": "application/json"}
        )
    else:
        response = post(url, path, body)
    assert response.status_code == status, response.text
    payload = response.json()
    assert payload["error"]
    assert (payload["field"] or "").startswith(field), payload


def test_too_long_input_message_states_the_limit(url):
    payload = post(url, "/classify", {"inputs": "word " * 400}).json()
    assert "128" in payload["error"]
    ok = post(url, "/classify", {"inputs": "word " * 400, "parameters": {"truncate": True}})
    assert ok.status_code == 200


def test_unknown_model_is_404(url):
    response = post(url, "/classify", {"inputs": "fine", "model": "no-such-model"})
    assert response.status_code == 404
    assert response.json()["field"] == "model"


def test_server_keeps_serving_after_errors(url):
    for path, body, _, _ in ERROR_CASES:
        if isinstance(body, dict):
            post(url, path, body)
    assert requests.get(f"{url}/readyz", timeout=10).status_code == 200
    assert post(url, "/classify", {"inputs": "still alive"}).status_code == 200
