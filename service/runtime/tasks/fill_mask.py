"""Fill-mask: the `transformers` fill-mask pipeline's predictions, without torch.

The masked position's logits go through the pipeline's own steps: softmax over the vocabulary,
then (with `targets`) the probabilities of the target ids only, the `top_k` best, each
decoded as the token and as the whole sequence with the token in place. Targets resolve as the
pipeline resolves them: a vocabulary entry as is, anything else as the first token of its
tokenization (duplicates dropped).

One mask per input: the pipeline's several-mask output is experimental (each mask predicted
independently, the sequences then disagree), and the Inference API answers one list per input;
an input with no mask token or with several is refused, naming the field.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field
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

MAX_TARGETS = 1024


class FillMaskParameters(BaseModel):
    """The `parameters` of a fill-mask request (Hugging Face fill-mask payload)."""

    model_config = ConfigDict(extra="forbid")

    top_k: int = Field(default=5, ge=1, le=1000)
    # Candidate words scored at the mask instead of the whole vocabulary.
    targets: Text | list[Text] | None = Field(default=None, max_length=MAX_TARGETS)


FillMaskItem = tuple[str, FillMaskParameters]


@dataclass(kw_only=True)
class MaskedText(Prepared[FillMaskItem, Encoding]):
    """A text with one mask: where the mask is, and the ids scored there (None: all)."""

    position: int
    targets: np.ndarray | None


class FillMaskRequest(TaskRequest):
    inputs: Text | list[Text] = Field(..., examples=["Paris is the [MASK] of France."])
    parameters: FillMaskParameters = Field(default_factory=FillMaskParameters)


class Prediction(BaseModel):
    score: float
    token: int
    token_str: str
    sequence: str


def _outputs(results: list[list[dict[str, Any]]]) -> list[Tensor]:
    return ranked_tensors(
        results,
        [
            ("token_str", "BYTES", ""),
            ("score", "FP32", 0.0),
            ("token", "INT64", -1),
            ("sequence", "BYTES", ""),
        ],
    )


HTTP = HttpRoute(
    request=FillMaskRequest,
    response=list[Prediction] | list[list[Prediction]],
    items=lambda body: [(t, body.parameters) for t in as_list(body.inputs)],
    respond=like_inputs,
    summary="""Fill-mask (`fill-mask` pipeline payload): the `top_k` best tokens for the one mask
    token of each input, best first.""",
)

TENSORS = TaskTensors(
    inputs=(TEXT,),
    outputs=(
        TensorSpec("token_str", "BYTES", (-1, -1), "predicted tokens, best first (top_k per row)"),
        TensorSpec("score", "FP32", (-1, -1), "their probabilities"),
        TensorSpec("token", "INT64", (-1, -1), "their token ids"),
        TensorSpec("sequence", "BYTES", (-1, -1), "the input with the token in place"),
    ),
    parameters=FillMaskParameters,
    items=one_text_per_item,
    encode=_outputs,
)


@task(
    "fill-mask",
    endpoint="fill-mask",
    http=HTTP,
    tensors=TENSORS,
    export=ExportFacts("fill-mask", parity="masked-lm-logits"),
)
@dataclass
class MaskFiller(EncoderRuntime):
    encoder: EncoderModel
    mask_id: int
    mask_token: str

    @classmethod
    def load(cls, model_dir: Path, threads: int | None = None) -> MaskFiller:
        encoder = EncoderModel.load(model_dir, threads)
        if "logits" not in encoder.output_names:
            raise ModelLoadError(f"{model_dir}/model.onnx has no 'logits' output")
        mask_token = encoder.tokenizer.special_tokens.get("mask_token")
        mask_id = encoder.tokenizer.token_id("mask_token")
        if mask_token is None or mask_id is None:
            raise ModelLoadError(f"{model_dir}: the tokenizer has no mask token")
        return cls(encoder=encoder, mask_id=mask_id, mask_token=mask_token)

    def warmup(self) -> None:
        self.run([(f"A {self.mask_token} warm-up call.", FillMaskParameters())])

    def prepare(self, item: FillMaskItem) -> MaskedText:
        """The text's encoding, its one mask's position and the target ids, if any."""
        text, params = item
        targets = self.target_ids(params.targets)
        # As the pipeline, which refuses it too; the route has no `truncate` to offer.
        (encoding,) = self.encoder.encode([text], [False], refusal_hint="send a shorter text")
        masks = [i for i, token in enumerate(encoding.ids) if token == self.mask_id]
        if len(masks) != 1:
            found = "no" if not masks else str(len(masks))
            raise InvalidInput(
                f"inputs must hold exactly one mask token {self.mask_token!r}; it has {found}",
                field="inputs",
            )
        return MaskedText(item=item, rows=[encoding], position=masks[0], targets=targets)

    def run_prepared(self, batch: Sequence[MaskedText]) -> list[list[dict[str, Any]]]:
        """Predictions, best first, for independent requests batched together."""
        if not batch:
            return []
        rows = self.encoder.run([p.rows[0] for p in batch], ["logits"], per_token=True)
        return [
            self._predictions(list(p.rows[0].ids), logits[p.position], p.targets, p.item[1].top_k)
            for (logits,), p in zip(rows, batch, strict=True)
        ]

    def target_ids(self, targets: str | list[str] | None) -> np.ndarray | None:
        """The pipeline's `get_target_ids`: vocabulary entries as they are, other words by the
        first token of their tokenization; words with no token are dropped."""
        if targets is None:
            return None
        words = [targets] if isinstance(targets, str) else targets
        ids: set[int] = set()
        for word in words:
            token_id = self.tokenizer.tokenizer.token_to_id(word)
            if token_id is None:
                pieces = self.tokenizer.encode(word, add_special_tokens=False).ids
                if not pieces:
                    continue
                token_id = pieces[0]
            ids.add(token_id)
        if not ids:
            raise InvalidInput(
                "parameters.targets: no target maps to a token of this model",
                field="parameters.targets",
            )
        return np.array(sorted(ids))

    def _predictions(
        self, ids: list[int], logits: np.ndarray, target_ids: np.ndarray | None, top_k: int
    ) -> list[dict[str, Any]]:
        probs = softmax(logits.astype(np.float32, copy=False))
        if target_ids is not None:
            probs = probs[target_ids]
            top_k = min(top_k, len(target_ids))
        # Best first; equal probabilities keep index order, as torch.topk does on CPU.
        best = np.argsort(-probs, kind="stable")[:top_k]
        mask_at = ids.index(self.mask_id)
        pad_id = self.tokenizer.pad_id
        predictions = []
        for index in best:
            token = int(target_ids[index]) if target_ids is not None else int(index)
            filled = [*ids[:mask_at], token, *ids[mask_at + 1 :]]
            filled = [t for t in filled if t != pad_id]
            predictions.append(
                {
                    "score": float(probs[index]),
                    "token": token,
                    "token_str": self.tokenizer.decode([token], skip_special_tokens=False),
                    "sequence": self.tokenizer.decode(filled, skip_special_tokens=True),
                }
            )
        return predictions
