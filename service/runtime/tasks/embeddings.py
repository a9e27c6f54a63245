"""Sentence embeddings: what `SentenceTransformer.encode` returns, without torch.

Pooling is computed here from the graph's per-token output rather than taken from a pooled graph
output, so a plain `BertModel` export serves as well as a sentence-transformers one. The pooling
modes and the normalisation step come from the model's sentence-transformers files, like
text-embeddings-inference's `/embed`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
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
    fp32_tensor,
    one_text_per_item,
)
from service.runtime.encoder_batches import EncoderModel
from service.runtime.errors import InvalidInput, ModelLoadError
from service.runtime.prepared import Prepared
from service.runtime.task import EncoderRuntime, ExportFacts, HttpRoute, task

TOKEN_OUTPUTS = ("token_embeddings", "last_hidden_state")
# Legacy `pooling_mode_*` flags, in the order sentence-transformers concatenates them.
_LEGACY_MODES = {
    "pooling_mode_cls_token": "cls",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
    "pooling_mode_weightedmean_tokens": "weightedmean",
    "pooling_mode_lasttoken": "lasttoken",
}


class EmbeddingParameters(BaseModel):
    """The `parameters` of an embed request (text-embeddings-inference `/embed`)."""

    model_config = ConfigDict(extra="forbid")

    # None follows the model: normalised when its modules.json has a Normalize step.
    normalize: bool | None = None
    truncate: bool = Field(default=False, validation_alias=AliasChoices("truncate", "truncation"))
    # Which end a truncated input loses (TEI writes `Left`/`Right`); None: the tokenizer's side.
    truncation_direction: Literal["left", "right"] | None = None
    # A prompt of the model's sentence-transformers config (`prompts`), put before each text;
    # None: the config's `default_prompt_name`, if any.
    prompt_name: str | None = None

    @field_validator("truncation_direction", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value


EmbeddingItem = tuple[str, EmbeddingParameters]


class EmbedRequest(TaskRequest):
    """TEI's `/embed` and the HF feature-extraction spec put the options at the top level
    (`InferenceClient.feature_extraction` sends them there); the older `parameters` object keeps
    working, and a top-level value wins over it."""

    inputs: Text | list[Text] = Field(..., examples=["A sentence to embed."])
    normalize: bool | None = None
    truncate: bool | None = None
    truncation_direction: Literal["left", "right", "Left", "Right"] | None = None
    prompt_name: str | None = None
    parameters: EmbeddingParameters = Field(default_factory=EmbeddingParameters)

    def options(self) -> EmbeddingParameters:
        top = {
            k: v
            for k in ("normalize", "truncate", "truncation_direction", "prompt_name")
            if (v := getattr(self, k)) is not None
        }
        if not top:
            return self.parameters
        return EmbeddingParameters.model_validate({**self.parameters.model_dump(), **top})


def _embed_items(body: EmbedRequest) -> list[tuple[str, EmbeddingParameters]]:
    options = body.options()
    return [(t, options) for t in as_list(body.inputs)]


def _outputs(results: list[list[float]]) -> list[Tensor]:
    return [fp32_tensor("embedding", results)]


HTTP = HttpRoute(
    request=EmbedRequest,
    response=list[list[float]],
    items=_embed_items,
    respond=lambda results, body: results,
    summary="Sentence embeddings (`feature-extraction` payload, TEI `/embed` semantics).",
)


class SimilarityInputs(BaseModel):
    model_config = ConfigDict(extra="forbid")
    source_sentence: Text
    sentences: list[Text] = Field(..., min_length=1)


class SimilarityParameters(BaseModel):
    """TEI's `/similarity` parameters (the HF sentence-similarity spec has none of its own)."""

    model_config = ConfigDict(extra="forbid")
    truncate: bool = Field(default=False, validation_alias=AliasChoices("truncate", "truncation"))
    truncation_direction: Literal["left", "right", "Left", "Right"] | None = None
    prompt_name: str | None = None


