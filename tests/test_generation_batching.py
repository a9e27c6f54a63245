"""Iteration-level batching: concurrent requests decoded together give each request the tokens it
gets alone, while sharing the ORT calls.

The scheduler runs its real thread and the real tiny exports; requests arrive while others are
mid-decode (they join at a step boundary after their own prefill), finish at different lengths,
stop on stop sequences, sample with seeds, get cancelled or run past their deadline.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from service.generation_scheduler import GenerationScheduler
from service.runtime.errors import DeadlineExceeded, Overloaded
from service.runtime.tasks.generation import GenerationParameters, TextGenerator

PROMPTS = [
    "The film was a quiet surprise, and the audience",
    "Hi",
    "A long afternoon by the river, with nothing to do but watch the boats go by and talk",
    "Numbers 3.14159 and 1,000,000 and $42.",
    "Héllo wörld, ça va?",
    "It 's a test , with spaces before punctuation .",
    "Once upon a time",
    "日本語のテキストと English mixed",
]
LENGTHS = [12, 30, 5, 20, 1, 25, 17, 9]


@pytest.fixture(scope="module")
def generators(tiny_exported, tiny_checkpoint, tmp_path_factory):
    """Optimum's exports (left-padded caches) and the tiny Llama as ONNX Runtime GenAI's builder
    writes it (fused GroupQueryAttention, right-padded caches: models/genai_export.py)."""
    from models.genai_export import build_decoder

    loaded = {
        kind: TextGenerator.load(tiny_exported(kind), threads=1) for kind in ("gpt2", "llama-chat")
    }
    gqa = build_decoder(tiny_checkpoint("llama-chat"), tmp_path_factory.mktemp("gqa") / "llama")
    loaded["llama-chat-gqa"] = TextGenerator.load(gqa, threads=1)
    assert loaded["llama-chat-gqa"].right_padded and not loaded["llama-chat"].right_padded
    return loaded


class StepLog:
    """Rows of every ORT call the scheduler made."""

    def __init__(self) -> None:
        self.rows: list[int] = []
        self.tokens = 0

    def __call__(self, rows: int, tokens: int) -> None:
        self.rows.append(rows)
        self.tokens += tokens


async def _collect(
    scheduler: GenerationScheduler,
    generator: TextGenerator,
    prompt: str,
    params: GenerationParameters,
    after: asyncio.Event | None = None,
    signal: asyncio.Event | None = None,
):
    """Submit once `after` is set; set `signal` on the third token received."""
    if after is not None:
        await after.wait()
    generation = scheduler.submit(generator.prepare(prompt, params))
    events = []
    async for event in generation:
        events.append(event)
        if signal is not None and len(events) == 3:
            signal.set()
    return events[:-1], events[-1]


def _ids(tokens) -> list[int]:
    return [t.id for t in tokens]


@pytest.mark.parametrize("kind", ["gpt2", "llama-chat", "llama-chat-gqa"])
def test_concurrent_requests_get_the_tokens_they_get_alone(kind, generators):
    generator = generators[kind]
    params = [GenerationParameters(max_new_tokens=n) for n in LENGTHS]
    alone = [generator.generate([p], q)[0] for p, q in zip(PROMPTS, params, strict=True)]
    steps = StepLog()

    async def run():
        scheduler = GenerationScheduler(
            generator, kind, max_active=8, max_waiting=16, on_step=steps
        )
        try:
            # The second half arrives once the first is decoding: it joins a running batch.
            decoding = asyncio.Event()
            results = await asyncio.gather(
                *[
                    _collect(
                        scheduler,
                        generator,
                        prompt,
                        q,
                        after=decoding if i >= 4 else None,
                        signal=decoding if i == 1 else None,
                    )
                    for i, (prompt, q) in enumerate(zip(PROMPTS, params, strict=True))
                ]
            )
            assert scheduler.in_flight == 0
            return results
        finally:
            scheduler.close()

    results = asyncio.run(run())
    for (tokens, final), single in zip(results, alone, strict=True):
        assert _ids(tokens) == _ids(single.tokens)
        assert final.generated_text == single.generated_text
        assert "".join(t.text for t in tokens) == single.generated_text
        assert final.finish_reason == single.finish_reason
        assert [t.logprob for t in tokens] == pytest.approx(
            [t.logprob for t in single.tokens], abs=1e-4
        )
    assert steps.tokens == sum(len(t) for t, _ in results)
    assert max(steps.rows) > 1, "requests were decoded one after another, not together"
    # The first half is submitted at once; the scheduler's thread may take the first arrival
    # before the other three (a fresh CI clone saw steps [1, 1, ...]), but all four need 5+
    # tokens, so they decode together before any of them ends.
    assert max(steps.rows) >= 4
    assert max(steps.rows) >= 6  # the second half joined them
    # Fewer ORT calls than decoding one request after another would take.
    assert len(steps.rows) < sum(len(t) for t, _ in results)


def test_stop_sequences_and_seeded_sampling_are_kept_in_a_batch(generators):
    generator = generators["llama-chat"]
    reference = generator.generate([PROMPTS[0]], GenerationParameters(max_new_tokens=20))[0]
    stop = reference.generated_text[8:11]
    params = [
        GenerationParameters(max_new_tokens=20, stop=[stop]),
        GenerationParameters(
            max_new_tokens=15, do_sample=True, seed=7, top_k=20, top_p=0.9, temperature=0.8
        ),
        GenerationParameters(max_new_tokens=15, repetition_penalty=1.3),
        GenerationParameters(max_new_tokens=15, do_sample=True, seed=11),
    ]
    prompts = [PROMPTS[0], PROMPTS[2], PROMPTS[3], PROMPTS[6]]
    alone = [generator.generate([p], q)[0] for p, q in zip(prompts, params, strict=True)]
    assert alone[0].finish_reason == "stop_sequence"

    async def run():
        scheduler = GenerationScheduler(generator, "chat", max_active=4, max_waiting=4)
        try:
            return await asyncio.gather(
                *[
                    _collect(scheduler, generator, p, q)
                    for p, q in zip(prompts, params, strict=True)
                ]
            )
        finally:
            scheduler.close()

    for (tokens, final), single in zip(asyncio.run(run()), alone, strict=True):
        assert _ids(tokens) == _ids(single.tokens)
        assert (final.generated_text, final.finish_reason, final.stop_sequence, final.seed) == (
            single.generated_text,
            single.finish_reason,
            single.stop_sequence,
            single.seed,
        )


def test_a_cancelled_request_leaves_the_batch_and_the_others_are_unchanged(generators):
    generator = generators["gpt2"]
    long = GenerationParameters(max_new_tokens=200)
    others = [GenerationParameters(max_new_tokens=40)] * 3
    alone = [generator.generate([p], q)[0] for p, q in zip(PROMPTS[1:4], others, strict=True)]
    steps = StepLog()

    async def run():
        scheduler = GenerationScheduler(
            generator, "gpt2", max_active=8, max_waiting=8, on_step=steps
        )
        try:
            victim = scheduler.submit(generator.prepare(PROMPTS[0], long))
            rest = [
                asyncio.ensure_future(_collect(scheduler, generator, p, q))
                for p, q in zip(PROMPTS[1:4], others, strict=True)
            ]
            received = 0
            async for _event in victim:
                received += 1
                if received == 3:
                    break
            victim.cancel()
            results = await asyncio.gather(*rest)
            assert scheduler.in_flight == 0
            return received, results
        finally:
            scheduler.close()

    received, results = asyncio.run(run())
    for (tokens, _), single in zip(results, alone, strict=True):
        assert _ids(tokens) == _ids(single.tokens)
    # The victim stopped long before its 200 tokens: at most the steps its neighbours ran.
    assert steps.tokens - sum(len(t) for t, _ in results) <= 41


def test_the_deadline_stops_generation_with_deadline_exceeded(generators):
    generator = generators["gpt2"]
    steps = StepLog()

    async def run():
        scheduler = GenerationScheduler(
            generator, "gpt2", max_active=8, max_waiting=8, on_step=steps
        )
        try:
            deadline = time.monotonic() + 0.02
            generation = scheduler.submit(
                generator.prepare(PROMPTS[0], GenerationParameters(max_new_tokens=240)), deadline
            )
            tokens = []
            with pytest.raises(DeadlineExceeded):
                async for event in generation:
                    tokens.append(event)
            assert time.monotonic() >= deadline
            expired = scheduler.submit(
                generator.prepare(PROMPTS[1], GenerationParameters()), time.monotonic() - 1
            )
            with pytest.raises(DeadlineExceeded):
                await anext(expired)
            return tokens
        finally:
            scheduler.close()

    tokens = asyncio.run(run())
    assert len(tokens) < 240 and steps.tokens == len(tokens)


def test_submissions_past_the_waiting_bound_are_refused(generators):
    generator = generators["gpt2"]

    async def run():
        scheduler = GenerationScheduler(generator, "gpt2", max_active=1, max_waiting=1)
        try:
            params = GenerationParameters(max_new_tokens=200)
            first = scheduler.submit(generator.prepare(PROMPTS[0], params))
            await anext(first)  # decoding: the only place in the batch is taken
            second = scheduler.submit(generator.prepare(PROMPTS[1], params))  # waits
            with pytest.raises(Overloaded):
                scheduler.submit(generator.prepare(PROMPTS[2], params))
            first.cancel()
            events = [event async for event in second]
            assert events[-1].generated_tokens == 200
        finally:
            scheduler.close()

    asyncio.run(run())


def test_fused_gqa_graph_generates_the_tokens_of_the_optimum_export(generators):
    """The builder's graph is the same model: greedy tokens equal the Optimum export's (which
    tests/test_generation_parity.py holds equal to PyTorch), alone and batched."""
    optimum, fused = generators["llama-chat"], generators["llama-chat-gqa"]
    params = [GenerationParameters(max_new_tokens=n) for n in LENGTHS]
    expected = [_ids(r.tokens) for r in optimum.generate(PROMPTS, params)]
    assert [_ids(r.tokens) for r in fused.generate(PROMPTS, params)] == expected
    for prompt, param, tokens in zip(PROMPTS, params, expected, strict=True):
        assert _ids(fused.generate([prompt], param)[0].tokens) == tokens
