"""Token classification (NER): the `transformers` token-classification pipeline, without torch.

The pipeline's post-processing is reproduced step by step (`transformers.pipelines.
token_classification`, Apache-2.0): a softmax per token, special tokens dropped, each token's
word (the vocabulary entry; an unknown token's is the text it covers) and offsets into the
original text; the `is_subword` rule (a tokenizer with a continuing-subword prefix, WordPiece's
"##": a token whose text differs in length from what it covers; otherwise the fallback heuristic,
no space before the token); words fused by `first`/`average`/`max`; adjacent entities grouped by
their B-/I- tags (`simple` and the word strategies), a group's word decoded by the tokenizer's
decoder as `convert_tokens_to_string` does; labels in `ignore_labels` (default `["O"]`) dropped.

`stride` splits a text longer than the model's limit into overlapping windows as the pipeline
does (the fast tokenizer's overflowing tokens); the entities of all windows are merged as the
pipeline merges them (`aggregate_overlapping_entities`: of overlapping entities the longer wins,
then the higher score). All windows of all requests run together in length-sorted batches.

Differences, all refusals (a 4xx naming the field) where the pipeline would cut or crash:
- a text longer than the limit without `stride` is refused (`inputs`), as every task here does
  without `truncate`; the pipeline silently classifies only its first window;
- `stride` must leave room for one new token per window (`parameters.stride`); the pipeline
  checks only `stride < model_max_length` and the tokenizer raises in between;
- at most `MAX_WINDOWS` windows per text (`inputs`), so that one request cannot hold the model.

The HTTP route's default `aggregation_strategy` is `simple`, as the Hugging Face Inference API
answers (entity groups); the pipeline's own default is `none`. `stride` with `none` is refused,
as the pipeline refuses it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator
from tokenizers import Encoding

from service.http.fields import TaskRequest, Text, as_list, like_inputs
from service.kserve.tensors import (
    TEXT,
    TaskTensors,
    Tensor,
    TensorSpec,
    one_text_per_item,
    ranked_tensors,
)
from service.runtime.encoder_batches import EncoderModel
from service.runtime.errors import InvalidInput, ModelLoadError
from service.runtime.prepared import Prepared
from service.runtime.sampling import softmax
from service.runtime.task import EncoderRuntime, ExportFacts, HttpRoute, task
from service.runtime.tasks.classification import config_labels

AggregationStrategy = Literal["none", "simple", "first", "average", "max"]
WORD_STRATEGIES = ("first", "average", "max")
# Windows of one text (with `stride`): 256 windows of 512 tokens is ~100k tokens of work.
MAX_WINDOWS = 256
MAX_IGNORE_LABELS = 1024


class TokenClassificationParameters(BaseModel):
    """The `parameters` of a token-classification request (Hugging Face payload)."""

    model_config = ConfigDict(extra="forbid")

    aggregation_strategy: AggregationStrategy = "simple"
    # Labels left out of the answer; None: ["O"], as the pipeline. A string is a
    # comma-separated list (v2 parameters are scalars).
    ignore_labels: list[str] | str | None = Field(default=None, max_length=MAX_IGNORE_LABELS)
    # Tokens shared by consecutive windows of a text longer than the model's limit.
    stride: int | None = Field(default=None, ge=0)

    @field_validator("aggregation_strategy", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        # The pipeline looks the name up case-insensitively (`AggregationStrategy[name.upper()]`).
        return value.lower() if isinstance(value, str) else value

    @field_validator("ignore_labels")
    @classmethod
    def _labels(cls, value: list[str] | str | None) -> list[str] | None:
        if isinstance(value, str):
            return [x.strip() for x in value.split(",") if x.strip()]
        return value

    @field_validator("stride")
    @classmethod
    def _stride(cls, value: int | None, info: ValidationInfo) -> int | None:
        if value is not None and info.data.get("aggregation_strategy") == "none":
            # The pipeline's own refusal.
            raise ValueError(
                'stride was provided to process all the text but aggregation_strategy="none"; '
                "please select another one instead"
            )
        return value

    def ignored(self) -> list[str]:
        return ["O"] if self.ignore_labels is None else list(self.ignore_labels)


TokenItem = tuple[str, TokenClassificationParameters]


class TokenClassificationRequest(TaskRequest):
    inputs: Text | list[Text] = Field(..., examples=["My name is Wolfgang and I live in Berlin."])
    parameters: TokenClassificationParameters = Field(default_factory=TokenClassificationParameters)


class Entity(BaseModel):
    """One token (`entity`, `index`: aggregation none) or one group of tokens (`entity_group`)."""

    entity: str | None = None
    entity_group: str | None = None
    score: float
    index: int | None = None
    word: str
    start: int
    end: int


def _outputs(results: list[list[dict[str, Any]]]) -> list[Tensor]:
    rows = [
        [
            {
                "entity": e.get("entity_group", e.get("entity")),
                "score": e["score"],
                "word": e["word"],
                "start": e["start"],
                "end": e["end"],
            }
            for e in entities
        ]
        for entities in results
    ]
    return ranked_tensors(
        rows,
        [
            ("entity", "BYTES", ""),
            ("score", "FP32", 0.0),
            ("word", "BYTES", ""),
            ("start", "INT64", -1),
            ("end", "INT64", -1),
        ],
    )


HTTP = HttpRoute(
    request=TokenClassificationRequest,
    response=list[Entity] | list[list[Entity]],
    items=lambda body: [(t, body.parameters) for t in as_list(body.inputs)],
    respond=like_inputs,
    summary="""Token classification / NER (`token-classification` pipeline payload): the entities
    of each input, in text order, with character offsets into it. `aggregation_strategy`
    (default `simple`, as the Inference API) groups tokens into entities (`entity_group`);
    `none` answers one entry per token (`entity`, `index`).""",
    exclude_none=True,
)

TENSORS = TaskTensors(
    inputs=(TEXT,),
    outputs=(
        TensorSpec(
            "entity",
            "BYTES",
            (-1, -1),
            "labels in text order (entity_group; entity with aggregation_strategy none)",
        ),
        TensorSpec("score", "FP32", (-1, -1), "their scores"),
        TensorSpec("word", "BYTES", (-1, -1), "their words"),
        TensorSpec("start", "INT64", (-1, -1), "character offsets where they start (pad -1)"),
        TensorSpec("end", "INT64", (-1, -1), "character offsets where they end (pad -1)"),
    ),
    parameters=TokenClassificationParameters,
    items=one_text_per_item,
    encode=_outputs,
)


def get_tag(name: str) -> tuple[str, str]:
    """The pipeline's `get_tag`: (B or I, tag); a label without a B-/I- prefix continues (I)."""
    if name.startswith("B-"):
        return "B", name[2:]
    if name.startswith("I-"):
        return "I", name[2:]
    return "I", name


