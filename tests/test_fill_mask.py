"""The torch-free fill-mask runtime returns what the `transformers` fill-mask pipeline returns
on equal weights: the same tokens in the same order, the same sequences, scores within 1e-4."""

from __future__ import annotations

import textwrap

import pytest

from models.tiny import corpus_sentences
from service.runtime.errors import InvalidInput
from service.runtime.tasks.fill_mask import FillMaskParameters, MaskFiller

KINDS = ["bert-fill-mask", "distilbert-fill-mask"]
SCORE_TOLERANCE = 1e-4

HANDCRAFTED = [
    "[MASK]",
    "Paris is the [MASK] of France.",
    "[MASK] is a word at the start.",
    "The end is a [MASK]",
    "Café déjà vu — naïve [MASK] façade, très élégant.",
    "I love it 😍🔥 but the [MASK] 😭",
    "这部电影很[MASK]看",
    "line\nbreak\t[MASK]   and  spaces",
    "NOT GOOD. [MASK] GOOD AT ALL!!!",
    "10/10 would [MASK] again, $5 well spent (really).",
]


def _inputs() -> list[str]:
    """Handcrafted texts and corpus sentences with one word replaced by the mask."""
    texts = list(HANDCRAFTED)
    for i, sentence in enumerate(corpus_sentences()[:16]):
        words = sentence.split()
        words[i % len(words)] = "[MASK]"
        texts.append(" ".join(words))
    return texts


@pytest.fixture(scope="module", params=KINDS)
def kind(request) -> str:
    return request.param


@pytest.fixture(scope="module")
def filler(kind, tiny_exported) -> MaskFiller:
    model = MaskFiller.load(tiny_exported(kind), threads=1)
    model.warmup()
    return model


@pytest.fixture(scope="module")
def reference(kind, tiny_checkpoint):
    from transformers import pipeline

    return pipeline("fill-mask", model=str(tiny_checkpoint(kind)), device="cpu")


def _assert_same(ours: list[dict], theirs: list[dict]) -> None:
    assert [(p["token"], p["token_str"], p["sequence"]) for p in ours] == [
        (p["token"], p["token_str"], p["sequence"]) for p in theirs
    ]
    for a, b in zip(ours, theirs, strict=True):
        assert a["score"] == pytest.approx(b["score"], abs=SCORE_TOLERANCE)


@pytest.mark.parametrize("top_k", [1, 5, 12])
def test_fill_mask_matches_the_pipeline(filler, reference, top_k):
    texts = _inputs()
    assert len(texts) >= 20
    ours = filler.run([(t, FillMaskParameters(top_k=top_k)) for t in texts])
    for text, mine in zip(texts, ours, strict=True):
        _assert_same(mine, reference(text, top_k=top_k))


def test_targets_match_the_pipeline(filler, reference):
    vocabulary_words = ["the", "good", "film", "is"]
    # Out-of-vocabulary words count as their first token, as the pipeline does.
    targets = [*vocabulary_words, "unbelievablyxyz", "good"]
    for text in _inputs()[:8]:
        (mine,) = filler.run([(text, FillMaskParameters(targets=targets, top_k=10))])
        theirs = reference(text, targets=targets, top_k=10)
        _assert_same(mine, theirs)
    (mine,) = filler.run([("a [MASK] b", FillMaskParameters(targets="film"))])
    assert [p["token_str"] for p in mine] == ["film"]


@pytest.mark.parametrize(
    "text, message",
    [("no mask at all", "it has no"), ("[MASK] and [MASK]", "it has 2")],
)
def test_inputs_need_exactly_one_mask(filler, text, message):
    with pytest.raises(InvalidInput, match=message) as caught:
        filler.run([(text, FillMaskParameters())])
    assert caught.value.field == "inputs"
    # In a batch, the field names the input.
    with pytest.raises(InvalidInput) as caught:
        filler.run([("a [MASK]", FillMaskParameters()), (text, FillMaskParameters())])
    assert caught.value.field == "inputs[1]"


def test_a_text_over_the_limit_is_refused_without_offering_a_parameter_it_lacks(filler):
    text = "a [MASK] " + "word " * (filler.encoder.max_input_tokens + 10)
    with pytest.raises(InvalidInput, match="send a shorter text") as caught:
        filler.run([(text, FillMaskParameters())])
    assert caught.value.field == "inputs" and "truncate" not in str(caught.value)


# --- the task over every door of the running service ---------------------------------------

MODEL = "tiny-bert-fill-mask"


def _post(url: str, path: str, body: dict):
    import requests

    return requests.post(f"{url}{path}", json=body, timeout=60)


