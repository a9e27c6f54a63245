"""Summarization and text-to-text equal the `transformers` summarization and
text2text-generation pipelines on the same weights (the same tokens, so the same text), over
every door; both run translation's sequence-to-sequence loop (`runtime/seq2seq`)."""

from __future__ import annotations

import textwrap

import numpy as np
import pytest
import requests

from models.tiny import corpus_sentences
from service.runtime.errors import InvalidInput
from service.runtime.tasks.summarization import SummarizationParameters, Summarizer
from service.runtime.tasks.text2text import Text2TextGenerator, Text2TextParameters

SUMMARIZER_KINDS = ("bart", "t5")
# Short outputs keep the PyTorch reference quick; the pipeline defaults run on a few inputs.
SHORT = {"max_new_tokens": 12}


def _texts() -> list[str]:
    handcrafted = [
        "Café déjà vu — naïve façade, and the crème brûlée was perfect.",
        "I love it 😍🔥 but the ending was far too long.",
        "The   spacing   here is    odd.",
        "?!",
    ]
    return handcrafted + corpus_sentences()[:18]


def _prompts() -> list[str]:
    """T5's own task prompts, as the seed document writes them."""
    sentences = corpus_sentences()[20:27]
    return (
        [f"translate English to French: {s}" for s in sentences]
        + [f"translate English to German: {s}" for s in sentences]
        + [f"summarize: {s}" for s in sentences[:4]]
        + ["classify sentiment: I love this product!", "cola sentence: The book was wrote well."]
    )


@pytest.fixture(scope="module")
def summarizers(tiny_exported) -> dict[str, Summarizer]:
    loaded = {kind: Summarizer.load(tiny_exported(kind), threads=1) for kind in SUMMARIZER_KINDS}
    for model in loaded.values():
        model.warmup()
    return loaded


@pytest.fixture(scope="module")
def references(tiny_checkpoint):
    from transformers import pipeline

    return {
        kind: pipeline("summarization", model=str(tiny_checkpoint(kind)), device="cpu")
        for kind in SUMMARIZER_KINDS
    }


@pytest.fixture(scope="module")
def text2text(tiny_exported) -> Text2TextGenerator:
    model = Text2TextGenerator.load(tiny_exported("t5"), threads=1)
    model.warmup()
    return model


@pytest.fixture(scope="module")
def text2text_reference(tiny_checkpoint):
    from transformers import pipeline

    return pipeline("text2text-generation", model=str(tiny_checkpoint("t5")), device="cpu")


@pytest.mark.parametrize("kind", SUMMARIZER_KINDS)
def test_summaries_match_the_pipeline(summarizers, references, kind):
    texts = _texts()
    assert len(texts) >= 20
    params = SummarizationParameters(generate_parameters=SHORT)
    ours = summarizers[kind].run([(t, params) for t in texts])
    theirs = [r["summary_text"] for r in references[kind](texts, **SHORT)]
    assert ours == theirs


@pytest.mark.parametrize("kind", SUMMARIZER_KINDS)
def test_the_pipeline_defaults_are_the_summarization_entry(summarizers, references, kind):
    """No options: the model's `task_specific_params["summarization"]` over the pipeline's
    defaults (T5: the "summarize: " prefix, 4 beams, min_length 30, no 3-gram repeats)."""
    model = summarizers[kind]
    settings = model.generation_settings()
    assert settings.num_beams == 4 and settings.no_repeat_ngram_size == 3
    assert settings.length_penalty == 2.0
    assert model.prefix(SummarizationParameters()) == ("summarize: " if kind == "t5" else "")
    texts = _texts()[4:6]
    ours = model.generate_ids(texts)
    theirs = references[kind](texts, return_tensors=True)
    assert [list(ids) for ids in ours] == [r["summary_token_ids"].tolist() for r in theirs]


@pytest.mark.parametrize(
    "options",
    [
        {"num_beams": 2, "max_new_tokens": 16, "min_new_tokens": 6},
        {"num_beams": 3, "max_length": 14, "early_stopping": False, "length_penalty": 0.5},
        {"num_beams": 1, "max_new_tokens": 10, "no_repeat_ngram_size": 2},
    ],
)
def test_request_options_apply_as_generate_applies_them(summarizers, references, options):
    texts = _texts()[6:11]
    model, reference = summarizers["bart"], references["bart"]
    params = SummarizationParameters(generate_parameters=options)
    ours = model.run([(t, params) for t in texts])
    theirs = [r["summary_text"] for r in reference(texts, **options)]
    assert ours == theirs


def test_text2text_matches_the_pipeline_on_t5_prompts(text2text, text2text_reference):
    prompts = _prompts()
    assert len(prompts) >= 20
    params = Text2TextParameters(max_new_tokens=SHORT["max_new_tokens"])
    ours = text2text.run([(p, params) for p in prompts])
    theirs = [r["generated_text"] for r in text2text_reference(prompts, **SHORT)]
    assert ours == theirs
    # Nothing is put before the prompt: the task is in it.
    assert text2text.prefix(Text2TextParameters()) == ""
    ids = text2text.generate_ids(prompts[:1])
    assert [list(x) for x in ids] == [
        r["generated_token_ids"].tolist()
        for r in text2text_reference(prompts[:1], return_tensors=True)
    ]