def aggregate_overlapping_entities(entities: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One entity per overlap of the windows' entities: in start order, an entity that starts
    inside the one kept so far replaces it when it is longer, or as long and more confident
    (the pipeline's rule for `stride`)."""
    kept: list[dict[str, Any]] = []
    for entity in sorted(entities, key=lambda e: e["start"]):
        last = kept[-1] if kept else None
        if last is None or not last["start"] <= entity["start"] < last["end"]:
            kept.append(entity)
        elif (entity["end"] - entity["start"], entity["score"]) > (
            last["end"] - last["start"],
            last["score"],
        ):
            kept[-1] = entity
    return kept


@task(
    "token-classification",
    endpoint="ner",
    http=HTTP,
    tensors=TENSORS,
    export=ExportFacts("token-classification", parity="token-logits"),
)
@dataclass
class TokenClassifier(EncoderRuntime):
    encoder: EncoderModel
    labels: list[str]

    @classmethod
    def load(cls, model_dir: Path, threads: int | None = None) -> TokenClassifier:
        encoder = EncoderModel.load(model_dir, threads)
        logits = next((o for o in encoder.session.get_outputs() if o.name == "logits"), None)
        if logits is None:
            raise ModelLoadError(f"{model_dir}/model.onnx has no 'logits' output")
        return cls(encoder=encoder, labels=config_labels(encoder.config, logits.shape[-1]))

    def warmup(self) -> None:
        self.run([("A warm-up call in Berlin.", TokenClassificationParameters())])

    # --- the tokenizer's facts the pipeline reads ---------------------------------------------
    @property
    def word_aware(self) -> bool:
        """Whether the tokenizer marks word continuations (WordPiece's "##"): then a token is
        a subword when its text and the text it covers differ in length."""
        model = self.tokenizer.tokenizer.model
        return bool(getattr(model, "continuing_subword_prefix", None))

    def tokens_to_string(self, tokens: list[str]) -> str:
        """`PreTrainedTokenizerFast.convert_tokens_to_string`."""
        decoder = self.tokenizer.tokenizer.decoder
        return decoder.decode(tokens) if decoder is not None else " ".join(tokens)

    # --- running ----------------------------------------------------------------------------
    def prepare(self, item: TokenItem) -> Prepared[TokenItem, Encoding]:
        """The text's encoding, or its overlapping windows."""
        text, params = item
        return Prepared(item=item, rows=self._windows(text, params))

    def run_prepared(
        self, batch: Sequence[Prepared[TokenItem, Encoding]]
    ) -> list[list[dict[str, Any]]]:
        """The entities of each text, for independent requests batched together."""
        flat = [window for p in batch for window in p.rows]
        rows = iter(self.encoder.run(flat, ["logits"], per_token=True))
        results = []
        for p in batch:
            text, params = p.item
            logits = [next(rows)[0] for _ in p.rows]
            results.append(self._entities(text, p.rows, logits, params))
        return results

    def _windows(self, text: str, params: TokenClassificationParameters) -> list[Encoding]:
        """The pipeline's `preprocess`: the text's encoding, or its overlapping windows."""
        limit = self.max_input_tokens
        (encoding,) = self.tokenizer.encode_batch([text])
        if len(encoding) <= limit:
            return [encoding]
        if params.stride is None:
            raise InvalidInput(
                f"input is {len(encoding)} tokens long, more than this model's limit of "
                f"{limit} tokens; send parameters.stride to classify it in overlapping windows",
                field="inputs",
            )
        added = self.tokenizer.tokenizer.num_special_tokens_to_add(False)
        room = limit - added
        if params.stride >= room:
            raise InvalidInput(
                f"stride ({params.stride}) must be less than this model's window of {room} "
                f"tokens ({limit} less {added} special tokens)",
                field="parameters.stride",
            )
        content = len(encoding) - added
        count = 1 + -(-(content - room) // (room - params.stride))
        if count > MAX_WINDOWS:
            raise InvalidInput(
                f"input is {len(encoding)} tokens long: with stride {params.stride} that is "
                f"{count} windows of {limit} tokens, more than {MAX_WINDOWS}; send a shorter "
                "text or a smaller stride",
                field="inputs",
            )
        first = self.encoder.truncating_tokenizer(limit, params.stride).encode(text)
        return [first, *first.overflowing]

    def _entities(
        self,
        text: str,
        windows: list[Encoding],
        logits: list[np.ndarray],
        params: TokenClassificationParameters,
    ) -> list[dict[str, Any]]:
        """The pipeline's `postprocess` over every window of one text."""
        strategy = params.aggregation_strategy
        ignored = params.ignored()
        found: list[dict[str, Any]] = []
        for encoding, window_logits in zip(windows, logits, strict=True):
            scores = softmax(window_logits.astype(np.float32, copy=False))
            pre = self._pre_entities(text, encoding, scores)
            grouped = self._aggregate(pre, strategy)
            found.extend(
                e
                for e in grouped
                if e.get("entity") not in ignored and e.get("entity_group") not in ignored
            )
        if len(windows) > 1:
            found = aggregate_overlapping_entities(found)
        return [_plain(e) for e in found]

    def _pre_entities(
        self, text: str, encoding: Encoding, scores: np.ndarray
    ) -> list[dict[str, Any]]:
        """`gather_pre_entities`: one entry per non-special token."""
        unk_id = self.tokenizer.token_id("unk_token")
        word_aware = self.word_aware
        vocab = self.tokenizer.tokenizer
        pre = []
        for idx, (token_id, special, (start, end)) in enumerate(
            zip(encoding.ids, encoding.special_tokens_mask, encoding.offsets, strict=True)
        ):
            if special:
                continue
            word = vocab.id_to_token(token_id)
            covered = text[start:end]
            if word_aware:
                is_subword = len(word) != len(covered)
            else:
                is_subword = start > 0 and " " not in text[start - 1 : start + 1]
            if token_id == unk_id:
                word = covered
                is_subword = False
            pre.append(
                {
                    "word": word,
                    "scores": scores[idx],
                    "start": start,
                    "end": end,
                    "index": idx,
                    "is_subword": is_subword,
                }
            )
        return pre

    def _aggregate(self, pre: list[dict[str, Any]], strategy: str) -> list[dict[str, Any]]:
        if strategy in ("none", "simple"):
            entities = []
            for p in pre:
                best = int(p["scores"].argmax())
                entities.append(
                    {
                        "entity": self.labels[best],
                        "score": p["scores"][best],
                        "index": p["index"],
                        "word": p["word"],
                        "start": p["start"],
                        "end": p["end"],
                    }
                )
        else:
            entities = self._aggregate_words(pre, strategy)
        if strategy == "none":
            return entities
        return self._group_entities(entities)

    def _aggregate_words(self, pre: list[dict[str, Any]], strategy: str) -> list[dict[str, Any]]:
        """`aggregate_words`: the tokens of a word agree on one label."""
        words = []
        group: list[dict[str, Any]] | None = None
        for entity in pre:
            if group is None:
                group = [entity]
            elif entity["is_subword"]:
                group.append(entity)
            else:
                words.append(self._aggregate_word(group, strategy))
                group = [entity]
        if group is not None:
            words.append(self._aggregate_word(group, strategy))
        return words

    def _aggregate_word(self, tokens: list[dict[str, Any]], strategy: str) -> dict[str, Any]:
        word = self.tokens_to_string([t["word"] for t in tokens])
        if strategy == "first":
            scores = tokens[0]["scores"]
        elif strategy == "max":
            scores = max(tokens, key=lambda t: t["scores"].max())["scores"]
        else:  # average
            scores = np.nanmean(np.stack([t["scores"] for t in tokens]), axis=0)
        best = int(scores.argmax())
        return {
            "entity": self.labels[best],
            "score": scores[best],
            "word": word,
            "start": tokens[0]["start"],
            "end": tokens[-1]["end"],
        }

    def _group_entities(self, entities: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """`group_entities`: adjacent entities of one tag, a B- starting a new group."""
        groups: list[dict[str, Any]] = []
        pending: list[dict[str, Any]] = []
        for entity in entities:
            if not pending:
                pending.append(entity)
                continue
            bi, tag = get_tag(entity["entity"])
            _, last_tag = get_tag(pending[-1]["entity"])
            if tag == last_tag and bi != "B":
                pending.append(entity)
            else:
                groups.append(self._group_sub_entities(pending))
                pending = [entity]
        if pending:
            groups.append(self._group_sub_entities(pending))
        return groups

    def _group_sub_entities(self, entities: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "entity_group": entities[0]["entity"].split("-", 1)[-1],
            "score": np.mean(np.nanmean([e["score"] for e in entities])),
            "word": self.tokens_to_string([e["word"] for e in entities]),
            "start": entities[0]["start"],
            "end": entities[-1]["end"],
        }


def _plain(entity: dict[str, Any]) -> dict[str, Any]:
    """Python numbers (numpy float32 scores), keys in the pipeline's order."""
    out = dict(entity)
    out["score"] = float(out["score"])
    return out
