"""A request's item made ready on arrival: tokenized and checked before it queues.

TEI's router/backend split. A batched runtime's `prepare(item)` tokenizes and validates one
item in the caller's thread, as the request arrives; its `run_prepared(batch)` pads, runs and
post-processes a batch of prepared items on the model's thread. So an input the model cannot
take is refused before it waits in a queue, the batcher can bound a batch by the tokens in it,
and each request's tokenization is timed on its own items rather than by a batch-wide timer.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence, Sized
from dataclasses import dataclass
from time import perf_counter
from typing import Generic, TypeVar

from service.runtime.errors import InvalidInput

I = TypeVar("I")  # noqa: E741 - the item type, as the runtimes' protocol names it
Row = TypeVar("Row", bound=Sized)
P = TypeVar("P", bound="Prepared")


@dataclass(kw_only=True)
class Prepared(Generic[I, Row]):
    """One item and the model inputs it became (an encoding, a text's windows, a zero-shot
    sequence's pairs, token ids), each as long as the tokens the model reads for it."""

    item: I
    rows: list[Row]
    # Seconds `prepare` took for this item (set by `prepare_items`).
    tokenize_seconds: float = 0.0

    @property
    def input_tokens(self) -> int:
        """Tokens fed to the model: special tokens included, after truncation, every window."""
        return sum(len(row) for row in self.rows)


def prepare_items(prepare: Callable[[I], P], items: Sequence[I], field: str = "inputs") -> list[P]:
    """Each item prepared and timed, in order. A refused item of several is named by its place
    in the request (`inputs[2]`) when the runtime named the request's field (`field`)."""
    prepared = []
    for index, item in enumerate(items):
        started = perf_counter()
        try:
            ready = prepare(item)
        except InvalidInput as err:
            raise naming_the_item(err, index, len(items), field) from err.__cause__
        ready.tokenize_seconds = perf_counter() - started
        prepared.append(ready)
    return prepared


def naming_the_item(err: InvalidInput, index: int, count: int, field: str) -> InvalidInput:
    """`err` about item `index` of `count`, its field made `field[index]` (the runtime saw the
    item alone, so it said `field`)."""
    if count < 2 or err.field != field:
        return err
    named = f"{field}[{index}]"
    message = err.message
    message = named + message[len(field) :] if message.startswith(field) else f"{named}: {message}"
    return InvalidInput(message, field=named)