def test_http_route_answers_the_pipeline_payload(live_server, tiny_checkpoint):
    from transformers import pipeline

    reference = pipeline("fill-mask", model=str(tiny_checkpoint("bert-fill-mask")), device="cpu")
    text = "Paris is the [MASK] of France."
    response = _post(live_server.url, "/fill-mask", {"inputs": text, "model": MODEL})
    assert response.status_code == 200, response.text
    _assert_same(response.json(), reference(text))
    # A list of inputs answers a list per input; parameters as the pipeline takes them.
    texts = ["a [MASK] film", "the [MASK] is good"]
    body = {"inputs": texts, "parameters": {"top_k": 3, "targets": ["film", "good", "the"]}}
    response = _post(live_server.url, "/fill-mask", body)
    assert response.status_code == 200, response.text
    for mine, text in zip(response.json(), texts, strict=True):
        _assert_same(mine, reference(text, top_k=3, targets=["film", "good", "the"]))


def test_inference_client_fill_mask_works_unchanged(live_server):
    """`InferenceClient.fill_mask` and its async twin, with the spec's parameters."""
    from tests.test_client_compat import run_client_script

    url = live_server.url + "/fill-mask"
    script = textwrap.dedent(f"""
        import asyncio, json
        from huggingface_hub import AsyncInferenceClient, InferenceClient

        def rows(predictions):
            return [[p.score, p.token, p.token_str, p.sequence] for p in predictions]

        text = "Paris is the [MASK] of France."
        client = InferenceClient(model={url!r})
        out = {{
            "top_k": rows(client.fill_mask(text, top_k=3)),
            "targets": rows(client.fill_mask(text, targets=["film", "good", "zzzunknown"])),
            "async": rows(asyncio.run(AsyncInferenceClient(model={url!r}).fill_mask(text))),
        }}
        print(json.dumps(out))
    """)
    got = run_client_script(script)
    text = "Paris is the [MASK] of France."
    for key, parameters in (
        ("top_k", {"top_k": 3}),
        ("targets", {"targets": ["film", "good", "zzzunknown"]}),
        ("async", {}),
    ):
        expected = _post(
            live_server.url, "/fill-mask", {"inputs": text, "parameters": parameters}
        ).json()
        rows = [[p["score"], p["token"], p["token_str"], p["sequence"]] for p in expected]
        assert got[key] == rows, key
    assert len(got["top_k"]) == 3 and len(got["async"]) == 5


@pytest.mark.parametrize(
    "body, field",
    [
        ({"inputs": "no mask here"}, "inputs"),
        ({"inputs": "[MASK] and [MASK]"}, "inputs"),
        ({"inputs": ["a [MASK]", "none"]}, "inputs[1]"),
        ({"inputs": "a [MASK]", "parameters": {"top_k": 0}}, "parameters.top_k"),
        ({"inputs": "a [MASK]", "parameters": {"targets": []}}, "parameters.targets"),
        ({"inputs": "a [MASK]", "parameters": {"aggregation": 1}}, "parameters.aggregation"),
    ],
)
def test_bad_input_gets_a_4xx_naming_the_field(live_server, body, field):
    response = _post(live_server.url, "/fill-mask", body)
    assert 400 <= response.status_code < 500, response.text
    assert field in response.text, response.text
    # The worker is still there.
    assert _post(live_server.url, "/fill-mask", {"inputs": "a [MASK]"}).status_code == 200


def test_kserve_v2_rest_and_grpc_answer_what_the_route_answers(live_server):
    import numpy as np
    import tritonclient.grpc as grpcclient
    import tritonclient.http as httpclient

    texts = ["Paris is the [MASK] of France.", "a [MASK] film"]
    expected = _post(
        live_server.url, "/fill-mask", {"inputs": texts, "parameters": {"top_k": 2}, "model": MODEL}
    ).json()
    for module, address in (
        (httpclient, live_server.url.removeprefix("http://")),
        (grpcclient, live_server.grpc_address),
    ):
        client = module.InferenceServerClient(address)
        try:
            metadata = client.get_model_metadata(MODEL)
            outputs = metadata["outputs"] if isinstance(metadata, dict) else metadata.outputs
            names = [o["name"] if isinstance(o, dict) else o.name for o in outputs]
            assert names == ["token_str", "score", "token", "sequence"]
            tensor = module.InferInput("text", [len(texts)], "BYTES")
            tensor.set_data_from_numpy(np.array([t.encode() for t in texts], dtype=object))
            result = client.infer(MODEL, [tensor], parameters={"top_k": 2})
        finally:
            client.close()
        tokens = result.as_numpy("token_str")
        scores = result.as_numpy("score")
        sequences = result.as_numpy("sequence")
        assert tokens.shape == scores.shape == (2, 2)
        for row, predictions in enumerate(expected):
            assert [t.decode() for t in tokens[row]] == [p["token_str"] for p in predictions]
            assert [s.decode() for s in sequences[row]] == [p["sequence"] for p in predictions]
            assert scores[row].tolist() == pytest.approx([p["score"] for p in predictions])
