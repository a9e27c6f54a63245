"""Token classification (NER) equals the `transformers` token-classification pipeline on the same
weights: the same labels, words and offsets, scores within 1e-4, for every aggregation strategy
and for long texts split into overlapping windows (`stride`); and the task over every door."""

from __future__ import annotations

import textwrap
import unicodedata

import numpy as np
import pytest
import requests

from models.tiny import corpus_sentences
from service.runtime.errors import InvalidInput
from service.runtime.tasks.token_classification import (
    MAX_WINDOWS,
    TokenClassificationParameters,
    TokenClassifier,
)

KINDS = ["bert-ner", "distilbert-ner"]
MODEL = "tiny-bert-ner"
SCORE_TOLERANCE = 1e-4
STRATEGIES = ["none", "simple", "first", "average", "max"]

HANDCRAFTED = [
    "My name is Wolfgang and I live in Berlin.",
    "Café déjà vu — naïve façade, très élégant, São Paulo.",
    "I love it 😍🔥 but the ending 😭",
    "这部电影很好看, said Zhang Wei in 北京.",
    "line\nbreak\tand   spaces",
    "NOT GOOD. NOT GOOD AT ALL!!!",
    "10/10 would watch again, $5 well spent (really).",
    "Mr. O'Neil-Smith met Dr. Ångström at the U.N. in New York.",
    "x",
    "[MASK] and [SEP] typed by hand, ##not a subword",
]


def _texts() -> list[str]:
    return HANDCRAFTED + corpus_sentences()[:16]


def _long_texts() -> list[str]:
    """Texts well over the tiny models' 128 tokens, with accents, emoji and CJK in them."""
    sentences = corpus_sentences()
    return [
        " ".join(sentences[20:45]),
        " 😍 ".join(sentences[45:60]) + " Café São Paulo 北京 " + " ".join(sentences[60:70]),
    ]


@pytest.fixture(scope="module", params=KINDS)
def kind(request) -> str:
    return request.param


@pytest.fixture(scope="module")
def model(kind, tiny_exported) -> TokenClassifier:
    runtime = TokenClassifier.load(tiny_exported(kind), threads=1)
    runtime.warmup()
    return runtime


@pytest.fixture(scope="module")
def reference(kind, tiny_checkpoint):
    from transformers import pipeline

    return pipeline("token-classification", model=str(tiny_checkpoint(kind)), device="cpu")


def _plain(entity: dict) -> dict:
    return {
        k: (v if k in ("entity", "entity_group", "word") else int(v)) for k, v in entity.items()
    }


def _assert_same(ours: list[dict], theirs: list[dict]) -> None:
    keys = lambda e: {k: v for k, v in e.items() if k != "score"}  # noqa: E731
    assert [keys(e) for e in ours] == [_plain(keys(e)) for e in theirs]
    for a, b in zip(ours, theirs, strict=True):
        assert a["score"] == pytest.approx(float(b["score"]), abs=SCORE_TOLERANCE)


def _params(**options) -> TokenClassificationParameters:
    return TokenClassificationParameters.model_validate(options)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_entities_match_the_pipeline(model, reference, strategy):
    texts = _texts()
    assert len(texts) >= 20
    ours = model.run([(t, _params(aggregation_strategy=strategy)) for t in texts])
    for text, mine in zip(texts, ours, strict=True):
        _assert_same(mine, reference(text, aggregation_strategy=strategy))


def test_the_tiny_models_give_varied_labels(model):
    """Every aggregation path meets B-, I- and O runs: the random head is balanced."""
    found = model.run(
        [(t, _params(aggregation_strategy="none", ignore_labels=[])) for t in _texts()]
    )
    labels = {e["entity"] for entities in found for e in entities}
    assert "O" in labels and len(labels) >= 7


@pytest.mark.parametrize("ignore_labels", [[], ["O", "B-LOC", "I-LOC"], "O, LOC"])
def test_ignore_labels_match_the_pipeline(model, reference, ignore_labels):
    labels = (
        [x.strip() for x in ignore_labels.split(",")]
        if isinstance(ignore_labels, str)
        else ignore_labels
    )
    for strategy in ("none", "simple", "average"):
        params = _params(aggregation_strategy=strategy, ignore_labels=ignore_labels)
        for text in _texts()[:8]:
            (mine,) = model.run([(text, params)])
            theirs = reference(text, aggregation_strategy=strategy, ignore_labels=labels)
            _assert_same(mine, theirs)


@pytest.mark.parametrize("strategy", ["simple", "first", "average", "max"])
@pytest.mark.parametrize("stride", [0, 16, 100])
def test_stride_windows_match_the_pipeline(model, reference, strategy, stride):
    for text in _long_texts():
        assert len(model.tokenizer.encode(text)) > 2 * model.max_input_tokens
        (mine,) = model.run([(text, _params(aggregation_strategy=strategy, stride=stride))])
        _assert_same(mine, reference(text, aggregation_strategy=strategy, stride=stride))
        for entity in mine:
            assert 0 <= entity["start"] < entity["end"] <= len(text)


