"""The torch-free classifier returns what the `transformers` pipeline returns on equal weights."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import pytest
from pydantic import ValidationError

from models.tiny import MAX_POSITIONS, corpus_sentences
from service.runtime.encoder_batches import length_sorted_groups, split_for_runners
from service.runtime.errors import InvalidInput
from service.runtime.tasks.classification import ClassificationParameters, TextClassifier

KINDS = ["bert-classifier", "distilbert-classifier"]
SCORE_TOLERANCE = 1e-4

HANDCRAFTED = [
    "",
    "   ",
    "a",
    "Great!",
    "This movie is disgustingly good !",
    "Café déjà vu — naïve façade, très élégant.",
    "I love it 😍🔥 but the ending 😭",
    "这部电影很好看",
    "ÀÉÎÕÜ ñ ß Ωμέγα",
    "line\nbreak\ttab   and  spaces",
    "NOT GOOD. NOT GOOD AT ALL!!!",
    "10/10 would watch again, $5 well spent (really).",
    "?!?!...",
]


def _token_count(classifier: TextClassifier, text: str) -> int:
    return len(classifier.encoder.tokenizer.encode(text))


def _near_limit(classifier: TextClassifier) -> str:
    """Whole words up to a few tokens short of the model's limit."""
    words: list[str] = []
    for word in " ".join(corpus_sentences()[20:30]).split():
        if _token_count(classifier, " ".join([*words, word])) > classifier.max_input_tokens - 2:
            break
        words.append(word)
    return " ".join(words)


def _as_lists(results) -> list[list[dict]]:
    return [r if isinstance(r, list) else [r] for r in results]


def _assert_same(ours: list[list[dict]], theirs: list[list[dict]]) -> None:
    assert len(ours) == len(theirs)
    for mine, expected in zip(ours, theirs, strict=True):
        assert [r["label"] for r in mine] == [r["label"] for r in expected]
        for a, b in zip(mine, expected, strict=True):
            assert a["score"] == pytest.approx(b["score"], abs=SCORE_TOLERANCE)


@pytest.fixture(scope="module", params=KINDS)
def kind(request) -> str:
    return request.param


@pytest.fixture(scope="module")
def classifier(kind, tiny_exported) -> TextClassifier:
    model = TextClassifier.load(tiny_exported(kind), threads=1)
    model.warmup()
    return model


@pytest.fixture(scope="module")
def reference(kind, tiny_checkpoint):
    from transformers import pipeline

    return pipeline("text-classification", model=str(tiny_checkpoint(kind)), device="cpu")


@pytest.fixture(scope="module")
def texts(classifier) -> list[str]:
    # Spread over the corpus: short and long, tweets and reviews.
    texts = HANDCRAFTED + corpus_sentences()[::197][:20] + [_near_limit(classifier)]
    lengths = [_token_count(classifier, t) for t in texts]
    assert max(lengths) <= classifier.max_input_tokens, "inputs must fit without truncation"
    assert max(lengths) > 120 and min(lengths) == 2  # long ones and empty-ish ones are covered
    return texts


def test_classify_matches_transformers_pipeline(classifier, reference, texts):
    ours = classifier.classify([(t, ClassificationParameters()) for t in texts])
    assert all(len(r) == 1 for r in ours)
    _assert_same(ours, _as_lists(reference(texts)))


@pytest.mark.parametrize("top_k", [2, 3, 10])
def test_classify_top_k_matches_pipeline(classifier, reference, texts, top_k):
    ours = classifier.classify([(t, ClassificationParameters(top_k=top_k)) for t in texts])
    assert all(len(r) == min(top_k, len(classifier.labels)) for r in ours)
    _assert_same(ours, reference(texts, top_k=top_k))


@pytest.mark.parametrize("function", ["softmax", "sigmoid", "none"])
def test_classify_function_to_apply_matches_pipeline(classifier, reference, texts, function):
    params = ClassificationParameters(top_k=3, function_to_apply=function)
    ours = classifier.classify([(t, params) for t in texts])
    _assert_same(ours, reference(texts, top_k=3, function_to_apply=function))


def test_each_request_in_a_batch_keeps_its_own_parameters(classifier, reference, texts):
    variants = [
        ClassificationParameters(),
        ClassificationParameters(top_k=2, function_to_apply="sigmoid"),
        ClassificationParameters(top_k=3, function_to_apply="none"),
    ]
    items = [(t, variants[i % 3]) for i, t in enumerate(texts)]
    ours = classifier.classify(items)
    for (text, params), result in zip(items, ours, strict=True):
        kwargs = {"top_k": params.top_k or 1}
        if params.function_to_apply:
            kwargs["function_to_apply"] = params.function_to_apply
        _assert_same([result], reference([text], **kwargs))


