"""Zero-shot classification equals the `transformers` zero-shot-classification pipeline on the
same NLI weights (labels in the same order, scores within 1e-4), over every door."""

from __future__ import annotations

import textwrap

import numpy as np
import pytest
import requests

from models.tiny import corpus_sentences
from service.runtime.tasks.zero_shot import ZeroShotClassifier, ZeroShotParameters

KIND = "bert-nli"
MODEL = "tiny-bert-nli"
SCORE_TOLERANCE = 1e-4
LABELS = ["sports", "politics", "a good film", "food", "travel"]


def _texts() -> list[str]:
    handcrafted = ["Café déjà vu — naïve façade.", "I love it 😍🔥", "这部电影很好看", "?!"]
    return handcrafted + corpus_sentences()[:18]


@pytest.fixture(scope="module")
def model(tiny_exported) -> ZeroShotClassifier:
    runtime = ZeroShotClassifier.load(tiny_exported(KIND), threads=1)
    runtime.warmup()
    return runtime


@pytest.fixture(scope="module")
def reference(tiny_checkpoint):
    from transformers import pipeline

    return pipeline("zero-shot-classification", model=str(tiny_checkpoint(KIND)), device="cpu")


def _assert_same(ours: dict, theirs: dict) -> None:
    assert ours["sequence"] == theirs["sequence"]
    assert ours["labels"] == theirs["labels"]
    assert ours["scores"] == pytest.approx(theirs["scores"], abs=SCORE_TOLERANCE)


@pytest.mark.parametrize(
    "options",
    [
        {"candidate_labels": LABELS},
        {"candidate_labels": LABELS, "multi_label": True},
        {"candidate_labels": ["one label only"]},
        {"candidate_labels": "sports, politics ,food", "hypothesis_template": "It is about {}."},
    ],
)
def test_zero_shot_matches_the_pipeline(model, reference, options):
    texts = _texts()
    assert len(texts) >= 20
    params = ZeroShotParameters.model_validate(options)
    ours = model.run([(t, params) for t in texts])
    for text, mine in zip(texts, ours, strict=True):
        _assert_same(mine, reference(text, **options))


def test_a_sequence_over_the_limit_is_cut_as_the_pipeline_cuts_it(model, reference):
    # The pipeline truncates `only_first` on its own: the sequence loses its tail, the
    # hypothesis stays whole. A request needs no parameter for it (the route has none).
    text = " ".join(corpus_sentences()[:12])
    assert len(model.encoder.tokenizer.encode(text).ids) > model.encoder.max_input_tokens
    params = ZeroShotParameters(candidate_labels=LABELS)
    (ours,) = model.run([(text, params)])
    _assert_same(ours, reference(text, candidate_labels=LABELS))


def test_a_hypothesis_too_long_to_fit_is_refused_naming_the_input(model):
    from service.runtime.errors import InvalidInput

    params = ZeroShotParameters(candidate_labels=["a label " * 200])
    with pytest.raises(InvalidInput, match="cannot be cut") as refused:
        model.run([("A short sentence.", params)])
    assert refused.value.field == "inputs"


def test_the_entailment_label_is_found_as_the_pipeline_finds_it():
    from service.runtime.tasks.zero_shot import entailment_id

    assert entailment_id({"label2id": {"CONTRADICTION": 0, "NEUTRAL": 1, "ENTAILMENT": 2}}) == 2
    assert entailment_id({"label2id": {"entailment": 0, "not_entailment": 1}}) == 0
    assert entailment_id({"label2id": {"LABEL_0": 0, "LABEL_1": 1}}) == -1


# --- over the running service -------------------------------------------------------------


def _post(url: str, body: dict) -> requests.Response:
    return requests.post(f"{url}/zero-shot", json=body, timeout=60)


def test_http_route_answers_the_pipeline_payload(live_server, reference):
    text = corpus_sentences()[3]
    body = {"inputs": text, "parameters": {"candidate_labels": LABELS, "multi_label": True}}
    response = _post(live_server.url, body)
    assert response.status_code == 200, response.text
    _assert_same(response.json(), reference(text, candidate_labels=LABELS, multi_label=True))
    texts = corpus_sentences()[:3]
    response = _post(live_server.url, {"inputs": texts, "parameters": {"candidate_labels": LABELS}})
    assert response.status_code == 200, response.text
    for mine, text in zip(response.json(), texts, strict=True):
        _assert_same(mine, reference(text, candidate_labels=LABELS))


