"""Where a batch's time goes, reported by the runtimes without knowing who listens.

The runtimes tokenize inside their batch calls (tokenization needs each model's own rules), so
only they can time it. They wrap it in `tokenizing()`; the data plane opens `recording()` around a
batch and reads the totals afterwards (TEI's split of a request into queue, tokenization and
inference). Outside a recording (warm-up, tests, the export side) `tokenizing()` costs one
ContextVar read and records nothing. No metrics library and no protocol is known here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from time import perf_counter


@dataclass
class StageTimes:
    """What one batch (or one generation request) spent tokenizing, and the tokens it made."""

    tokenize_seconds: float = 0.0
    # Tokens fed to the model, special tokens included, after truncation (all QA windows).
    input_tokens: int = 0

    def count_tokens(self, tokens: int) -> None:
        self.input_tokens += tokens


_current: ContextVar[StageTimes | None] = ContextVar("stage_times", default=None)


@contextmanager
def recording(times: StageTimes | None = None) -> Iterator[StageTimes]:
    """Collect the stage times of the runtime calls made inside this block (same thread)."""
    times = times if times is not None else StageTimes()
    token = _current.set(times)
    try:
        yield times
    finally:
        _current.reset(token)


def _ignore(tokens: int) -> None:
    return None


@contextmanager
def tokenizing() -> Iterator[Callable[[int], None]]:
    """Time the block as tokenization; call the yielded function with the tokens produced."""
    times = _current.get()
    if times is None:
        yield _ignore
        return
    started = perf_counter()
    try:
        yield times.count_tokens
    finally:
        times.tokenize_seconds += perf_counter() - started