def test_many_inputs_in_small_length_sorted_groups_keep_their_order(classifier, reference):
    sentences = corpus_sentences()[1000:1080]
    params = ClassificationParameters(top_k=2)
    expected = classifier.classify([(t, params) for t in sentences])
    classifier.encoder.max_batch, classifier.encoder.max_batch_tokens = 5, 300
    try:
        regrouped = classifier.classify([(t, params) for t in sentences])
    finally:
        classifier.encoder.max_batch, classifier.encoder.max_batch_tokens = 32, 4096
    _assert_same(regrouped, expected)
    _assert_same(expected, reference(sentences, top_k=2))


def test_length_sorted_groups_pad_little_and_cover_every_input():
    lengths = [5, 120, 7, 64, 3, 118, 6, 66, 2, 500]
    groups = length_sorted_groups(lengths, max_batch=3, max_tokens=256)
    assert sorted(i for g in groups for i in g) == list(range(len(lengths)))
    for group in groups:
        assert len(group) <= 3
        padded = max(lengths[i] for i in group) * len(group)
        assert padded <= 256 or len(group) == 1
    assert groups[0] == [9]  # longer than the budget: alone
    assert [lengths[i] for i in groups[1]] == [120, 118]
    total_padded = sum(max(lengths[i] for i in g) * len(g) for g in groups)
    assert total_padded < 1.1 * sum(lengths)


def test_groups_dealt_to_runners_cover_every_input_and_share_the_work():
    lengths = [30, 5, 12, 40, 8, 8, 9, 22, 17, 3, 50, 11, 14, 16, 9, 10]
    groups = length_sorted_groups(lengths, call_overhead_tokens=16)
    dealt = split_for_runners(groups, lengths, 2, call_overhead_tokens=16)
    assert len(dealt) == 2
    assert sorted(i for runner in dealt for g in runner for i in g) == list(range(len(lengths)))
    loads = [sum(16 + len(g) * max(lengths[i] for i in g) for g in runner) for runner in dealt]
    assert max(loads) <= 1.25 * sum(loads) / 2
    # One group of equal lengths is halved so that both runners get work.
    halves = split_for_runners([[0, 1, 2, 3]], [9, 9, 9, 9], 2)
    assert sorted(len(runner[0]) for runner in halves) == [2, 2]
    assert split_for_runners([[0]], [5], 2) == [[[0]], []]


def test_side_by_side_runners_give_the_pipeline_results_in_order(kind, tiny_exported, reference):
    model = TextClassifier.load(tiny_exported(kind), threads=2)
    model.encoder.use_runners(2)
    threads: set[str] = set()
    narrow_run = model.encoder.narrow.run

    def watched_run(*args, **kwargs):
        threads.add(threading.current_thread().name)
        return narrow_run(*args, **kwargs)

    model.encoder.narrow.run = watched_run
    sentences = corpus_sentences()[2000:2040]
    params = ClassificationParameters(top_k=2)
    try:
        ours = model.classify([(t, params) for t in sentences])
        alone = model.classify([(sentences[0], params)])
    finally:
        model.encoder.close()
    assert len(threads) == 2, threads  # the batch really ran on two threads
    _assert_same(ours, reference(sentences, top_k=2))
    _assert_same(alone, reference(sentences[:1], top_k=2))


def test_too_long_input_is_refused_with_the_limit(classifier):
    text = " ".join(corpus_sentences()[:40])
    assert _token_count(classifier, text) > classifier.max_input_tokens
    with pytest.raises(InvalidInput) as refused:
        classifier.classify(
            [("short", ClassificationParameters()), (text, ClassificationParameters())]
        )
    assert refused.value.field == "inputs"
    assert str(MAX_POSITIONS) in refused.value.message
    assert classifier.max_input_tokens == MAX_POSITIONS


@pytest.mark.parametrize("flag", ["truncate", "truncation"])
def test_truncate_matches_pipeline_with_truncation(classifier, reference, flag):
    long_texts = [" ".join(corpus_sentences()[:40]), "great " * 300, corpus_sentences()[742]]
    params = ClassificationParameters.model_validate({flag: True, "top_k": 3})
    ours = classifier.classify([(t, params) for t in long_texts])
    _assert_same(ours, reference(long_texts, top_k=3, truncation=True))


@pytest.mark.parametrize(
    "bad",
    [
        {"top_k": 1, "unknown": True},
        {"top_k": 0},
        {"function_to_apply": "relu"},
        {"return_all_scores": True},
    ],
)
def test_unknown_or_invalid_parameters_are_rejected(bad):
    with pytest.raises(ValidationError):
        ClassificationParameters.model_validate(bad)


def test_labels_come_from_the_model_config(classifier, kind):
    expected = {
        "bert-classifier": ["NEGATIVE", "POSITIVE"],
        "distilbert-classifier": ["negative", "neutral", "positive"],
    }[kind]
    assert classifier.labels == expected


def test_runtime_modules_import_without_torch_or_transformers():
    code = (
        "import sys\n"
        "import service.runtime.encoder_batches, service.runtime.tasks.classification\n"
        "import service.runtime.tasks.question_answering, service.runtime.tasks.embeddings\n"
        "heavy = [m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers')]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[1])