class SimilarityRequest(TaskRequest):
    """The sentence-similarity payload: `{"source_sentence", "sentences"}`."""

    inputs: SimilarityInputs = Field(
        ...,
        examples=[{"source_sentence": "A cat sleeps.", "sentences": ["A cat naps.", "It rains."]}],
    )
    parameters: SimilarityParameters = Field(default_factory=SimilarityParameters)


def _similarity_items(body: SimilarityRequest) -> list[tuple[str, EmbeddingParameters]]:
    """The source and every sentence, embedded as independent items of the batcher."""
    options = EmbeddingParameters.model_validate(body.parameters.model_dump())
    return [(t, options) for t in [body.inputs.source_sentence, *body.inputs.sentences]]


def _cosines(results: list[list[float]], body: SimilarityRequest) -> list[float]:
    """Cosine of each sentence with the source, as `sentence_transformers.util.cos_sim`
    (vectors normalised with torch's epsilon, then dotted)."""
    vectors = np.asarray(results, dtype=np.float32)
    norms = np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    unit = vectors / norms
    return (unit[1:] @ unit[0]).tolist()


SIMILARITY = HttpRoute(
    request=SimilarityRequest,
    response=list[float],
    items=_similarity_items,
    respond=_cosines,
    summary="""Sentence similarity (`sentence-similarity` payload, TEI's `/similarity`): the
    cosine of each sentence's embedding with the source sentence's, in the sentences' order.""",
    path="similarity",
    inputs_field="inputs.sentences",
)

TENSORS = TaskTensors(
    inputs=(TEXT,),
    outputs=(TensorSpec("embedding", "FP32", (-1, -1), "one vector per text"),),
    parameters=EmbeddingParameters,
    items=one_text_per_item,
    encode=_outputs,
)


def _weighted_mean(tokens: np.ndarray) -> np.ndarray:
    weights = np.arange(1, len(tokens) + 1, dtype=tokens.dtype)[:, None]
    return (tokens * weights).sum(axis=0) / max(weights.sum(), 1e-9)


# Each maps one input's (tokens, hidden) array, padding already removed, to a vector.
POOLING: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "cls": lambda tokens: tokens[0],
    "max": lambda tokens: tokens.max(axis=0),
    "mean": lambda tokens: tokens.sum(axis=0) / max(len(tokens), 1e-9),
    "mean_sqrt_len_tokens": lambda tokens: tokens.sum(axis=0) / np.sqrt(max(len(tokens), 1e-9)),
    "weightedmean": _weighted_mean,
    "lasttoken": lambda tokens: tokens[-1],
}


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None


def pooling_modes(model_dir: Path) -> list[str]:
    """Pooling modes from the Pooling module's config; mean when the folder has none."""
    modules = _read_json(model_dir / "modules.json") or []
    folder = next(
        (m.get("path", "") for m in modules if str(m.get("type", "")).endswith("Pooling")),
        "1_Pooling",
    )
    config = _read_json(model_dir / folder / "config.json") or {}
    mode = config.get("pooling_mode")
    if mode is None:
        modes = [name for key, name in _LEGACY_MODES.items() if config.get(key)] or ["mean"]
    else:
        modes = [mode] if isinstance(mode, str) else list(mode)
    unknown = [m for m in modes if m not in POOLING]
    if unknown:
        raise ModelLoadError(f"unsupported pooling mode(s) {unknown} in {model_dir / folder}")
    return modes


def normalizes_by_default(model_dir: Path) -> bool:
    modules = _read_json(model_dir / "modules.json") or []
    return any(str(m.get("type", "")).endswith("Normalize") for m in modules)


def prompts(model_dir: Path) -> tuple[dict[str, str], str | None]:
    """The named prompts of the model's sentence-transformers config and the default's name."""
    config = _read_json(model_dir / "config_sentence_transformers.json") or {}
    named = {str(k): str(v) for k, v in (config.get("prompts") or {}).items()}
    default = config.get("default_prompt_name")
    return named, (default if default in named else None)


