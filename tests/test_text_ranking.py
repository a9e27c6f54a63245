"""Rerank: the torch-free cross-encoder scores pairs as `sentence_transformers.CrossEncoder`
does (same order, scores within 1e-4), on TEI's `/rerank`, the Cohere/Jina `/v1/rerank` and
KServe v2 (REST and gRPC)."""

from __future__ import annotations

import numpy as np
import pytest
import requests

from models.tiny import MAX_POSITIONS, corpus_sentences
from service.runtime.errors import InvalidInput
from service.runtime.tasks.text_ranking import CrossEncoderRanker, RankingParameters

KIND = "bert-cross-encoder"
MODEL = "tiny-bert-reranker"
SCORE_TOLERANCE = 1e-4
QUERIES = ["what is a good film", "Café déjà vu?", "这部电影", "line\nbreak\ttab", "?!"]


def _pairs() -> list[tuple[str, str]]:
    texts = corpus_sentences()[:20]
    return [(QUERIES[i % len(QUERIES)], text) for i, text in enumerate(texts)]


@pytest.fixture(scope="module")
def ranker(tiny_exported) -> CrossEncoderRanker:
    model = CrossEncoderRanker.load(tiny_exported(KIND), threads=1)
    model.warmup()
    return model


@pytest.fixture(scope="module")
def reference(tiny_checkpoint):
    from sentence_transformers import CrossEncoder

    return CrossEncoder(str(tiny_checkpoint(KIND)), device="cpu", max_length=MAX_POSITIONS)


def test_scores_match_cross_encoder_predict(ranker, reference):
    pairs = _pairs()
    ours = ranker.run([(pair, RankingParameters()) for pair in pairs])
    theirs = reference.predict(pairs)
    assert np.argsort(ours).tolist() == np.argsort(theirs).tolist()
    assert ours == pytest.approx(theirs.tolist(), abs=SCORE_TOLERANCE)
    # raw_scores: the logit itself (CrossEncoder with an identity activation).
    import torch

    raw = ranker.run([(pair, RankingParameters(raw_scores=True)) for pair in pairs])
    logits = reference.predict(pairs, activation_fn=torch.nn.Identity())
    assert raw == pytest.approx(logits.tolist(), abs=SCORE_TOLERANCE)


def test_long_pairs_are_truncated_as_the_reference_truncates_or_refused(ranker, reference):
    long_text = " ".join(corpus_sentences()[:40])
    pair = ("a short query", long_text)
    with pytest.raises(InvalidInput) as caught:
        ranker.run([(pair, RankingParameters())])
    assert caught.value.field == "texts"
    (ours,) = ranker.run([(pair, RankingParameters(truncate=True))])
    (theirs,) = reference.predict([pair])
    assert ours == pytest.approx(float(theirs), abs=SCORE_TOLERANCE)


def test_the_activation_follows_the_config():
    from service.runtime.tasks.text_ranking import activation

    assert activation({}) == "sigmoid"
    identity = {"sentence_transformers": {"activation_fn": "torch.nn.modules.linear.Identity"}}
    assert activation(identity) == "none"


# --- over the running service -------------------------------------------------------------


def _post(url: str, path: str, body: dict) -> requests.Response:
    return requests.post(f"{url}{path}", json=body, timeout=60)


def test_tei_rerank_ranks_texts_best_first(live_server, reference):
    query, texts = "a good film", corpus_sentences()[:6]
    body = {"query": query, "texts": texts, "return_text": True}
    response = _post(live_server.url, "/rerank", body)
    assert response.status_code == 200, response.text
    ranks = response.json()
    expected = reference.predict([(query, t) for t in texts])
    assert [r["index"] for r in ranks] == sorted(range(6), key=lambda i: -expected[i])
    for rank in ranks:
        assert rank["score"] == pytest.approx(float(expected[rank["index"]]), abs=SCORE_TOLERANCE)
        assert rank["text"] == texts[rank["index"]]
    raw = _post(live_server.url, "/rerank", {"query": query, "texts": texts, "raw_scores": True})
    assert raw.status_code == 200 and "text" not in raw.json()[0]
    logit = {r["index"]: r["score"] for r in raw.json()}
    assert 1 / (1 + np.exp(-logit[0])) == pytest.approx(float(expected[0]), abs=SCORE_TOLERANCE)


def test_cohere_rerank_shape_with_top_n_and_documents(live_server, reference):
    query, texts = "a good film", corpus_sentences()[:5]
    documents = [texts[0], {"text": texts[1]}, *texts[2:]]
    body = {
        "model": MODEL,
        "query": query,
        "documents": documents,
        "top_n": 3,
        "return_documents": True,
    }
    response = _post(live_server.url, "/v1/rerank", body)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["id"] and answer["model"] == MODEL
    plain = _post(live_server.url, "/v1/rerank", {"query": query, "documents": texts[:2]}).json()
    assert "document" not in plain["results"][0] and "model" not in plain
    expected = reference.predict([(query, t) for t in texts])
    best = sorted(range(5), key=lambda i: -expected[i])[:3]
    assert [r["index"] for r in answer["results"]] == best
    for result in answer["results"]:
        assert result["document"] == {"text": texts[result["index"]]}
        assert result["relevance_score"] == pytest.approx(
            float(expected[result["index"]]), abs=SCORE_TOLERANCE
        )


@pytest.mark.parametrize(
    "path, body, field",
    [
        ("/rerank", {"query": "q", "texts": ["t"] * 10_000}, "texts"),
        ("/v1/rerank", {"query": "q", "documents": ["t"] * 10_000}, "documents"),
        ("/rerank", {"query": "q", "texts": []}, "texts"),
        ("/rerank", {"query": " ", "texts": ["t"]}, "query"),
        ("/v1/rerank", {"query": "q", "documents": ["t"], "top_n": 0}, "top_n"),
    ],
)
def test_bad_rerank_requests_get_a_4xx_naming_the_field(live_server, path, body, field):
    response = _post(live_server.url, path, body)
    assert 400 <= response.status_code < 500, response.text
    assert field in response.text
    assert _post(live_server.url, "/rerank", {"query": "q", "texts": ["t"]}).status_code == 200


def test_kserve_v2_scores_pairs_over_rest_and_grpc(live_server):
    import tritonclient.grpc as grpcclient
    import tritonclient.http as httpclient

    texts = corpus_sentences()[:3]
    expected = {
        r["index"]: r["score"]
        for r in _post(live_server.url, "/rerank", {"query": "a film", "texts": texts}).json()
    }
    for module, address in (
        (httpclient, live_server.url.removeprefix("http://")),
        (grpcclient, live_server.grpc_address),
    ):
        client = module.InferenceServerClient(address)
        try:
            inputs = []
            for name, values in (("query", ["a film"] * 3), ("text", texts)):
                tensor = module.InferInput(name, [3], "BYTES")
                tensor.set_data_from_numpy(np.array([v.encode() for v in values], dtype=object))
                inputs.append(tensor)
            result = client.infer(MODEL, inputs)
        finally:
            client.close()
        scores = result.as_numpy("score")
        assert scores.tolist() == pytest.approx([expected[i] for i in range(3)], abs=1e-6)
