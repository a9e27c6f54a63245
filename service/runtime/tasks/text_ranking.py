"""Text-pair scoring and rerank: what `sentence_transformers.CrossEncoder.predict` returns,
without torch, on TEI's `/rerank` and the Cohere/Jina `/v1/rerank` payloads.

A cross-encoder is a sequence classifier with one output read over a (query, text) pair; its
score is that logit through the model's activation: the `sentence_transformers.activation_fn`
its config names, else a sigmoid (CrossEncoder's default for one label). One request of N
texts is N independent pairs: they go through the model's batcher with every other caller's
work, under the same per-request input limit (`limits.max_inputs`, refused with a 4xx naming
`texts` or `documents`) and the same admission control.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import AliasChoices, BaseModel, ConfigDict, Field, field_validator
from tokenizers import Encoding

from service.http.fields import TaskRequest, Text
from service.kserve.tensors import TaskTensors, Tensor, TensorSpec, fp32_tensor
from service.runtime.encoder_batches import EncoderModel
from service.runtime.errors import ModelLoadError
from service.runtime.prepared import Prepared
from service.runtime.task import EncoderRuntime, ExportFacts, HttpRoute, task
from service.runtime.tasks.classification import TextClassifier

# CrossEncoder's activation names in a config's `sentence_transformers.activation_fn`.
ACTIVATIONS = {
    "torch.nn.modules.activation.Sigmoid": "sigmoid",
    "torch.nn.modules.linear.Identity": "none",
}


class RankingParameters(BaseModel):
    """How a pair is scored: the activation (or the raw logit) and truncation."""

    model_config = ConfigDict(extra="forbid")

    raw_scores: bool = False
    truncate: bool = Field(default=False, validation_alias=AliasChoices("truncate", "truncation"))
    truncation_direction: Literal["left", "right"] | None = None

    @field_validator("truncation_direction", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value


RankingItem = tuple[tuple[str, str], RankingParameters]


class RerankRequest(TaskRequest):
    """TEI's `/rerank`: the texts ranked by relevance to the query."""

    query: Text = Field(..., examples=["What is the capital of France?"])
    texts: list[Text] = Field(
        ..., min_length=1, examples=[["Paris is the capital of France.", "Berlin is in Germany."]]
    )
    raw_scores: bool = False
    return_text: bool = False
    truncate: bool | None = None
    truncation_direction: Literal["left", "right", "Left", "Right"] | None = None

    def parameters(self) -> RankingParameters:
        return RankingParameters(
            raw_scores=self.raw_scores,
            truncate=bool(self.truncate),
            truncation_direction=self.truncation_direction,
        )


class Rank(BaseModel):
    index: int
    score: float
    text: str | None = None


def _ranked(scores: list[float]) -> list[int]:
    """Indices by score, best first; equal scores keep input order."""
    return sorted(range(len(scores)), key=lambda i: -scores[i])


def _rerank_answer(scores: list[float], body: RerankRequest) -> list[dict[str, Any]]:
    return [
        {"index": i, "score": scores[i], **({"text": body.texts[i]} if body.return_text else {})}
        for i in _ranked(scores)
    ]


