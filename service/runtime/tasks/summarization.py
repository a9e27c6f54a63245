"""Summarization: the `summarization` pipeline over the sequence-to-sequence loop.

The pipeline's own part is small: the model's `task_specific_params["summarization"]` (T5: the
prefix "summarize: ", 4 beams, min_length 30, length_penalty 2.0, no_repeat_ngram_size 3;
BART-CNN the same without a prefix) applied over the pipeline defaults, and the answer's key,
`summary_text`. The search itself is `runtime/seq2seq`, shared with translation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from pydantic import BaseModel, Field

from service.http.fields import TaskRequest, Text, as_list
from service.kserve.tensors import TEXT, TaskTensors, TensorSpec, one_text_per_item, text_tensor
from service.runtime.seq2seq import (
    SEQ2SEQ_EXPORT,
    Seq2SeqGenerator,
    Seq2SeqParameters,
    seq2seq_loader,
)
from service.runtime.task import HttpRoute, task


class SummarizationParameters(Seq2SeqParameters):
    """The `parameters` of `POST /summarize` (Hugging Face summarization task spec:
    `clean_up_tokenization_spaces`, `truncation`, `generate_parameters`; and the shorthands
    `max_new_tokens`, `num_beams`, `truncate`)."""


class SummarizeRequest(TaskRequest):
    inputs: Text | list[Text] = Field(
        ...,
        examples=[
            "The tower is 324 metres tall, about the same height as an 81-storey building, and "
            "was the tallest man-made structure in the world for 41 years."
        ],
    )
    parameters: SummarizationParameters = Field(default_factory=SummarizationParameters)


class Summary(BaseModel):
    summary_text: str


HTTP = HttpRoute(
    request=SummarizeRequest,
    response=list[Summary],
    items=lambda body: [(t, body.parameters) for t in as_list(body.inputs)],
    respond=lambda results, body: [{"summary_text": text} for text in results],
    summary="Summarization (`summarization` pipeline payload): one summary per input.",
)

TENSORS = TaskTensors(
    inputs=(TEXT,),
    outputs=(TensorSpec("summary_text", "BYTES", (-1,), "one summary per text"),),
    parameters=SummarizationParameters,
    items=one_text_per_item,
    encode=lambda results: [text_tensor("summary_text", results)],
)


@task(
    "summarization",
    endpoint="summarize",
    http=HTTP,
    tensors=TENSORS,
    export=SEQ2SEQ_EXPORT,
    loader=seq2seq_loader,
)
@dataclass
class Summarizer(Seq2SeqGenerator):
    pipeline_task: ClassVar[str] = "summarization"
    parameters: ClassVar[type[Seq2SeqParameters]] = SummarizationParameters
