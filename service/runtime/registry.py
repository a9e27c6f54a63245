"""The one table of tasks: how each is loaded and how the batcher runs it.

Adding a task is adding a row (Optimum's TasksManager idea); the data plane and the protocol
adapters look tasks up here instead of branching on task names.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from service.config import Settings
from service.runtime.onnx_session import default_threads
from service.runtime.tasks.classification import TextClassifier
from service.runtime.tasks.embeddings import Embedder
from service.runtime.tasks.generation import TextGenerator
from service.runtime.tasks.question_answering import QuestionAnswerer
from service.runtime.tasks.translation import Translator

Loader = Callable[[Path, Settings], Any]
BatchRunner = Callable[[Any, Sequence[Any]], Sequence[Any]]


@dataclass(frozen=True)
class TaskSpec:
    name: str
    endpoint: str
    load: Loader
    # Runs a batch of independent items (each with its own parameters); None = not batched.
    run_batch: BatchRunner | None = None
    # Token-by-token generation (streamed, concurrency-limited instead of batched).
    streams: bool = False


def _threads(settings: Settings) -> int | None:
    return settings.models.threads or None


def _encoder_loader(cls: Any) -> Loader:
    """Load an encoder task and give its ORT grouping the configured batch limits (the batcher
    hands it up to `max_batch_size` inputs; it runs them in length-sorted groups that stay
    within `max_batch_tokens` padded tokens), run by `models.encoder_runners` side by side
    (0: one per intra-op thread)."""

    def load(path: Path, settings: Settings) -> Any:
        runtime = cls.load(path, threads=_threads(settings))
        runtime.encoder.max_batch = settings.batching.max_batch_size
        runtime.encoder.max_batch_tokens = settings.batching.max_batch_tokens
        runtime.encoder.call_overhead_tokens = settings.batching.call_overhead_tokens
        runtime.encoder.use_runners(
            settings.models.encoder_runners or _threads(settings) or default_threads()
        )
        return runtime

    return load


def _load_translator(path: Path, settings: Settings) -> Translator:
    src, _, tgt = settings.models.translation_pair.partition("-")
    return Translator.load(
        path,
        threads=_threads(settings),
        max_new_tokens_limit=settings.limits.max_new_tokens,
        max_beams=settings.limits.max_num_beams,
        preferred_pair=(src, tgt) if tgt else None,
    )


def _translate_items(runtime: Translator, items: Sequence[tuple[str, Any]]) -> list[str]:
    """Items with equal parameters share one `translate` call (beams need one setting)."""
    results: list[str | None] = [None] * len(items)
    groups: dict[str, list[int]] = {}
    for i, (_, params) in enumerate(items):
        groups.setdefault(params.model_dump_json(), []).append(i)
    for indices in groups.values():
        params = items[indices[0]][1]
        outputs = runtime.translate([items[i][0] for i in indices], params)
        for i, text in zip(indices, outputs, strict=True):
            results[i] = text
    return results  # type: ignore[return-value]


TASKS: dict[str, TaskSpec] = {
    spec.name: spec
    for spec in (
        TaskSpec(
            "text-classification",
            "classify",
            load=_encoder_loader(TextClassifier),
            run_batch=lambda runtime, items: runtime.classify(items),
        ),
        TaskSpec(
            "question-answering",
            "answer",
            load=_encoder_loader(QuestionAnswerer),
            run_batch=lambda runtime, items: runtime.answer(items),
        ),
        TaskSpec(
            "feature-extraction",
            "embed",
            load=_encoder_loader(Embedder),
            run_batch=lambda runtime, items: runtime.embed(items),
        ),
        TaskSpec(
            "translation",
            "translate",
            load=_load_translator,
            run_batch=_translate_items,
        ),
        TaskSpec(
            "text-generation",
            "generate",
            load=lambda path, settings: TextGenerator.load(
                path, threads=_threads(settings), max_new_tokens_cap=settings.limits.max_new_tokens
            ),
            streams=True,
        ),
    )
}