class Document(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: Text


class CohereRerankRequest(TaskRequest):
    """The `/v1/rerank` payload Cohere's and Jina's clients send (documents as strings or
    `{"text": ...}` objects)."""

    query: Text
    documents: list[Text | Document] = Field(..., min_length=1)
    top_n: int | None = Field(None, ge=1)
    return_documents: bool = False

    def texts(self) -> list[str]:
        return [d if isinstance(d, str) else d.text for d in self.documents]


class CohereResult(BaseModel):
    index: int
    relevance_score: float
    document: Document | None = None


class CohereRerankResponse(BaseModel):
    id: str
    model: str | None = None
    results: list[CohereResult]


def _cohere_answer(scores: list[float], body: CohereRerankRequest) -> dict[str, Any]:
    texts = body.texts()
    order = _ranked(scores)[: body.top_n or len(scores)]
    return {
        "id": str(uuid.uuid4()),
        "model": body.model,
        "results": [
            {
                "index": i,
                "relevance_score": scores[i],
                **({"document": {"text": texts[i]}} if body.return_documents else {}),
            }
            for i in order
        ],
    }


RERANK = HttpRoute(
    request=RerankRequest,
    response=list[Rank],
    items=lambda body: [((body.query, text), body.parameters()) for text in body.texts],
    respond=_rerank_answer,
    summary="""Rerank (TEI's `/rerank`): each text scored against the query by a cross-encoder,
    best first, as `CrossEncoder.predict` scores the pairs.""",
    inputs_field="texts",
    exclude_none=True,
)

COHERE_RERANK = HttpRoute(
    request=CohereRerankRequest,
    response=CohereRerankResponse,
    items=lambda body: [((body.query, text), RankingParameters()) for text in body.texts()],
    respond=_cohere_answer,
    summary="""Rerank in the Cohere/Jina shape (`/v1/rerank`): `results[].relevance_score`,
    best first, the `top_n` best.""",
    path="v1/rerank",
    inputs_field="documents",
    exclude_none=True,
)


def _outputs(results: list[float]) -> list[Tensor]:
    return [fp32_tensor("score", results)]


TENSORS = TaskTensors(
    inputs=(
        TensorSpec("query", "BYTES", (-1,), "the query of each pair"),
        TensorSpec("text", "BYTES", (-1,), "the text scored against it, same N as query"),
    ),
    outputs=(TensorSpec("score", "FP32", (-1,), "one relevance score per pair"),),
    parameters=RankingParameters,
    items=lambda texts, params: [
        ((q, t), params) for q, t in zip(texts["query"], texts["text"], strict=True)
    ],
    encode=_outputs,
)


def activation(config: dict[str, Any]) -> str:
    """The activation CrossEncoder applies for this config (one label: sigmoid by default)."""
    named = (config.get("sentence_transformers") or {}).get("activation_fn")
    return ACTIVATIONS.get(named, "sigmoid") if named else "sigmoid"


@task(
    "text-ranking",
    endpoint="rerank",
    http=(RERANK, COHERE_RERANK),
    tensors=TENSORS,
    # A cross-encoder is a sequence classifier with one logit.
    export=ExportFacts("text-classification", parity="sequence-logits"),
)
@dataclass
class CrossEncoderRanker(EncoderRuntime):
    classifier: TextClassifier
    activation: str

    @classmethod
    def load(cls, model_dir: Path, threads: int | None = None) -> CrossEncoderRanker:
        classifier = TextClassifier.load(model_dir, threads)
        if len(classifier.labels) != 1:
            raise ModelLoadError(
                f"{model_dir}: a cross-encoder has one output (a relevance logit); this model "
                f"has {len(classifier.labels)} labels"
            )
        return cls(classifier=classifier, activation=activation(classifier.encoder.config))

    @property
    def encoder(self) -> EncoderModel:
        """The classifier's encoder (the encoder loader gives it the batch limits)."""
        return self.classifier.encoder

    def warmup(self) -> None:
        self.run([(("a query", "a text"), RankingParameters())])

    def prepare(self, item: RankingItem) -> Prepared[RankingItem, Encoding]:
        """The (query, text) pair's encoding."""
        pair, params = item
        encodings = self.encoder.encode(
            [pair],
            [params.truncate],
            field_name="texts",
            directions=[params.truncation_direction],
        )
        return Prepared(item=item, rows=encodings)

    def run_prepared(self, batch: Sequence[Prepared[RankingItem, Encoding]]) -> list[float]:
        """One score per (query, text) pair, for independent requests batched together."""
        if not batch:
            return []
        rows = self.encoder.run([p.rows[0] for p in batch], ["logits"])
        scores = []
        for (logits,), p in zip(rows, batch, strict=True):
            logit = np.float32(logits.reshape(-1)[0])
            if p.item[1].raw_scores or self.activation == "none":
                scores.append(float(logit))
            else:
                scores.append(float(np.float32(1.0) / (np.float32(1.0) + np.exp(-logit))))
        return scores
