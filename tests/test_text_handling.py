"""Property-based tests (hypothesis) of how the runtime handles text, in process on the tiny models.

Whatever the text — any Unicode (astral plane, combining marks, right-to-left and bidi controls),
control characters, NUL, lone surrogates (JSON can carry "\\ud800"), empty, whitespace-only or
very long — every task either answers well-formed results or raises `InvalidInput` (our 4xx),
never anything else; question-answering offsets always slice the context to the answer; a too
long input is cut when truncation is asked and otherwise refused with a message naming the
limit. The last test sends such texts over real HTTP: 200 or 4xx, never 5xx.
"""

from __future__ import annotations

import json
import math

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.config import Settings
from service.runtime.errors import InvalidInput
from service.runtime.registry import TASKS
from service.runtime.tasks.classification import ClassificationParameters
from service.runtime.tasks.embeddings import EmbeddingParameters
from service.runtime.tasks.generation import GenerationParameters
from service.runtime.tasks.question_answering import QuestionAnsweringParameters
from service.runtime.tasks.translation import TranslationParameters
from tests.tiny_records import tiny_record

# Characters tokenizers and JSON get wrong most often.
AWKWARD = [
    "\x00",
    "\x01",
    "\x1b",
    "\x7f",
    "\t",
    "\r",
    "\n",
    "\u2028",
    "\u2029",
    "\ufeff",
    "\u200b",
    "\u0301",
    "\u0308\u0308",
    "e\u0301",
    "\u0627\u0644\u0639\u0631\u0628\u064a\u0629",
    "\u05e9\u05dc\u05d5\u05dd",
    "\u200f",
    "\u202e",
    "\u2066",
    "\U0001f600",
    "\U0001f469\u200d\U0001f4bb",
    "\U00020000",
    "\U0010fffd",
    "\ufffd",
    "\ud800",
    "\udfff",
    "\udbff\udc00x\udc00",
    " ",
    "\u3000",
    "日本語",
    "ﬁ",
    "İ",
    "ß",
    "[CLS]",
    "<s>",
    "</s>",
    "<|endoftext|>",
    "##",
]
awkward_text = st.lists(
    st.one_of(st.sampled_from(AWKWARD), st.characters(codec=None), st.text(max_size=8)), max_size=40
).map("".join)
has_surrogate = lambda text: any(0xD800 <= ord(c) <= 0xDFFF for c in text)  # noqa: E731

EXAMPLES = settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)
LONG = "word " * 3000


@pytest.fixture(scope="module")
def runtimes(tiny_store):
    """One loaded runtime per task, as the service loads them."""
    config = Settings()
    config.models.threads = 1
    loaded = {}
    for name in (
        "tiny-bert-classifier",
        "tiny-bert-embedder",
        "tiny-distilbert-qa",
        "tiny-gpt2",
        "tiny-t5",
    ):
        record = tiny_record(tiny_store, name)
        loaded[record.task] = TASKS[record.task].load(record.path, config)
    return loaded


def refused_or(check, call):
    """Run `call`; InvalidInput is an acceptable answer, any other exception fails the test."""
    try:
        result = call()
    except InvalidInput as err:
        assert err.message and isinstance(err.message, str)
        return err
    check(result)
    return result


# --- any text: results or InvalidInput ----------------------------------------------------------


@EXAMPLES
@given(text=awkward_text, truncate=st.booleans())
def test_classification_takes_any_text(runtimes, text, truncate):
    def check(result):
        ((labels,),) = [result]
        assert labels and all(0.0 <= label["score"] <= 1.0 for label in labels)

    outcome = refused_or(
        check,
        lambda: runtimes["text-classification"].classify(
            [(text, ClassificationParameters(truncate=truncate, top_k=2))]
        ),
    )
    if isinstance(outcome, InvalidInput):
        assert has_surrogate(text) or not truncate, outcome.message


@EXAMPLES
@given(text=awkward_text)
def test_embeddings_take_any_text(runtimes, text):
    def check(result):
        ((vector,),) = [result]
        assert vector and all(math.isfinite(v) for v in vector)

    outcome = refused_or(
        check,
        lambda: runtimes["feature-extraction"].embed([(text, EmbeddingParameters(truncate=True))]),
    )
    if isinstance(outcome, InvalidInput):
        assert has_surrogate(text), outcome.message


@EXAMPLES
@given(question=awkward_text, context=awkward_text, top_k=st.integers(1, 4), align=st.booleans())
def test_answer_offsets_always_slice_the_context(runtimes, question, context, top_k, align):
    params = QuestionAnsweringParameters(top_k=top_k, align_to_words=align)

    def check(result):
        ((answers,),) = [result]
        for answer in answers:
            assert 0 <= answer["start"] <= answer["end"] <= len(context)
            assert context[answer["start"] : answer["end"]] == answer["answer"]
            assert math.isfinite(answer["score"])

    outcome = refused_or(
        check, lambda: runtimes["question-answering"].answer([(question, context, params)])
    )
    if isinstance(outcome, InvalidInput):
        assert outcome.field in ("inputs.question", "inputs.context"), outcome.field


@EXAMPLES
@given(prompt=awkward_text)
def test_generation_takes_any_prompt(runtimes, prompt):
    def check(result):
        tokens = list(result)
        final = tokens[-1]
        assert isinstance(final.generated_text, str)
        assert final.generated_text == "".join(t.text for t in tokens[:-1])

    refused_or(
        check,
        lambda: runtimes["text-generation"].stream(prompt, GenerationParameters(max_new_tokens=3)),
    )


