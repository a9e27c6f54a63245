"""Text classification: the `transformers` text-classification pipeline's results, without torch.

Scores are computed exactly as the pipeline's post-processing does (same default function, same
float32 numpy arithmetic, same stable sort), so labels match and scores agree to float rounding.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import AliasChoices, BaseModel, ConfigDict, Field, field_validator
from tokenizers import Encoding

from service.http.fields import TaskRequest, Text, as_list
from service.kserve.tensors import (
    TEXT,
    TaskTensors,
    Tensor,
    TensorSpec,
    one_text_per_item,
    ranked_tensors,
)
from service.runtime.encoder_batches import EncoderModel
from service.runtime.errors import ModelLoadError
from service.runtime.prepared import Prepared
from service.runtime.sampling import softmax
from service.runtime.task import EncoderRuntime, ExportFacts, HttpRoute, task

ScoreFunction = Literal["softmax", "sigmoid", "none"]


class ClassificationParameters(BaseModel):
    """The `parameters` of a classify request (Hugging Face text-classification payload)."""

    model_config = ConfigDict(extra="forbid")

    # None returns the best label only, like the pipeline called without `top_k`.
    top_k: int | None = Field(default=None, ge=1)
    # None lets the model's config decide, as the pipeline does.
    function_to_apply: ScoreFunction | None = None
    truncate: bool = Field(default=False, validation_alias=AliasChoices("truncate", "truncation"))
    # Which end a truncated input loses (TEI's `/predict` writes `Left`/`Right`); None: the
    # tokenizer's side.
    truncation_direction: Literal["left", "right"] | None = None

    @field_validator("truncation_direction", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value


# A text, or a (text, text_pair) pair, and its request's parameters.
ClassificationItem = tuple[str | tuple[str, str], ClassificationParameters]


class ClassifyRequest(TaskRequest):
    inputs: Text | list[Text] = Field(..., examples=["I loved this film."])
    parameters: ClassificationParameters = Field(default_factory=ClassificationParameters)


class Label(BaseModel):
    label: str
    score: float


def _outputs(results: list[list[dict[str, Any]]]) -> list[Tensor]:
    return ranked_tensors(results, [("label", "BYTES", ""), ("score", "FP32", 0.0)])


HTTP = HttpRoute(
    request=ClassifyRequest,
    response=list[list[Label]],
    items=lambda body: [(t, body.parameters) for t in as_list(body.inputs)],
    respond=lambda results, body: results,
    summary="""Text classification (`text-classification` pipeline payload).

    One list of labels per input, a single string included (`[[...]]`), as the Hugging Face
    Inference API answers: `InferenceClient.text_classification` takes the first list.""",
)

TENSORS = TaskTensors(
    inputs=(TEXT,),
    outputs=(
        TensorSpec("label", "BYTES", (-1, -1), "labels, best first (top_k per row)"),
        TensorSpec("score", "FP32", (-1, -1), "their scores"),
    ),
    parameters=ClassificationParameters,
    items=one_text_per_item,
    encode=_outputs,
)


def _sigmoid(logits: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-logits))


_SCORE_FUNCTIONS = {"softmax": softmax, "sigmoid": _sigmoid, "none": lambda logits: logits}


def default_function(config: dict[str, Any], num_labels: int) -> ScoreFunction:
    """The function the pipeline applies when the caller names none."""
    problem_type = config.get("problem_type")
    if problem_type == "regression":
        return "none"
    if problem_type == "multi_label_classification" or num_labels == 1:
        return "sigmoid"
    if problem_type == "single_label_classification" or num_labels > 1:
        return "softmax"
    configured = str(config.get("function_to_apply", "none")).lower()
    return configured if configured in _SCORE_FUNCTIONS else "none"


def config_labels(config: dict[str, Any], width: Any) -> list[str]:
    """A classifier head's labels in output order (`id2label`, else LABEL_i for its width)."""
    id2label = {int(k): v for k, v in (config.get("id2label") or {}).items()}
    if not id2label and isinstance(width, int):
        id2label = {i: f"LABEL_{i}" for i in range(width)}
    if sorted(id2label) != list(range(len(id2label))) or not id2label:
        raise ModelLoadError("config.json needs id2label with ids 0..n-1 for a classifier")
    return [id2label[i] for i in range(len(id2label))]


@task(
    "text-classification",
    endpoint="classify",
    http=HTTP,
    tensors=TENSORS,
    export=ExportFacts("text-classification", parity="sequence-logits"),
)
@dataclass
class TextClassifier(EncoderRuntime):
    encoder: EncoderModel
    labels: list[str]
    default_function: ScoreFunction

    @classmethod
    def load(cls, model_dir: Path, threads: int | None = None) -> TextClassifier:
        encoder = EncoderModel.load(model_dir, threads)
        logits = next((o for o in encoder.session.get_outputs() if o.name == "logits"), None)
        if logits is None:
            raise ModelLoadError(f"{model_dir}/model.onnx has no 'logits' output")
        labels = config_labels(encoder.config, logits.shape[-1])
        return cls(
            encoder=encoder,
            labels=labels,
            default_function=default_function(encoder.config, len(labels)),
        )

    def warmup(self) -> None:
        self.classify([("warm up", ClassificationParameters())])

    def prepare(self, item: ClassificationItem) -> Prepared[ClassificationItem, Encoding]:
        """The item's encoding; a text may be a (text, text_pair) pair, as the pipeline's
        `{"text", "text_pair"}` input."""
        text, params = item
        encodings = self.encoder.encode(
            [text], [params.truncate], directions=[params.truncation_direction]
        )
        return Prepared(item=item, rows=encodings)

    def run_prepared(
        self, batch: Sequence[Prepared[ClassificationItem, Encoding]]
    ) -> list[list[dict[str, Any]]]:
        """Labels with scores, best first, for independent requests batched together."""
        if not batch:
            return []
        rows = self.encoder.run([p.rows[0] for p in batch], ["logits"])
        return [self._ranked(logits, p.item[1]) for (logits,), p in zip(rows, batch, strict=True)]

    def classify(self, items: Sequence[ClassificationItem]) -> list[list[dict[str, Any]]]:
        """Prepare and run in one call, a refused item reported as `inputs` (not `inputs[i]`)."""
        return self.run_prepared([self.prepare(item) for item in items])

    def _ranked(self, logits: np.ndarray, params: ClassificationParameters) -> list[dict[str, Any]]:
        function = params.function_to_apply or self.default_function
        scores = _SCORE_FUNCTIONS[function](logits.astype(np.float32, copy=False))
        ranked = [
            {"label": label, "score": score.item()}
            for label, score in zip(self.labels, scores, strict=True)
        ]
        # Stable sort, as the pipeline's: equal scores keep label order.
        ranked.sort(key=lambda x: x["score"], reverse=True)
        return ranked[: params.top_k or 1]
