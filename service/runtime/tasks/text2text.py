"""Text-to-text: the `text2text-generation` pipeline over the sequence-to-sequence loop.

T5's original form: the task is written in the input ("translate English to French: ...",
"summarize: ...", "cola sentence: ..."), so nothing is added to it; the model's
`task_specific_params["text2text-generation"]` applies where it has one (T5 has none). The answer's
key is `generated_text`.
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


class Text2TextParameters(Seq2SeqParameters):
    """The `parameters` of `POST /text2text` (Hugging Face text2text-generation task spec:
    `clean_up_tokenization_spaces`, `truncation`, `generate_parameters`; and the shorthands
    `max_new_tokens`, `num_beams`, `truncate`)."""


class Text2TextRequest(TaskRequest):
    inputs: Text | list[Text] = Field(
        ..., examples=["translate English to German: The house is wonderful."]
    )
    parameters: Text2TextParameters = Field(default_factory=Text2TextParameters)


class GeneratedText(BaseModel):
    generated_text: str


HTTP = HttpRoute(
    request=Text2TextRequest,
    response=list[GeneratedText],
    items=lambda body: [(t, body.parameters) for t in as_list(body.inputs)],
    respond=lambda results, body: [{"generated_text": text} for text in results],
    summary="""Text-to-text generation (`text2text-generation` pipeline payload): the task is
    written in the input, as T5's prompts ("summarize: ...").""",
)

TENSORS = TaskTensors(
    inputs=(TEXT,),
    outputs=(TensorSpec("generated_text", "BYTES", (-1,), "one output per text"),),
    parameters=Text2TextParameters,
    items=one_text_per_item,
    encode=lambda results: [text_tensor("generated_text", results)],
)


@task(
    "text2text-generation",
    endpoint="text2text",
    http=HTTP,
    tensors=TENSORS,
    export=SEQ2SEQ_EXPORT,
    loader=seq2seq_loader,
)
@dataclass
class Text2TextGenerator(Seq2SeqGenerator):
    pipeline_task: ClassVar[str] = "text2text-generation"
    parameters: ClassVar[type[Seq2SeqParameters]] = Text2TextParameters