def test_over_long_input_is_refused_or_cut_when_asked(summarizers, references):
    model = summarizers["bart"]
    long_text = " ".join(corpus_sentences()[:40])
    with pytest.raises(InvalidInput) as refused:
        model.run([(long_text, SummarizationParameters())])
    assert refused.value.field == "inputs"
    cut = SummarizationParameters(truncation=True, generate_parameters=SHORT)
    ours = model.run([(long_text, cut)])
    assert ours == [references["bart"](long_text, truncation=True, **SHORT)[0]["summary_text"]]


# ---- over HTTP, KServe v2 and the Hugging Face client -------------------------------------------


def _post(url: str, path: str, body: dict) -> requests.Response:
    return requests.post(f"{url}{path}", json=body, timeout=120)


def test_http_routes_answer_the_pipeline_payloads(live_server, references, text2text_reference):
    texts = _texts()[:3]
    body = {"inputs": texts, "parameters": {"generate_parameters": SHORT}}
    response = _post(live_server.url, "/summarize", body)
    assert response.status_code == 200, response.text
    expected = [r["summary_text"] for r in references["bart"](texts, **SHORT)]
    assert response.json() == [{"summary_text": s} for s in expected]

    t5 = {"model": "tiny-t5-summarizer", "inputs": texts[0], "parameters": {"max_new_tokens": 12}}
    response = _post(live_server.url, "/summarize", t5)
    assert response.status_code == 200, response.text
    assert response.json() == [
        {"summary_text": references["t5"](texts[0], **SHORT)[0]["summary_text"]}
    ]

    prompts = _prompts()[:2]
    response = _post(
        live_server.url, "/text2text", {"inputs": prompts, "parameters": {"max_new_tokens": 12}}
    )
    assert response.status_code == 200, response.text
    expected = [r["generated_text"] for r in text2text_reference(prompts, **SHORT)]
    assert response.json() == [{"generated_text": t} for t in expected]


def test_inference_client_summarization_works_unchanged(live_server):
    from tests.test_client_compat import run_client_script

    url = live_server.url + "/summarize"
    text = _texts()[5]
    script = textwrap.dedent(f"""
        import json
        from huggingface_hub import InferenceClient

        client = InferenceClient(model={url!r})
        out = client.summarization({text!r}, generate_parameters={{"max_new_tokens": 12}})
        print(json.dumps({{"summary": out.summary_text}}))
    """)
    got = run_client_script(script)
    body = {"inputs": text, "parameters": {"generate_parameters": SHORT}}
    assert got["summary"] == _post(live_server.url, "/summarize", body).json()[0]["summary_text"]


@pytest.mark.parametrize(
    ("path", "parameters", "field"),
    [
        (
            "/summarize",
            {"generate_parameters": {"do_sample": True}},
            "parameters.generate_parameters.do_sample",
        ),
        ("/summarize", {"max_new_tokens": 100000}, "parameters.max_new_tokens"),
        ("/summarize", {"num_beams": 0}, "parameters.num_beams"),
        (  # no room for a token after the decoder start (found by the API fuzzer: was a 500)
            "/summarize",
            {"generate_parameters": {"max_length": 1}},
            "parameters.generate_parameters.max_length",
        ),
        ("/text2text", {"src_lang": "en"}, "parameters.src_lang"),
        (
            "/text2text",
            {"generate_parameters": {"max_new_tokens": 100000}},
            "parameters.generate_parameters.max_new_tokens",
        ),
    ],
)
def test_bad_parameters_get_a_4xx_naming_the_field(live_server, path, parameters, field):
    response = _post(live_server.url, path, {"inputs": "A short text.", "parameters": parameters})
    assert 400 <= response.status_code < 500, response.text
    assert field in response.text
    ok = _post(
        live_server.url, path, {"inputs": "A short text.", "parameters": {"max_new_tokens": 4}}
    )
    assert ok.status_code == 200, ok.text


def test_an_over_long_input_gets_a_4xx_naming_inputs(live_server):
    long_text = " ".join(corpus_sentences()[:40])
    response = _post(live_server.url, "/summarize", {"inputs": long_text})
    assert response.status_code == 422 and "inputs" in response.text, response.text


def test_kserve_v2_rest_and_grpc_answer_what_the_routes_answer(live_server):
    import tritonclient.grpc as grpcclient
    import tritonclient.http as httpclient

    texts = _texts()[:2]
    for path, model, output in (
        ("/summarize", "tiny-bart-summarizer", "summary_text"),
        ("/text2text", "tiny-t5-text2text", "generated_text"),
    ):
        body = {"inputs": texts, "parameters": {"max_new_tokens": 8}}
        expected = [next(iter(r.values())) for r in _post(live_server.url, path, body).json()]
        for module, address in (
            (httpclient, live_server.url.removeprefix("http://")),
            (grpcclient, live_server.grpc_address),
        ):
            client = module.InferenceServerClient(address)
            try:
                tensor = module.InferInput("text", [2], "BYTES")
                tensor.set_data_from_numpy(np.array([t.encode() for t in texts], dtype=object))
                result = client.infer(model, [tensor], parameters={"max_new_tokens": 8})
            finally:
                client.close()
            assert [x.decode() for x in result.as_numpy(output)] == expected