def _normalized(text: str) -> str:
    """What the tiny tokenizers' BertNormalizer makes of text: lower case, accents stripped."""
    decomposed = unicodedata.normalize("NFD", text.lower())
    return "".join(c for c in decomposed if unicodedata.category(c) != "Mn")


def test_offsets_slice_the_original_text(model):
    """Every token's offsets cover exactly its text in the original string (emoji, CJK and
    accents included, windows of long texts included)."""
    texts = [*_texts(), *_long_texts()]
    params = _params(aggregation_strategy="none", ignore_labels=[])
    unk = model.tokenizer.special_tokens["unk_token"]
    for text in texts[:-2]:
        (entities,) = model.run([(text, params)])
        for e in entities:
            covered = text[e["start"] : e["end"]]
            if e["word"] == covered:  # an unknown token: its word is the text
                continue
            assert e["word"] != unk
            assert _normalized(covered) == e["word"].removeprefix("##"), (text, e)
    for text in texts[-2:]:
        (entities,) = model.run([(text, _params(aggregation_strategy="first", stride=8))])
        for e in entities:
            assert _normalized(text[e["start"] : e["end"]]).replace(" ", "") == e["word"].replace(
                " ", ""
            ), e


def test_a_batch_of_mixed_requests_answers_each_as_alone(model):
    items = [
        (_long_texts()[0], _params(stride=32)),
        ("My name is Wolfgang.", _params(aggregation_strategy="none")),
        (_long_texts()[1], _params(aggregation_strategy="max", stride=0)),
        ("I live in Berlin.", _params(ignore_labels=[])),
    ]
    together = model.run(items)
    alone = [model.run([item])[0] for item in items]
    assert together == alone


def test_over_long_input_and_bad_stride_are_refused(model):
    long = _long_texts()[0]
    with pytest.raises(InvalidInput, match="parameters.stride") as caught:
        model.run([(long, _params())])
    assert caught.value.field == "inputs"
    limit = model.max_input_tokens
    for stride in (limit, limit - 2, 10**6):
        with pytest.raises(InvalidInput) as caught:
            model.run([(long, _params(stride=stride))])
        assert caught.value.field == "parameters.stride"
    # A short text with a large stride needs no window: as the pipeline, it is classified.
    assert model.run([("Berlin", _params(stride=limit - 2))])[0] is not None
    # Too many windows for one text.
    huge = " ".join(corpus_sentences()) * 4
    with pytest.raises(InvalidInput, match=str(MAX_WINDOWS)) as caught:
        model.run([(huge, _params(stride=limit - 4))])
    assert caught.value.field == "inputs"


def test_parameters_are_validated_as_the_pipeline_validates_them():
    assert _params().aggregation_strategy == "simple"  # the Inference API's default
    assert _params(aggregation_strategy="AVERAGE").aggregation_strategy == "average"
    assert _params().ignored() == ["O"]
    with pytest.raises(ValueError, match="aggregation_strategy"):
        _params(aggregation_strategy="longest")
    with pytest.raises(ValueError, match="stride"):
        _params(aggregation_strategy="none", stride=4)
    with pytest.raises(ValueError, match="stride"):
        _params(stride=-1)


# --- over the running service -------------------------------------------------------------


def _post(url: str, body: dict) -> requests.Response:
    return requests.post(f"{url}/ner", json=body, timeout=60)


@pytest.fixture(scope="module")
def bert_reference(tiny_checkpoint):
    from transformers import pipeline

    return pipeline("token-classification", model=str(tiny_checkpoint("bert-ner")), device="cpu")


def test_http_route_answers_the_pipeline_payload(live_server, bert_reference):
    text = HANDCRAFTED[0]
    response = _post(live_server.url, {"inputs": text, "model": MODEL})
    assert response.status_code == 200, response.text
    # The Inference API's default: entity groups.
    _assert_same(response.json(), bert_reference(text, aggregation_strategy="simple"))
    # aggregation none: one entry per token, with its index, and no entity_group key.
    body = {"inputs": text, "parameters": {"aggregation_strategy": "none"}}
    response = _post(live_server.url, body)
    assert response.status_code == 200, response.text
    assert all("entity_group" not in e and "index" in e for e in response.json())
    _assert_same(response.json(), bert_reference(text))
    # A list answers a list per input; stride over long texts as the pipeline.
    texts = [*_long_texts(), HANDCRAFTED[2]]
    body = {
        "inputs": texts,
        "parameters": {"aggregation_strategy": "first", "stride": 16, "ignore_labels": ["O"]},
    }
    response = _post(live_server.url, body)
    assert response.status_code == 200, response.text
    for mine, text in zip(response.json(), texts, strict=True):
        _assert_same(mine, bert_reference(text, aggregation_strategy="first", stride=16))


