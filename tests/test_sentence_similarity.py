"""`/similarity` (the embeddings task's sentence-similarity route): cosines equal
`sentence_transformers.util.cos_sim` on the same weights, and `InferenceClient.sentence_similarity`
works unchanged."""

from __future__ import annotations

import textwrap

import pytest
import requests

from models.tiny import corpus_sentences

SOURCE = "A cat sleeps on the mat."
SENTENCES = ["Café déjà vu 😍", "这部电影很好看", *corpus_sentences()[:20]]


def _post(url: str, body: dict) -> requests.Response:
    return requests.post(f"{url}/similarity", json=body, timeout=60)


def test_similarity_equals_cos_sim(live_server, tiny_checkpoint):
    from sentence_transformers import SentenceTransformer, util

    model = SentenceTransformer(str(tiny_checkpoint("bert-embedder")), device="cpu")
    expected = util.cos_sim(model.encode([SOURCE]), model.encode(SENTENCES))[0].tolist()
    body = {"inputs": {"source_sentence": SOURCE, "sentences": SENTENCES}}
    response = _post(live_server.url, body)
    assert response.status_code == 200, response.text
    assert response.json() == pytest.approx(expected, abs=1e-4)
    # TEI's parameters: truncation of a long sentence, as the embed route does it.
    long = " ".join(corpus_sentences()[:40])
    refused = _post(live_server.url, {"inputs": {"source_sentence": SOURCE, "sentences": [long]}})
    assert refused.status_code == 422, refused.text
    body = {
        "inputs": {"source_sentence": SOURCE, "sentences": [long]},
        "parameters": {"truncate": True},
    }
    assert _post(live_server.url, body).status_code == 200


def test_inference_client_sentence_similarity_works_unchanged(live_server):
    from tests.test_client_compat import run_client_script

    url = live_server.url + "/similarity"
    script = textwrap.dedent(f"""
        import json
        from huggingface_hub import InferenceClient
        print(json.dumps(InferenceClient(model={url!r}).sentence_similarity(
            {SOURCE!r}, other_sentences={SENTENCES[:3]!r}
        )))
    """)
    got = run_client_script(script)
    body = {"inputs": {"source_sentence": SOURCE, "sentences": SENTENCES[:3]}}
    assert got == _post(live_server.url, body).json()


@pytest.mark.parametrize(
    "body, field",
    [
        ({"inputs": {"source_sentence": SOURCE, "sentences": []}}, "inputs.sentences"),
        ({"inputs": {"source_sentence": " ", "sentences": ["a"]}}, "inputs.source_sentence"),
        ({"inputs": {"source_sentence": SOURCE, "sentences": ["a"] * 1000}}, "inputs.sentences"),
        ({"inputs": {"sentences": ["a"]}}, "inputs.source_sentence"),
    ],
)
def test_bad_similarity_requests_get_a_4xx_naming_the_field(live_server, body, field):
    response = _post(live_server.url, body)
    assert 400 <= response.status_code < 500, response.text
    assert field in response.text, response.text
