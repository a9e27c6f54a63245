"""The torch-free question answerer returns what the `transformers` pipeline returns."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from models.tiny import MAX_POSITIONS, corpus_sentences
from service.runtime.errors import InvalidInput
from service.runtime.tasks.question_answering import QuestionAnswerer, QuestionAnsweringParameters

KIND = "distilbert-qa"
SCORE_TOLERANCE = 1e-4

QUESTIONS = [
    "What is good?",
    "Who liked the movie?",
    "Why was it boring?",
    "Où est la gare ?",
    "What did the critics say about the ending 😭?",
    "how",
]

HANDCRAFTED_CONTEXTS = [
    "My name is Wolfgang and I live in Berlin.",
    "Yes.",
    "Café déjà vu in Zürich — a naïve façade, très élégant 😍🔥 and the crowd loved it.",
    "The   plot\nwanders,\tthe acting    is fine.\n\nBut the score (by Hans Zimmer) is superb!",
    "这部电影很好看. The story is told in Mandarin and English, with subtitles.",
    "Price: $5.99 / 10% off -- e-mail us at info@example.com (24/7).",
]


def _pairs() -> list[tuple[str, str]]:
    sentences = corpus_sentences()
    long_contexts = [" ".join(sentences[start : start + 20]) for start in (0, 300, 900, 2000)]
    medium = [" ".join(sentences[start : start + 3]) for start in (50, 1500, 3100)]
    contexts = HANDCRAFTED_CONTEXTS + medium + long_contexts
    pairs = [(QUESTIONS[i % len(QUESTIONS)], c) for i, c in enumerate(contexts)]
    # The same long contexts asked something else, and a long question.
    pairs += [(QUESTIONS[(i + 2) % len(QUESTIONS)], c) for i, c in enumerate(long_contexts)]
    pairs.append((" ".join(sentences[7].split()[:12]) + "?", long_contexts[1]))
    return pairs


PAIRS = _pairs()

VARIANTS = [
    {},
    {"top_k": 3},
    {"top_k": 7, "max_answer_len": 30},
    {"max_answer_len": 3},
    {"doc_stride": 32},
    {"doc_stride": 100, "top_k": 2},
    {"max_seq_len": 64, "doc_stride": 16, "top_k": 2},
    {"handle_impossible_answer": True, "top_k": 3},
    {"handle_impossible_answer": True},
    {"align_to_words": False, "top_k": 4},
]


def _as_list(result) -> list[dict]:
    return result if isinstance(result, list) else [result]


def _assert_same(ours: list[dict], theirs: list[dict]) -> None:
    assert [(a["answer"], a["start"], a["end"]) for a in ours] == [
        (a["answer"], a["start"], a["end"]) for a in theirs
    ]
    for a, b in zip(ours, theirs, strict=True):
        assert a["score"] == pytest.approx(b["score"], abs=SCORE_TOLERANCE)


@pytest.fixture(scope="module")
def answerer(tiny_exported) -> QuestionAnswerer:
    model = QuestionAnswerer.load(tiny_exported(KIND), threads=1)
    model.warmup()
    return model


@pytest.fixture(scope="module")
def reference(tiny_checkpoint):
    from transformers import pipeline

    return pipeline("question-answering", model=str(tiny_checkpoint(KIND)), device="cpu")


@pytest.mark.parametrize(
    "variant", VARIANTS, ids=lambda v: ",".join(map(str, v.items())) or "defaults"
)
def test_answer_matches_transformers_pipeline(answerer, reference, variant):
    params = QuestionAnsweringParameters(**variant)
    ours = answerer.answer([(q, c, params) for q, c in PAIRS])
    assert len(ours) == len(PAIRS)
    for (question, context), result in zip(PAIRS, ours, strict=True):
        assert 1 <= len(result) <= params.top_k
        _assert_same(result, _as_list(reference(question=question, context=context, **variant)))


def test_each_request_in_a_batch_keeps_its_own_parameters(answerer, reference):
    items = [
        (q, c, QuestionAnsweringParameters(**VARIANTS[i % len(VARIANTS)]))
        for i, (q, c) in enumerate(PAIRS)
    ]
    ours = answerer.answer(items)
    for i, ((question, context, _), result) in enumerate(zip(items, ours, strict=True)):
        variant = VARIANTS[i % len(VARIANTS)]
        _assert_same(result, _as_list(reference(question=question, context=context, **variant)))


def test_long_contexts_are_answered_from_every_window(answerer):
    params = QuestionAnsweringParameters(top_k=5)
    long_pairs = [(q, c) for q, c in PAIRS if len(c.split()) >= 300]
    assert len(long_pairs) >= 4
    late_answers = 0
    for question, context in long_pairs:
        windows = answerer.windows(question, context, params)
        assert len(windows) >= 5
        assert all(len(w.encoding) <= MAX_POSITIONS for w in windows)
        first_window_end = max(
            end
            for (_, end), seq in zip(
                windows[0].encoding.offsets, windows[0].encoding.sequence_ids, strict=True
            )
            if seq == 1
        )
        answers = answerer.answer([(question, context, params)])[0]
        late_answers += sum(a["start"] >= first_window_end for a in answers)
    assert late_answers > 0


def test_answers_point_into_the_original_context(answerer):
    ours = answerer.answer([(q, c, QuestionAnsweringParameters(top_k=3)) for q, c in PAIRS])
    for (_, context), answers in zip(PAIRS, ours, strict=True):
        for a in answers:
            assert context[a["start"] : a["end"]] == a["answer"]


@pytest.mark.parametrize(
    "question,context,field",
    [
        ("", "Some context.", "inputs.question"),
        ("A question?", "", "inputs.context"),
    ],
)
def test_empty_question_or_context_is_refused(answerer, question, context, field):
    with pytest.raises(InvalidInput) as refused:
        answerer.answer([(question, context, QuestionAnsweringParameters())])
    assert refused.value.field == field


def test_max_seq_len_above_the_model_limit_is_refused(answerer):
    with pytest.raises(InvalidInput) as refused:
        answerer.answer([("Q?", "Some context.", QuestionAnsweringParameters(max_seq_len=512))])
    assert refused.value.field == "parameters.max_seq_len"
    assert str(MAX_POSITIONS) in refused.value.message


def test_doc_stride_larger_than_max_seq_len_is_refused(answerer):
    params = QuestionAnsweringParameters(max_seq_len=32, doc_stride=64)
    with pytest.raises(InvalidInput) as refused:
        answerer.answer([("Q?", "Some context.", params)])
    assert refused.value.field == "parameters.doc_stride"


def test_question_too_long_to_leave_room_for_context_is_refused(answerer):
    question = " ".join(corpus_sentences()[:2]) + "?"
    context = " ".join(corpus_sentences()[10:20])
    with pytest.raises(InvalidInput) as refused:
        answerer.answer([(question, context, QuestionAnsweringParameters())])
    assert refused.value.field == "inputs.question"
    assert "doc_stride=64" in refused.value.message


def test_long_question_with_short_context_is_answered_like_the_pipeline(answerer, reference):
    question = " ".join(corpus_sentences()[0].split()[:40]) + "?"
    context = "The acting is fine but the plot is thin."
    ours = answerer.answer([(question, context, QuestionAnsweringParameters(top_k=2))])[0]
    _assert_same(ours, _as_list(reference(question=question, context=context, top_k=2)))


@pytest.mark.parametrize(
    "bad",
    [
        {"top_k": 2, "topk": 2},
        {"top_k": 0},
        {"max_answer_len": 0},
        {"padding": "max_length"},
    ],
)
def test_unknown_or_invalid_parameters_are_rejected(bad):
    with pytest.raises(ValidationError):
        QuestionAnsweringParameters.model_validate(bad)


def test_defaults_resolve_like_the_pipeline(answerer):
    windows = answerer.windows(
        "What?", " ".join(corpus_sentences()[:5]), QuestionAnsweringParameters()
    )
    assert max(len(w.encoding) for w in windows) == MAX_POSITIONS  # min(model_max_length, 384)
    first, second = windows[0].encoding, windows[1].encoding
    first_context = [i for i, s in zip(first.ids, first.sequence_ids, strict=True) if s == 1]
    second_context = [i for i, s in zip(second.ids, second.sequence_ids, strict=True) if s == 1]
    assert first_context[-64:] == second_context[:64]  # doc_stride = min(128 // 2, 128)