@settings(
    max_examples=30,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)
@given(text=awkward_text)
def test_translation_takes_any_text(runtimes, text):
    def check(result):
        assert len(result) == 1 and isinstance(result[0], str)

    refused_or(
        check,
        lambda: runtimes["translation"].translate([text], TranslationParameters(max_new_tokens=3)),
    )


@pytest.mark.parametrize("text", ["\ud800", "a\udfffb", "ok \udbff"])
def test_lone_surrogates_are_invalid_input_naming_the_field(runtimes, text):
    with pytest.raises(InvalidInput) as refused:
        runtimes["text-classification"].classify([(text, ClassificationParameters())])
    assert refused.value.field == "inputs" and "surrogate" in refused.value.message
    with pytest.raises(InvalidInput) as refused:
        runtimes["question-answering"].answer([("Who?", text, QuestionAnsweringParameters())])
    assert refused.value.field == "inputs.context"
    with pytest.raises(InvalidInput):
        runtimes["text-generation"].stream(text, GenerationParameters(max_new_tokens=1))
    with pytest.raises(InvalidInput):
        runtimes["translation"].translate([text], TranslationParameters(max_new_tokens=1))


@pytest.mark.parametrize("text", ["", " ", "\t\n", "\u3000", "\x00"])
def test_empty_and_whitespace_text_is_answered_or_refused(runtimes, text):
    refused_or(
        lambda r: None,
        lambda: runtimes["text-classification"].classify([(text, ClassificationParameters())]),
    )
    refused_or(
        lambda r: None,
        lambda: runtimes["feature-extraction"].embed([(text, EmbeddingParameters())]),
    )
    refused_or(
        lambda r: list(r),
        lambda: runtimes["text-generation"].stream(text, GenerationParameters(max_new_tokens=1)),
    )
    refused_or(
        lambda r: None,
        lambda: runtimes["translation"].translate([text], TranslationParameters(max_new_tokens=1)),
    )


# --- very long inputs: truncated when asked, else refused naming the limit ----------------------


def test_long_input_is_refused_naming_the_limit_or_truncated_when_asked(runtimes):
    classifier = runtimes["text-classification"]
    limit = classifier.max_input_tokens
    with pytest.raises(InvalidInput) as refused:
        classifier.classify([(LONG, ClassificationParameters())])
    assert str(limit) in refused.value.message and refused.value.field == "inputs"
    assert classifier.classify([(LONG, ClassificationParameters(truncate=True))])

    embedder = runtimes["feature-extraction"]
    with pytest.raises(InvalidInput) as refused:
        embedder.embed([(LONG, EmbeddingParameters())])
    assert str(embedder.max_input_tokens) in refused.value.message
    assert embedder.embed([(LONG, EmbeddingParameters(truncate=True))])

    generator = runtimes["text-generation"]
    with pytest.raises(InvalidInput) as refused:
        generator.stream(LONG, GenerationParameters(max_new_tokens=2))
    assert str(generator.max_positions) in refused.value.message
    assert refused.value.field == "inputs"
    final = list(generator.stream(LONG, GenerationParameters(max_new_tokens=2, truncate=True)))[-1]
    assert final.prompt_tokens == generator.max_positions - 2

    translator = runtimes["translation"]
    with pytest.raises(InvalidInput) as refused:
        translator.translate([LONG], TranslationParameters(max_new_tokens=2))
    assert str(translator.max_input_tokens) in refused.value.message
    assert translator.translate([LONG], TranslationParameters(max_new_tokens=2, truncate=True))


def test_long_context_is_windowed_and_offsets_stay_exact(runtimes):
    context = " ".join(f"Token{i} ünïcödé 😀 مرحبا" for i in range(400))
    ((answers,),) = [
        runtimes["question-answering"].answer(
            [("Where is Token7?", context, QuestionAnsweringParameters(top_k=5))]
        )
    ]
    assert answers
    for answer in answers:
        assert context[answer["start"] : answer["end"]] == answer["answer"]


# --- over HTTP: never a 5xx -------------------------------------------------------------------

ROUTES = {
    "/classify": lambda t: {"inputs": t},
    "/embed": lambda t: {"inputs": [t, "fine"]},
    "/answer": lambda t: {"inputs": {"question": t, "context": f"{t} and more"}},
    "/generate": lambda t: {"inputs": t, "parameters": {"max_new_tokens": 2}},
    "/translate": lambda t: {"inputs": t, "parameters": {"max_new_tokens": 2}},
    "/v1/completions": lambda t: {"model": "tiny-gpt2", "prompt": t, "max_tokens": 2},
    "/v1/chat/completions": lambda t: {
        "model": "tiny-llama-chat",
        "max_tokens": 2,
        "messages": [{"role": "user", "content": t}],
    },
    "/v2/models/tiny-bert-classifier/infer": lambda t: {
        "inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": [t]}]
    },
}


@settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)
@given(path=st.sampled_from(sorted(ROUTES)), text=awkward_text)
def test_any_text_over_http_is_answered_or_refused_never_5xx(live_server, path, text):
    # ensure_ascii: lone surrogates travel as "\ud800" escapes, as a JSON client may send them.
    body = json.dumps(ROUTES[path](text), ensure_ascii=True)
    response = requests.post(
        f"{live_server.url}{path}",
        data=body,
        timeout=60,
        headers={"content-type": "application/json"},
    )
    assert response.status_code in (200, 400, 422), (response.status_code, response.text)
    payload = response.json()
    if response.status_code != 200:
        assert payload["error"]
    if has_surrogate(text):
        assert response.status_code in (400, 422)
