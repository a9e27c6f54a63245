"""An encoder-only ONNX model (BERT family) run over many inputs in length-sorted batches.

Classification, question answering and embeddings all do the same thing between their own pre-
and post-processing: tokenize, refuse or truncate what is too long (`encode`, as an item
arrives), and run the graph (`run`, for a batch of them). How the graph is run decides
throughput on CPU: a batch padded to its longest member computes every pad token, so batches
taken in arrival order cost more than running inputs one by one. Here inputs are
sorted by length and cut into groups bounded by size and by padded tokens, each padded only to its
own longest member, and results come back in the caller's order.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from tokenizers import Encoding, Tokenizer

from service.runtime.errors import InvalidInput, ModelLoadError
from service.runtime.onnx_session import create_session
from service.runtime.text_tokenizer import TextTokenizer

MAX_BATCH = 32
# Padded tokens per ORT call: 32 inputs of 128 tokens, or 8 of 512.
MAX_BATCH_TOKENS = 4096
# What one more ORT call costs, in padded tokens: DistilBERT-base runs a sentence alone 25-50%
# slower than in a length-sorted batch (fp32 and int8, docs/facts.md), about 10-20 tokens'
# worth. The setting `batching.call_overhead_tokens` overrides it (a huge value restores
# fill-to-the-limit groups).
CALL_OVERHEAD_TOKENS = 16

_ORT_INT_TYPES = {"tensor(int64)": np.int64, "tensor(int32)": np.int32}
_KNOWN_INPUTS = ("input_ids", "attention_mask", "token_type_ids", "position_ids")


def length_sorted_groups(
    lengths: Sequence[int],
    max_batch: int = MAX_BATCH,
    max_tokens: int = MAX_BATCH_TOKENS,
    call_overhead_tokens: int = CALL_OVERHEAD_TOKENS,
) -> list[list[int]]:
    """Indices grouped longest first, each group within `max_batch` items and `max_tokens` padded.

    Groups are runs of the length-sorted inputs, cut where the padded tokens saved outweigh one
    more ORT call: the cut points minimise the sum over groups of `call_overhead_tokens + size *
    longest` (a shortest-path over the sorted order, O(n * max_batch)). Requests of mixed lengths
    batched together thus cost about what length-homogeneous batches would, and an input longer
    than `max_tokens` still gets a group of its own.
    """
    order = sorted(range(len(lengths)), key=lambda i: lengths[i], reverse=True)
    n = len(order)
    # best[i]: the least cost of running order[:i]; cut[i]: where its last group starts.
    best = [0.0] + [float("inf")] * n
    cut = [0] * (n + 1)
    for start in range(n):
        longest = lengths[order[start]]  # sorted longest first: a group pads to its first member
        for end in range(start + 1, min(n, start + max(1, max_batch)) + 1):
            size = end - start
            if size > 1 and longest * size > max_tokens:
                break
            cost = best[start] + call_overhead_tokens + longest * size
            if cost < best[end]:
                best[end], cut[end] = cost, start
    groups: list[list[int]] = []
    end = n
    while end > 0:
        groups.append(order[cut[end] : end])
        end = cut[end]
    groups.reverse()
    return groups


def split_for_runners(
    groups: list[list[int]],
    lengths: Sequence[int],
    runners: int,
    call_overhead_tokens: int = CALL_OVERHEAD_TOKENS,
) -> list[list[list[int]]]:
    """The groups dealt to `runners` single-threaded runners so that they finish together.

    A group costs `call_overhead_tokens + size * longest` padded tokens (its members are sorted
    longest first). The costliest group is halved (two runs of the sorted order) while there are
    fewer groups than runners or the busiest runner has over 1.25x its fair share; groups are
    then dealt costliest first to the least loaded runner. Returns one list of groups per runner
    (some may be empty)."""

    def cost(group: list[int]) -> int:
        return call_overhead_tokens + len(group) * lengths[group[0]]

    groups = [list(g) for g in groups]
    while True:
        loads = [0] * runners
        dealt: list[list[list[int]]] = [[] for _ in range(runners)]
        for group in sorted(groups, key=cost, reverse=True):
            least = loads.index(min(loads))
            loads[least] += cost(group)
            dealt[least].append(group)
        fair = sum(loads) / runners
        splittable = [g for g in groups if len(g) > 1]
        if not splittable or (len(groups) >= runners and max(loads) <= 1.25 * fair):
            return dealt
        largest = max(splittable, key=cost)
        groups.remove(largest)
        half = len(largest) // 2
        groups += [largest[:half], largest[half:]]


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}


def _position_limit(config: dict[str, Any]) -> int | None:
    for key in ("max_position_embeddings", "n_positions"):
        if isinstance(config.get(key), int):
            return config[key]
    return None


@dataclass
class EncoderModel:
    """An ORT session and its tokenizer, plus the rules for feeding it batches."""

    session: ort.InferenceSession = field(repr=False)
    tokenizer: TextTokenizer = field(repr=False)
    config: dict[str, Any] = field(repr=False)
    max_input_tokens: int
    max_batch: int = MAX_BATCH
    max_batch_tokens: int = MAX_BATCH_TOKENS
    call_overhead_tokens: int = CALL_OVERHEAD_TOKENS
    _input_types: dict[str, type] = field(init=False, repr=False)
    _truncating: dict[tuple[int, int, str, str], Tokenizer] = field(
        init=False, repr=False, default_factory=dict
    )
    _truncating_lock: threading.Lock = field(init=False, repr=False, default_factory=threading.Lock)
    graph: Path | None = None
    # See `use_runners`: a single-threaded session of the same graph and the threads that run
    # it side by side; None: every group runs on `session`.
    narrow: ort.InferenceSession | None = field(init=False, repr=False, default=None)
    runners: int = field(init=False, default=1)
    _pool: ThreadPoolExecutor | None = field(init=False, repr=False, default=None)

    def __post_init__(self) -> None:
        self._input_types = {}
        for declared in self.session.get_inputs():
            if declared.name not in _KNOWN_INPUTS or declared.type not in _ORT_INT_TYPES:
                raise ModelLoadError(
                    f"encoder graph input {declared.name!r} ({declared.type}) is not one of "
                    f"{', '.join(_KNOWN_INPUTS)} as integers"
                )
            self._input_types[declared.name] = _ORT_INT_TYPES[declared.type]

    def use_runners(self, runners: int) -> None:
        """Run a call of several inputs as `runners` single-threaded ORT runs side by side.

        On a small CPU, one ORT call split over 2 intra-op threads waits at every operator for
        the slower thread (and for the event loop, which needs the same cores), so a served
        batch of short sentences uses the cores poorly. Independent single-threaded runs, one
        per core, do not wait for each other: DistilBERT-base in process, sorted batches of 8,
        2 cores: 1-thread runs x2 81.6 items/s vs one 2-thread session 68.6-74.0 (CPU per item
        22.9 vs 26.9-27.9 ms). A lone input still runs on the multi-threaded session, which
        halves its latency (20.9 vs 35.9 ms). The price was a second session, i.e. the model's
        weights twice in memory (+272 MB PSS for DistilBERT-base fp32); both sessions now load the
        graph from the prepared-graph cache and map the same weights (+17 MB; `create_session`,
        service/runtime/prepared_graph.py)."""
        if runners <= 1 or self.graph is None or self._pool is not None:
            return
        self.narrow = create_session(self.graph, 1, spinning=False)
        self.runners = runners
        self._pool = ThreadPoolExecutor(runners - 1, thread_name_prefix="encoder-runner")

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False)

    @classmethod
    def load(
        cls, model_dir: Path, threads: int | None = None, max_input_tokens: int | None = None
    ) -> EncoderModel:
        """Load `model.onnx` and its tokenizer; `max_input_tokens` can only lower the limit."""
        model_dir = Path(model_dir)
        graph = model_dir / "model.onnx"
        if not graph.exists() or not (model_dir / "tokenizer.json").exists():
            raise ModelLoadError(f"{model_dir} needs model.onnx and tokenizer.json")
        tokenizer = TextTokenizer.load(model_dir)
        config = _read_json(model_dir / "config.json")
        limits = [tokenizer.model_max_length, _position_limit(config), max_input_tokens]
        return cls(
            session=create_session(graph, threads, spinning=False),
            graph=graph,
            tokenizer=tokenizer,
            config=config,
            max_input_tokens=min(limit for limit in limits if limit is not None),
        )

    @property
    def output_names(self) -> list[str]:
        return [o.name for o in self.session.get_outputs()]

    def truncating_tokenizer(
        self,
        max_length: int,
        stride: int = 0,
        strategy: str = "longest_first",
        direction: str | None = None,
    ) -> Tokenizer:
        """A copy of the tokenizer that truncates like `transformers` does with these settings
        (`direction` None: the tokenizer config's `truncation_side`, else right).

        Copies, cached per setting, keep the shared tokenizer untouched for concurrent callers.
        """
        direction = direction or self.tokenizer.config.get("truncation_side", "right")
        key = (max_length, stride, strategy, direction)
        with self._truncating_lock:
            copy = self._truncating.get(key)
            if copy is None:
                copy = Tokenizer.from_str(self.tokenizer.tokenizer.to_str())
                copy.enable_truncation(
                    max_length, stride=stride, strategy=strategy, direction=direction
                )
                if len(self._truncating) >= 8:
                    self._truncating.pop(next(iter(self._truncating)))
                self._truncating[key] = copy
        return copy

    def encode(
        self,
        texts: Sequence[str | tuple[str, str]],
        truncate: Sequence[bool],
        field_name: str = "inputs",
        directions: Sequence[str | None] | None = None,
        strategy: str = "longest_first",
        refusal_hint: str = "send truncate=true to cut it to the limit",
    ) -> list[Encoding]:
        """Tokenize with special tokens; inputs over the limit are cut if asked (from the side
        `directions` names per input, default the tokenizer's; a (text, text_pair) pair loses
        tokens from its longer part first, as `truncation=True` does, or from the part
        `strategy` names: "only_first"), else refused with `refusal_hint` (a route with no
        `truncate` parameter says what else to do)."""
        encodings = self.tokenizer.encode_batch(list(texts))
        limit = self.max_input_tokens
        for i, encoding in enumerate(encodings):
            if len(encoding) <= limit:
                continue
            if not truncate[i]:
                raise InvalidInput(
                    f"input is {len(encoding)} tokens long, more than this model's limit of "
                    f"{limit} tokens; {refusal_hint}",
                    field=field_name,
                )
            direction = directions[i] if directions is not None else None
            text = texts[i]
            cutter = self.truncating_tokenizer(limit, strategy=strategy, direction=direction)
            try:
                encodings[i] = cutter.encode(*(text if isinstance(text, tuple) else (text,)))
            except Exception as err:  # tokenizers: the part it may cut is too short
                raise InvalidInput(
                    f"input is {len(encoding)} tokens long and cannot be cut to this model's "
                    f"limit of {limit} tokens ({err})",
                    field=field_name,
                ) from err
        return encodings

    def run(
        self, encodings: Sequence[Encoding], outputs: Sequence[str], per_token: bool = False
    ) -> list[tuple[np.ndarray, ...]]:
        """Each encoding's rows of `outputs`, in input order.

        With `per_token`, outputs are (batch, sequence, ...) and each row is cut back to its own
        length, so callers never see padding.
        """
        results: list[tuple[np.ndarray, ...]] = [()] * len(encodings)
        lengths = [len(e) for e in encodings]
        groups = length_sorted_groups(
            lengths, self.max_batch, self.max_batch_tokens, self.call_overhead_tokens
        )

        def run_groups(session: ort.InferenceSession, groups: list[list[int]]) -> None:
            for group in groups:
                arrays = session.run(list(outputs), self._feed([encodings[i] for i in group]))
                for row, index in enumerate(group):
                    if per_token:
                        results[index] = tuple(a[row, : lengths[index]] for a in arrays)
                    else:
                        results[index] = tuple(a[row] for a in arrays)

        if self._pool is None or self.narrow is None or len(encodings) < 2:
            run_groups(self.session, groups)
            return results
        mine, *theirs = split_for_runners(groups, lengths, self.runners, self.call_overhead_tokens)
        others = [self._pool.submit(run_groups, self.narrow, dealt) for dealt in theirs if dealt]
        try:
            run_groups(self.narrow, mine)
        finally:
            wait(others)  # never return (or raise) while another runner still fills `results`
        for other in others:
            other.result()
        return results

    def _feed(self, encodings: Sequence[Encoding]) -> dict[str, np.ndarray]:
        """Right-padded arrays for exactly the inputs the graph declares."""
        width = max(len(e) for e in encodings)
        pad_id = self.tokenizer.pad_id or 0
        ids = np.full((len(encodings), width), pad_id, dtype=np.int64)
        mask = np.zeros((len(encodings), width), dtype=np.int64)
        types = np.zeros((len(encodings), width), dtype=np.int64)
        for row, encoding in enumerate(encodings):
            n = len(encoding)
            ids[row, :n] = encoding.ids
            mask[row, :n] = 1
            types[row, :n] = encoding.type_ids
        available = {
            "input_ids": ids,
            "attention_mask": mask,
            "token_type_ids": types,
            "position_ids": np.tile(np.arange(width, dtype=np.int64), (len(encodings), 1)),
        }
        return {
            name: available[name].astype(dtype, copy=False)
            for name, dtype in self._input_types.items()
        }