def test_inference_client_token_classification_works_unchanged(live_server):
    from tests.test_client_compat import run_client_script

    url = live_server.url + "/ner"
    text = HANDCRAFTED[0]
    long = _long_texts()[0]
    script = textwrap.dedent(f"""
        import asyncio, json
        from huggingface_hub import AsyncInferenceClient, InferenceClient

        rows = lambda out: [
            [e.entity_group or e.entity, e.score, e.word, e.start, e.end] for e in out
        ]
        client = InferenceClient(model={url!r})
        print(json.dumps({{
            "plain": rows(client.token_classification({text!r})),
            "none": rows(client.token_classification({text!r}, aggregation_strategy="none")),
            "stride": rows(client.token_classification(
                {long!r}, aggregation_strategy="max", stride=8, ignore_labels=["O", "MISC"]
            )),
            "async": rows(asyncio.run(
                AsyncInferenceClient(model={url!r}).token_classification({text!r})
            )),
        }}))
    """)
    got = run_client_script(script)
    for key, source, parameters in (
        ("plain", text, {}),
        ("none", text, {"aggregation_strategy": "none"}),
        (
            "stride",
            long,
            {"aggregation_strategy": "max", "stride": 8, "ignore_labels": ["O", "MISC"]},
        ),
        ("async", text, {}),
    ):
        expected = _post(live_server.url, {"inputs": source, "parameters": parameters}).json()
        rows = [
            [e.get("entity_group", e.get("entity")), e["score"], e["word"], e["start"], e["end"]]
            for e in expected
        ]
        assert got[key] == rows, key
        assert rows, key


@pytest.mark.parametrize(
    "body, field",
    [
        (
            {"inputs": "a", "parameters": {"aggregation_strategy": "longest"}},
            "parameters.aggregation_strategy",
        ),
        (
            {"inputs": "a", "parameters": {"aggregation_strategy": "none", "stride": 4}},
            "parameters.stride",
        ),
        (
            {"inputs": " ".join(corpus_sentences()[:30]), "parameters": {"stride": 128}},
            "parameters.stride",
        ),
        ({"inputs": "a", "parameters": {"stride": -1}}, "parameters.stride"),
        ({"inputs": " ".join(corpus_sentences()[:30])}, "inputs"),
        ({"inputs": ["a", " ".join(corpus_sentences()[:30])]}, "inputs[1]"),
        ({"inputs": ""}, "inputs"),
        ({"inputs": "a", "parameters": {"ignore_labels": [1]}}, "parameters.ignore_labels"),
        ({"inputs": "a", "parameters": {"top_k": 1}}, "parameters.top_k"),
    ],
)
def test_bad_input_gets_a_4xx_naming_the_field(live_server, body, field):
    response = _post(live_server.url, body)
    assert 400 <= response.status_code < 500, response.text
    assert field in response.text, response.text
    # The worker is still there.
    assert _post(live_server.url, {"inputs": "I live in Berlin."}).status_code == 200


def test_kserve_v2_rest_and_grpc_answer_what_the_route_answers(live_server):
    import tritonclient.grpc as grpcclient
    import tritonclient.http as httpclient

    texts = [HANDCRAFTED[0], HANDCRAFTED[2], _long_texts()[1]]
    parameters = {"aggregation_strategy": "average", "stride": 16, "ignore_labels": "O, MISC"}
    expected = _post(live_server.url, {"inputs": texts, "parameters": parameters}).json()
    assert len({len(entities) for entities in expected}) > 1  # ragged rows, padded
    for module, address in (
        (httpclient, live_server.url.removeprefix("http://")),
        (grpcclient, live_server.grpc_address),
    ):
        client = module.InferenceServerClient(address)
        try:
            metadata = client.get_model_metadata(MODEL)
            outputs = metadata["outputs"] if isinstance(metadata, dict) else metadata.outputs
            names = [o["name"] if isinstance(o, dict) else o.name for o in outputs]
            assert names == ["entity", "score", "word", "start", "end"]
            tensor = module.InferInput("text", [len(texts)], "BYTES")
            tensor.set_data_from_numpy(np.array([t.encode() for t in texts], dtype=object))
            # Triton's parameters are scalars: ignore_labels travel comma-separated.
            result = client.infer(MODEL, [tensor], parameters=parameters)
        finally:
            client.close()
        labels, scores = result.as_numpy("entity"), result.as_numpy("score")
        words, starts, ends = (result.as_numpy(n) for n in ("word", "start", "end"))
        width = max(len(entities) for entities in expected)
        assert labels.shape == scores.shape == starts.shape == (len(texts), width)
        for row, entities in enumerate(expected):
            n = len(entities)
            assert [x.decode() for x in labels[row][:n]] == [e["entity_group"] for e in entities]
            assert [x.decode() for x in words[row][:n]] == [e["word"] for e in entities]
            assert starts[row][:n].tolist() == [e["start"] for e in entities]
            assert ends[row][:n].tolist() == [e["end"] for e in entities]
            assert scores[row][:n].tolist() == pytest.approx([e["score"] for e in entities])
            assert starts[row][n:].tolist() == [-1] * (width - n)