def test_inference_client_zero_shot_classification_works_unchanged(live_server):
    from tests.test_client_compat import run_client_script

    url = live_server.url + "/zero-shot"
    script = textwrap.dedent(f"""
        import asyncio, json
        from huggingface_hub import AsyncInferenceClient, InferenceClient

        text = "The match ended with a late goal."
        labels = {LABELS!r}
        rows = lambda out: [[e.label, e.score] for e in out]
        client = InferenceClient(model={url!r})
        print(json.dumps({{
            "plain": rows(client.zero_shot_classification(text, labels)),
            "multi": rows(client.zero_shot_classification(
                text, labels, multi_label=True, hypothesis_template="It is about {{}}."
            )),
            "async": rows(asyncio.run(
                AsyncInferenceClient(model={url!r}).zero_shot_classification(text, labels)
            )),
        }}))
    """)
    got = run_client_script(script)
    text = "The match ended with a late goal."
    for key, extra in (
        ("plain", {}),
        ("multi", {"multi_label": True, "hypothesis_template": "It is about {}."}),
        ("async", {}),
    ):
        body = {"inputs": text, "parameters": {"candidate_labels": LABELS, **extra}}
        expected = _post(live_server.url, body).json()
        pairs = zip(expected["labels"], expected["scores"], strict=True)
        assert got[key] == [list(pair) for pair in pairs]


@pytest.mark.parametrize(
    "body",
    [
        {"inputs": "a text", "parameters": {"candidate_labels": []}},
        {"inputs": "a text", "parameters": {"candidate_labels": " , "}},
        {"inputs": "a text", "parameters": {"candidate_labels": [f"l{i}" for i in range(65)]}},
        {
            "inputs": ["a text"] * 5,
            "parameters": {"candidate_labels": [f"l{i}" for i in range(60)]},
        },
        {"inputs": "a text", "parameters": {}},
    ],
)
def test_bad_candidate_labels_get_a_4xx_naming_the_field(live_server, body):
    response = _post(live_server.url, body)
    assert 400 <= response.status_code < 500, response.text
    assert "parameters.candidate_labels" in response.text
    ok = {"inputs": "a text", "parameters": {"candidate_labels": ["a", "b"]}}
    assert _post(live_server.url, ok).status_code == 200


def test_a_template_without_a_slot_is_refused(live_server):
    body = {
        "inputs": "a text",
        "parameters": {"candidate_labels": ["a"], "hypothesis_template": "no slot {0"},
    }
    response = _post(live_server.url, body)
    assert response.status_code == 422 and "parameters.hypothesis_template" in response.text


def test_kserve_v2_rest_and_grpc_answer_what_the_route_answers(live_server):
    import tritonclient.grpc as grpcclient
    import tritonclient.http as httpclient

    texts = corpus_sentences()[:2]
    expected = _post(
        live_server.url, {"inputs": texts, "parameters": {"candidate_labels": LABELS}}
    ).json()
    for module, address in (
        (httpclient, live_server.url.removeprefix("http://")),
        (grpcclient, live_server.grpc_address),
    ):
        client = module.InferenceServerClient(address)
        try:
            tensor = module.InferInput("text", [2], "BYTES")
            tensor.set_data_from_numpy(np.array([t.encode() for t in texts], dtype=object))
            # Triton's parameters are scalars: the labels travel as one comma-separated string,
            # which the task splits as the pipeline does.
            labels_param = {"candidate_labels": ", ".join(LABELS)}
            result = client.infer(MODEL, [tensor], parameters=labels_param)
        finally:
            client.close()
        labels, scores = result.as_numpy("label"), result.as_numpy("score")
        for row, answer in enumerate(expected):
            assert [x.decode() for x in labels[row]] == answer["labels"]
            assert scores[row].tolist() == pytest.approx(answer["scores"], abs=1e-6)
