"""Extractive question answering: the `transformers` question-answering pipeline, without torch.

The pipeline's algorithm is reproduced step by step: the question/context pair is cut into
overlapping windows by the fast tokenizer (`only_second` truncation with a stride), every window
is scored, spans are chosen per window by `select_starts_ends`/`decode_spans` (ported unchanged,
quirks included, because answers must be identical) and mapped back to character offsets of the
original context. The only difference is speed: all windows of all requests run through the
model together in length-sorted batches instead of one by one.

`decode_spans` and `select_starts_ends` are ported from `transformers.pipelines.question_answering`
(Apache-2.0).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from tokenizers import Encoding

from service.http.fields import TaskRequest, Text
from service.kserve.tensors import TaskTensors, Tensor, TensorSpec, ranked_tensors
from service.runtime.encoder_batches import EncoderModel
from service.runtime.errors import InvalidInput, ModelLoadError
from service.runtime.prepared import Prepared
from service.runtime.task import EncoderRuntime, ExportFacts, HttpRoute, task
from service.runtime.text_tokenizer import require_unicode

LOGITS = ("start_logits", "end_logits")


class QuestionAnsweringParameters(BaseModel):
    """The `parameters` of an answer request (Hugging Face question-answering payload)."""

    model_config = ConfigDict(extra="forbid")

    top_k: int = Field(default=1, ge=1)
    # None resolves as in the pipeline: min(max_seq_len // 2, 128).
    doc_stride: int | None = Field(default=None, ge=0)
    max_answer_len: int = Field(default=15, ge=1)
    # None resolves as in the pipeline: min(the tokenizer's model_max_length, 384).
    max_seq_len: int | None = Field(default=None, ge=1)
    # Accepted for compatibility; the pipeline ignores it with fast tokenizers, and so do we.
    max_question_len: int = Field(default=64, ge=1)
    handle_impossible_answer: bool = False
    align_to_words: bool = True


QuestionItem = tuple[str, str, QuestionAnsweringParameters]


class QuestionContext(BaseModel):
    model_config = ConfigDict(extra="forbid")
    question: Text
    context: Text


class AnswerRequest(TaskRequest):
    inputs: QuestionContext = Field(
        ..., examples=[{"question": "Where is the cat?", "context": "The cat sleeps on the mat."}]
    )
    parameters: QuestionAnsweringParameters = Field(default_factory=QuestionAnsweringParameters)


class Answer(BaseModel):
    answer: str
    score: float
    start: int
    end: int


def _respond(results: list[list[dict[str, Any]]], body: AnswerRequest) -> Any:
    """The best answer as an object when `top_k` is 1, as the pipeline returns it."""
    (answers,) = results
    return answers[0] if body.parameters.top_k == 1 and answers else answers


def _outputs(results: list[list[dict[str, Any]]]) -> list[Tensor]:
    return ranked_tensors(
        results,
        [
            ("answer", "BYTES", ""),
            ("score", "FP32", 0.0),
            ("start", "INT64", -1),
            ("end", "INT64", -1),
        ],
    )


HTTP = HttpRoute(
    request=AnswerRequest,
    response=Answer | list[Answer],
    items=lambda body: [(body.inputs.question, body.inputs.context, body.parameters)],
    respond=_respond,
    summary="Extractive question answering (`question-answering` pipeline payload).",
)

TENSORS = TaskTensors(
    inputs=(
        TensorSpec("question", "BYTES", (-1,), "one question per request"),
        TensorSpec("context", "BYTES", (-1,), "its context, same N as question"),
    ),
    outputs=(
        TensorSpec("answer", "BYTES", (-1, -1), "answers, best first (top_k per row)"),
        TensorSpec("score", "FP32", (-1, -1), "their scores"),
        TensorSpec("start", "INT64", (-1, -1), "character offset in the context"),
        TensorSpec("end", "INT64", (-1, -1), "character offset past the answer"),
    ),
    parameters=QuestionAnsweringParameters,
    items=lambda texts, params: [
        (q, c, params) for q, c in zip(texts["question"], texts["context"], strict=True)
    ],
    encode=_outputs,
)


def decode_spans(
    start: np.ndarray, end: np.ndarray, topk: int, max_answer_len: int, undesired_tokens: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Best (start, end) token spans by start*end probability; `transformers`' function."""
    if start.ndim == 1:
        start = start[None]
    if end.ndim == 1:
        end = end[None]
    outer = np.matmul(np.expand_dims(start, -1), np.expand_dims(end, 1))
    candidates = np.tril(np.triu(outer), max_answer_len - 1)
    scores_flat = candidates.flatten()
    if topk == 1:
        idx_sort = [np.argmax(scores_flat)]
    elif len(scores_flat) <= topk:
        # Upstream has `<` and then crashes in argpartition when there are exactly topk spans
        # (a 4-token window and top_k=3 with align_to_words); sorting all is what it meant.
        idx_sort = np.argsort(-scores_flat)
    else:
        idx = np.argpartition(-scores_flat, topk)[0:topk]
        idx_sort = idx[np.argsort(-scores_flat[idx])]
    starts, ends = np.unravel_index(idx_sort, candidates.shape)[1:]
    # As upstream: `nonzero()` of the 2-D mask also yields its row indices (all 0), so token 0
    # always passes this filter. Kept so that answers stay identical to the pipeline's.
    allowed = undesired_tokens.nonzero()
    desired_spans = np.isin(starts, allowed) & np.isin(ends, allowed)
    starts = starts[desired_spans]
    ends = ends[desired_spans]
    scores = candidates[0, starts, ends]
    return starts, ends, scores


