"""Tokenize on arrival (TEI's router/backend split): an item is tokenized and checked before it
queues, so an over-long input never reaches the batcher; each request gets its own stage times;
the batcher can cut a batch by the tokens its items hold."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from service import request_logging
from service.batching import AdaptiveBatcher
from service.config import BatchingSettings, Settings, load_settings
from service.dataplane import DataPlane
from service.model_repository import ModelRecord
from service.runtime.errors import InvalidInput
from service.runtime.tasks.classification import ClassificationParameters, TextClassifier

TASK = "text-classification"
NAME = "arrival-classifier"
LONG = "word " * 2000


@pytest.fixture(scope="module")
def classifier(tiny_exported) -> TextClassifier:
    model = TextClassifier.load(tiny_exported("distilbert-classifier"), threads=1)
    model.warmup()
    return model


def serving(classifier: TextClassifier, **batching) -> DataPlane:
    plane = DataPlane(Settings(batching=BatchingSettings(**batching)))
    plane.install(ModelRecord(NAME, f"{NAME}:1", TASK, Path(".")), classifier, 0.0)
    plane.ready = True
    return plane


def classify(plane: DataPlane, *texts: str):
    items = [(text, ClassificationParameters()) for text in texts]
    return plane.run_batched(TASK, items, NAME, "http")


def test_an_over_long_input_is_refused_naming_its_field_before_it_queues(classifier, monkeypatch):
    submitted = []
    submit_many = AdaptiveBatcher.submit_many

    async def spy(self, items):
        submitted.append(list(items))
        return await submit_many(self, items)

    monkeypatch.setattr(AdaptiveBatcher, "submit_many", spy)
    plane = serving(classifier)

    async def scenario():
        with pytest.raises(InvalidInput) as refused:
            await classify(plane, "fine", LONG)
        assert submitted == []  # neither item queued: the request is refused as a whole
        assert plane.models[NAME].batcher.queued == 0
        assert await classify(plane, "fine")
        return refused.value

    refused = asyncio.run(scenario())
    assert refused.http_status == 422
    assert refused.field == "inputs[1]" and str(classifier.max_input_tokens) in refused.message
    assert [len(items) for items in submitted] == [1]
    plane.close()


def test_each_request_of_one_batch_gets_its_own_stage_times(classifier):
    # An idle model waits 300 ms for company: both requests run in one batch.
    plane = serving(classifier, max_wait_ms=300)
    texts = ["short", "a much longer sentence than the other one, with many more tokens in it"]

    async def one(text: str) -> dict:
        with request_logging.request_scope("http") as context:
            await classify(plane, text)
        return context.fields

    async def scenario():
        return await asyncio.gather(*(one(text) for text in texts))

    short, long = asyncio.run(scenario())
    plane.close()
    tokens = [len(classifier.tokenizer.encode(text)) for text in texts]
    assert [short["input_tokens"], long["input_tokens"]] == tokens
    assert tokens[0] < tokens[1]
    # One batch ran both: the same inference, each its own tokenization.
    assert short["inference_ms"] == long["inference_ms"] > 0
    assert short["tokenize_ms"] > 0 and long["tokenize_ms"] > 0
    assert short["queue_ms"] >= 0 and long["queue_ms"] >= 0


def test_a_token_budget_cuts_a_batch_before_the_item_that_would_pass_it():
    batches: list[list[str]] = []

    def run(items):
        batches.append(list(items))
        return [item.upper() for item in items]

    async def scenario(budget: int, items: list[str]):
        batcher = AdaptiveBatcher(
            "budget", run, max_batch_size=8, max_batch_input_tokens=budget, tokens=len
        )
        try:
            return await batcher.submit_many(items)
        finally:
            batcher.close()

    ran = asyncio.run(scenario(10, ["aaaa", "bbbb", "cccc", "dd", "e" * 20]))
    assert batches == [["aaaa", "bbbb"], ["cccc", "dd"], ["e" * 20]]  # a long item runs alone
    assert [r.result for r in ran] == ["AAAA", "BBBB", "CCCC", "DD", "E" * 20]
    assert [r.batch_size for r in ran] == [2, 2, 2, 2, 1]
    assert ran[0].finished <= ran[2].started

    batches.clear()
    asyncio.run(scenario(1000, ["aaaa", "bbbb", "cccc", "dd"]))
    assert batches == [["aaaa", "bbbb", "cccc", "dd"]]  # a generous budget: one batch


def test_the_token_budget_is_a_setting_with_an_environment_override(classifier):
    default = Settings().batching.max_batch_input_tokens
    assert default >= Settings().batching.max_batch_size * 512
    settings = load_settings(environ={"NLP_BATCHING_MAX_BATCH_INPUT_TOKENS": "64"})
    assert settings.batching.max_batch_input_tokens == 64
    plane = serving(classifier, max_batch_input_tokens=64)
    assert plane.models[NAME].batcher.max_batch_input_tokens == 64
    plane.close()


def test_short_requests_tokenize_on_the_loop_and_long_ones_on_the_tokenizing_threads(
    classifier, monkeypatch
):
    """A short request is tokenized on the event loop (cheaper than a thread hand-off:
    loadtests/results/arrival-2026-12-07); a large one never holds the loop."""
    import threading

    threads = []
    prepare = TextClassifier.prepare

    def spy(self, item):
        threads.append(threading.current_thread().name)
        return prepare(self, item)

    monkeypatch.setattr(TextClassifier, "prepare", spy)
    plane = serving(classifier)
    long_but_valid = ["a few words here. " * 20] * 8  # 2,880 characters, each text fits

    async def scenario():
        await classify(plane, "short")
        await classify(plane, *long_but_valid)

    asyncio.run(scenario())
    assert threads[0] == threading.main_thread().name
    assert len(threads) == 9 and all(name.startswith("tokenize") for name in threads[1:])