@task(
    "feature-extraction",
    endpoint="embed",
    http=(HTTP, SIMILARITY),
    tensors=TENSORS,
    export=ExportFacts("feature-extraction", parity="embeddings"),
)
@dataclass
class Embedder(EncoderRuntime):
    encoder: EncoderModel
    token_output: str
    modes: list[str]
    normalize_default: bool
    dimension: int
    prompts: dict[str, str] = field(default_factory=dict)
    default_prompt: str | None = None

    @classmethod
    def load(cls, model_dir: Path, threads: int | None = None) -> Embedder:
        model_dir = Path(model_dir)
        st_config = _read_json(model_dir / "sentence_bert_config.json") or {}
        encoder = EncoderModel.load(model_dir, threads, st_config.get("max_seq_length"))
        outputs = {o.name: o for o in encoder.session.get_outputs()}
        token_output = next((name for name in TOKEN_OUTPUTS if name in outputs), None)
        if token_output is None:
            raise ModelLoadError(f"{model_dir}/model.onnx has none of the outputs {TOKEN_OUTPUTS}")
        hidden = outputs[token_output].shape[-1]
        if not isinstance(hidden, int):
            hidden = encoder.config.get("hidden_size") or encoder.config.get("dim")
        modes = pooling_modes(model_dir)
        named, default = prompts(model_dir)
        return cls(
            encoder=encoder,
            token_output=token_output,
            modes=modes,
            normalize_default=normalizes_by_default(model_dir),
            dimension=int(hidden) * len(modes),
            prompts=named,
            default_prompt=default,
        )

    def warmup(self) -> None:
        self.embed([("warm up", EmbeddingParameters())])

    def prepare(self, item: EmbeddingItem) -> Prepared[EmbeddingItem, Encoding]:
        """The encoding of the text with its prompt in front."""
        text, params = item
        encodings = self.encoder.encode(
            [self.prompted(text, params)],
            [params.truncate],
            directions=[params.truncation_direction],
        )
        return Prepared(item=item, rows=encodings)

    def run_prepared(self, batch: Sequence[Prepared[EmbeddingItem, Encoding]]) -> list[list[float]]:
        """One vector per input, for independent requests batched together."""
        if not batch:
            return []
        rows = self.encoder.run([p.rows[0] for p in batch], [self.token_output], per_token=True)
        return [
            self._vector(tokens, p.item[1]).tolist()
            for (tokens,), p in zip(rows, batch, strict=True)
        ]

    def embed(self, items: Sequence[EmbeddingItem]) -> list[list[float]]:
        """Prepare and run in one call, a refused item reported as `inputs` (not `inputs[i]`)."""
        return self.run_prepared([self.prepare(item) for item in items])

    def prompted(self, text: str, params: EmbeddingParameters) -> str:
        """The text with its prompt in front, as sentence-transformers' `encode(prompt_name=)`."""
        name = params.prompt_name or self.default_prompt
        if name is None:
            return text
        if name not in self.prompts:
            known = ", ".join(sorted(self.prompts)) or "none"
            raise InvalidInput(
                f"prompt_name {name!r} is not one of this model's prompts ({known})",
                field="prompt_name",
            )
        return self.prompts[name] + text

    def count_tokens(self, texts: Sequence[str], params: EmbeddingParameters) -> list[int]:
        """Tokens each input is embedded from (special tokens and prompt included, capped at
        the model's limit as truncation leaves them): OpenAI's `usage`."""
        limit = self.encoder.max_input_tokens
        encodings = self.encoder.tokenizer.encode_batch([self.prompted(t, params) for t in texts])
        return [min(len(e), limit) for e in encodings]

    def _vector(self, tokens: np.ndarray, params: EmbeddingParameters) -> np.ndarray:
        tokens = tokens.astype(np.float32, copy=False)
        vector = np.concatenate([POOLING[mode](tokens) for mode in self.modes])
        normalize = self.normalize_default if params.normalize is None else params.normalize
        if normalize:
            # torch.nn.functional.normalize's epsilon, as sentence-transformers' Normalize uses.
            vector = vector / max(float(np.linalg.norm(vector)), 1e-12)
        return vector
