"""Zero-shot classification: the `transformers` zero-shot-classification pipeline, without torch.

An NLI model reads each (sequence, hypothesis) pair, the hypothesis being the template filled
with one candidate label ("This example is {}."). As in the pipeline: with one label, or with
`multi_label`, each label's score is softmax(contradiction, entailment)'s entailment part; else
the labels' entailment logits go through one softmax across labels. Labels come back best first.

One sequence is one item of the batcher, its pairs (one per label) run together in the
encoder's length-sorted groups; a sequence may have at most 64 labels and a request at most 256
pairs (sequences × labels), refused beyond with a 4xx naming `parameters.candidate_labels`, so a
request of many labels cannot hold the model for long.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator
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
from service.runtime.task import EncoderRuntime, ExportFacts, HttpRoute, task
from service.runtime.tasks.classification import TextClassifier

DEFAULT_TEMPLATE = "This example is {}."
# Candidate labels of one sequence, and (sequence, label) pairs of one HTTP request.
MAX_LABELS = 64
MAX_PAIRS = 256


class ZeroShotParameters(BaseModel):
    """The `parameters` of a zero-shot request (Hugging Face zero-shot-classification payload)."""

    model_config = ConfigDict(extra="forbid")

    # A list, or one string of comma-separated labels, as the pipeline takes them.
    candidate_labels: list[Text] | Text
    multi_label: bool = False
    hypothesis_template: str = DEFAULT_TEMPLATE

    @field_validator("candidate_labels")
    @classmethod
    def _labels(cls, value: list[str] | str) -> list[str]:
        labels = (
            [x.strip() for x in value.split(",") if x.strip()] if isinstance(value, str) else value
        )
        if not labels:
            raise ValueError("at least one candidate label is required")
        if len(labels) > MAX_LABELS:
            raise ValueError(f"{len(labels)} candidate labels; at most {MAX_LABELS}")
        return labels

    @field_validator("hypothesis_template")
    @classmethod
    def _template(cls, value: str) -> str:
        # The pipeline's own check: the template must place the label somewhere.
        try:
            filled = value.format("label")
        except (IndexError, KeyError, ValueError):
            filled = value
        if filled == value:
            raise ValueError("the template must contain one {} where the label goes")
        return value

    def hypotheses(self) -> list[str]:
        return [self.hypothesis_template.format(label) for label in self.candidate_labels]


ZeroShotItem = tuple[str, ZeroShotParameters]


class ZeroShotRequest(TaskRequest):
    inputs: Text | list[Text] = Field(..., examples=["The new phone's battery lasts two days."])
    parameters: ZeroShotParameters = Field(
        ..., examples=[{"candidate_labels": ["technology", "sports", "politics"]}]
    )


class ZeroShotResult(BaseModel):
    sequence: str
    labels: list[str]
    scores: list[float]


def _items(body: ZeroShotRequest) -> list[tuple[str, ZeroShotParameters]]:
    texts = as_list(body.inputs)
    pairs = len(texts) * len(body.parameters.candidate_labels)
    if pairs > MAX_PAIRS:
        raise InvalidInput(
            f"{len(texts)} inputs x {len(body.parameters.candidate_labels)} candidate labels = "
            f"{pairs} pairs; at most {MAX_PAIRS} per request",
            field="parameters.candidate_labels",
        )
    return [(text, body.parameters) for text in texts]


def _outputs(results: list[dict[str, Any]]) -> list[Tensor]:
    rows = [
        [
            {"label": label, "score": score}
            for label, score in zip(r["labels"], r["scores"], strict=True)
        ]
        for r in results
    ]
    return ranked_tensors(rows, [("label", "BYTES", ""), ("score", "FP32", 0.0)])


HTTP = HttpRoute(
    request=ZeroShotRequest,
    response=ZeroShotResult | list[ZeroShotResult],
    items=_items,
    respond=like_inputs,
    summary="""Zero-shot classification (`zero-shot-classification` pipeline payload): the
    candidate labels ranked by an NLI model's entailment of the filled hypothesis template.""",
)

TENSORS = TaskTensors(
    inputs=(TEXT,),
    outputs=(
        TensorSpec("label", "BYTES", (-1, -1), "candidate labels, best first"),
        TensorSpec("score", "FP32", (-1, -1), "their scores"),
    ),
    parameters=ZeroShotParameters,
    items=one_text_per_item,
    encode=_outputs,
)


def entailment_id(config: dict[str, Any]) -> int:
    """The pipeline's rule: the first label whose name starts with "entail", else the last."""
    for label, index in (config.get("label2id") or {}).items():
        if str(label).lower().startswith("entail"):
            return int(index)
    return -1


@task(
    "zero-shot-classification",
    endpoint="zero-shot",
    http=HTTP,
    tensors=TENSORS,
    # Zero-shot runs an NLI sequence classifier.
    export=ExportFacts("text-classification", parity="sequence-logits"),
)
@dataclass
class ZeroShotClassifier(EncoderRuntime):
    classifier: TextClassifier
    entailment: int

    @classmethod
    def load(cls, model_dir: Path, threads: int | None = None) -> ZeroShotClassifier:
        classifier = TextClassifier.load(model_dir, threads)
        if len(classifier.labels) < 2:
            raise ModelLoadError(
                f"{model_dir}: an NLI model has entailment and contradiction labels"
            )
        return cls(classifier=classifier, entailment=entailment_id(classifier.encoder.config))

    @property
    def encoder(self) -> EncoderModel:
        """The classifier's encoder (the encoder loader gives it the batch limits)."""
        return self.classifier.encoder

    def warmup(self) -> None:
        self.run([("A warm-up call.", ZeroShotParameters(candidate_labels=["a", "b"]))])

    def prepare(self, item: ZeroShotItem) -> Prepared[ZeroShotItem, Encoding]:
        """The encodings of the sequence paired with each hypothesis."""
        text, params = item
        # As the pipeline does, a pair over the model's limit loses tokens from the sequence
        # only (`only_first`); one whose hypothesis alone is too long is refused.
        pairs = [(text, hypothesis) for hypothesis in params.hypotheses()]
        rows = self.encoder.encode(pairs, [True] * len(pairs), strategy="only_first")
        return Prepared(item=item, rows=rows)

    def run_prepared(
        self, batch: Sequence[Prepared[ZeroShotItem, Encoding]]
    ) -> list[dict[str, Any]]:
        """The ranked labels of each sequence, for independent requests batched together."""
        if not batch:
            return []
        rows = iter(self.encoder.run([pair for p in batch for pair in p.rows], ["logits"]))
        return [self._ranked(*p.item, [next(rows)[0] for _ in p.rows]) for p in batch]

    def _ranked(
        self, text: str, params: ZeroShotParameters, logits: list[np.ndarray]
    ) -> dict[str, Any]:
        labels = params.candidate_labels
        stacked = np.stack([row.astype(np.float32, copy=False) for row in logits])
        entail = self.entailment if self.entailment >= 0 else stacked.shape[-1] - 1
        if params.multi_label or len(labels) == 1:
            contradiction = -1 if entail == 0 else 0
            pair = stacked[:, [contradiction, entail]]
            exp = np.exp(pair)
            scores = (exp / exp.sum(-1, keepdims=True))[:, 1]
        else:
            exp = np.exp(stacked[:, entail])
            scores = exp / exp.sum(-1, keepdims=True)
        order = list(reversed(scores.argsort()))
        return {
            "sequence": text,
            "labels": [labels[i] for i in order],
            "scores": scores[order].tolist(),
        }