def select_starts_ends(
    start: np.ndarray,
    end: np.ndarray,
    p_mask: np.ndarray,
    attention_mask: np.ndarray | None,
    min_null_score: float = 1000000,
    top_k: int = 1,
    handle_impossible_answer: bool = False,
    max_answer_len: int = 15,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Normalise one window's logits and pick spans; `transformers`' function."""
    undesired_tokens = np.abs(np.array(p_mask) - 1)
    if attention_mask is not None:
        undesired_tokens = undesired_tokens & attention_mask
    undesired_tokens_mask = undesired_tokens == 0.0
    start = np.where(undesired_tokens_mask, -10000.0, start)
    end = np.where(undesired_tokens_mask, -10000.0, end)
    start = np.exp(start - start.max(axis=-1, keepdims=True))
    start = start / start.sum()
    end = np.exp(end - end.max(axis=-1, keepdims=True))
    end = end / end.sum()
    if handle_impossible_answer:
        min_null_score = min(min_null_score, (start[0, 0] * end[0, 0]).item())
    start[0, 0] = end[0, 0] = 0.0
    starts, ends, scores = decode_spans(start, end, top_k, max_answer_len, undesired_tokens)
    return starts, ends, scores, min_null_score


def _char_span(
    encoding: Encoding, s: int, e: int, sequence_index: int, align_to_words: bool
) -> tuple[int, int]:
    """Character offsets of tokens s..e in the context, widened to whole words if asked."""
    if align_to_words:
        try:
            start_word = encoding.token_to_word(s)
            end_word = encoding.token_to_word(e)
            return (
                encoding.word_to_chars(start_word, sequence_index=sequence_index)[0],
                encoding.word_to_chars(end_word, sequence_index=sequence_index)[1],
            )
        except Exception:
            pass  # special tokens have no word: fall back to token offsets, as upstream does
    return encoding.offsets[s][0], encoding.offsets[e][1]


@dataclass
class Window:
    """One model input cut from a long question/context pair."""

    encoding: Encoding
    # 1 where a token cannot be part of the answer (question and special tokens), as upstream.
    p_mask: np.ndarray

    def __len__(self) -> int:
        return len(self.encoding)


@task(
    "question-answering",
    endpoint="answer",
    http=HTTP,
    tensors=TENSORS,
    export=ExportFacts("question-answering", parity="question-answering"),
)
@dataclass
class QuestionAnswerer(EncoderRuntime):
    encoder: EncoderModel
    # `transformers` puts the question first unless the tokenizer pads on the left.
    question_first: bool

    @classmethod
    def load(cls, model_dir: Path, threads: int | None = None) -> QuestionAnswerer:
        encoder = EncoderModel.load(model_dir, threads)
        missing = set(LOGITS) - set(encoder.output_names)
        if missing:
            raise ModelLoadError(f"{model_dir}/model.onnx lacks outputs {sorted(missing)}")
        padding_side = encoder.tokenizer.config.get("padding_side", "right")
        return cls(encoder=encoder, question_first=padding_side == "right")

    def warmup(self) -> None:
        self.answer([("What is this?", "A warm-up call.", QuestionAnsweringParameters())])

    def prepare(self, item: QuestionItem) -> Prepared[QuestionItem, Window]:
        """The pair's windows, checked against the model's limit."""
        question, context, params = item
        return Prepared(item=item, rows=self.windows(question, context, params))

    def run_prepared(
        self, batch: Sequence[Prepared[QuestionItem, Window]]
    ) -> list[list[dict[str, Any]]]:
        """Answers, best first, for independent (question, context, parameters) requests."""
        flat = [window.encoding for p in batch for window in p.rows]
        rows = iter(self.encoder.run(flat, LOGITS, per_token=True))
        return [
            self._answers(p.item[1], p.rows, [next(rows) for _ in p.rows], p.item[2]) for p in batch
        ]

    def answer(self, items: Sequence[QuestionItem]) -> list[list[dict[str, Any]]]:
        """Prepare and run in one call (the parity tests' entry point)."""
        return self.run_prepared([self.prepare(item) for item in items])

    def windows(
        self, question: str, context: str, params: QuestionAnsweringParameters
    ) -> list[Window]:
        """The pipeline's `preprocess`: overlapping windows of the pair, with their answer masks."""
        for name, text in (("question", question), ("context", context)):
            if not text:
                raise InvalidInput(f"`{name}` cannot be empty", field=f"inputs.{name}")
            require_unicode(text, f"inputs.{name}")
        tokenizer = self.encoder.tokenizer
        max_seq_len = params.max_seq_len or min(tokenizer.model_max_length, 384)
        if max_seq_len > self.max_input_tokens:
            raise InvalidInput(
                f"max_seq_len must be at most this model's limit of {self.max_input_tokens} tokens",
                field="parameters.max_seq_len",
            )
        doc_stride = (
            params.doc_stride if params.doc_stride is not None else min(max_seq_len // 2, 128)
        )
        if doc_stride > max_seq_len:
            raise InvalidInput(
                f"doc_stride ({doc_stride}) is larger than max_seq_len ({max_seq_len})",
                field="parameters.doc_stride",
            )
        self._check_room_for_context(question, context, max_seq_len, doc_stride)

        pair = (question, context) if self.question_first else (context, question)
        strategy = "only_second" if self.question_first else "only_first"
        encoded = self.encoder.truncating_tokenizer(max_seq_len, doc_stride, strategy).encode(*pair)
        cls_id = tokenizer.token_id("cls_token")
        result = []
        for encoding in [encoded, *encoded.overflowing]:
            # 1 where a token cannot be part of the answer: question and special tokens.
            p_mask = np.array(
                [int(seq != 1) if self.question_first else 0 for seq in encoding.sequence_ids],
                dtype=np.int64,
            )
            if cls_id is not None:
                # Only the real CLS (no sequence): "[CLS]" typed in the question is tokenized as
                # the special token too, and must not become an answer with question offsets.
                # Upstream unmasks every CLS; normal text holds none, so answers are unchanged.
                real = np.array([seq is None for seq in encoding.sequence_ids])
                p_mask[(np.array(encoding.ids) == cls_id) & real] = 0
            result.append(Window(encoding, p_mask))
        return result

    def _check_room_for_context(
        self, question: str, context: str, max_seq_len: int, doc_stride: int
    ) -> None:
        """Refuse what the tokenizer cannot window (it would raise, or panic, mid-encode)."""
        tokenizer = self.encoder.tokenizer
        question_tokens = len(tokenizer.encode(question, add_special_tokens=False))
        added = tokenizer.tokenizer.num_special_tokens_to_add(True)
        room = max_seq_len - question_tokens - added
        if room > doc_stride:
            return
        # Only a context that must be windowed is a problem.
        context_tokens = len(tokenizer.encode(context, add_special_tokens=False))
        if question_tokens + context_tokens + added > max_seq_len:
            raise InvalidInput(
                f"the question is {question_tokens} tokens long, which leaves {max(room, 0)} of "
                f"max_seq_len={max_seq_len} tokens for the context; that must be more than "
                f"doc_stride={doc_stride}",
                field="inputs.question",
            )

    def _answers(
        self,
        context: str,
        windows: list[Window],
        rows: list[tuple[np.ndarray, ...]],
        params: QuestionAnsweringParameters,
    ) -> list[dict[str, Any]]:
        """The pipeline's `postprocess` over all windows of one request."""
        top_k = params.top_k
        min_null_score = 1000000.0
        answers: list[dict[str, Any]] = []
        sequence_index = 1 if self.question_first else 0
        pre_topk = top_k * 2 + 10 if params.align_to_words else top_k
        for window, (start, end) in zip(windows, rows, strict=True):
            encoding = window.encoding
            attention_mask = np.ones((1, len(encoding)), dtype=np.int64)
            starts, ends, scores, min_null_score = select_starts_ends(
                start[None].astype(np.float32, copy=False),
                end[None].astype(np.float32, copy=False),
                window.p_mask,
                attention_mask,
                min_null_score,
                pre_topk,
                params.handle_impossible_answer,
                params.max_answer_len,
            )
            # Windows are never padded, so this is 0 unless the text itself holds pad tokens;
            # upstream counts them all the same when padding on the left.
            offset = 0
            if not self.question_first:
                offset = int((np.array(encoding.ids) == self.encoder.tokenizer.pad_id).sum())
            for s, e, score in zip(starts, ends, scores, strict=True):
                start_index, end_index = _char_span(
                    encoding,
                    int(s) - offset,
                    int(e) - offset,
                    sequence_index,
                    params.align_to_words,
                )
                text = context[start_index:end_index]
                same = next((a for a in answers if a["answer"].lower() == text.lower()), None)
                if same:
                    same["score"] += score.item()
                else:
                    answers.append(
                        {
                            "score": score.item(),
                            "start": start_index,
                            "end": end_index,
                            "answer": text,
                        }
                    )
        if params.handle_impossible_answer:
            answers.append({"score": min_null_score, "start": 0, "end": 0, "answer": ""})
        return sorted(answers, key=lambda x: x["score"], reverse=True)[:top_k]
