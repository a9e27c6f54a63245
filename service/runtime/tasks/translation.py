"""Translation: the `translation` pipeline over the sequence-to-sequence loop (`runtime/seq2seq`).

What translation adds to the loop is the language pair. A model lists its pairs as
`task_specific_params["translation_{src}_to_{tgt}"]` (T5: the prefix "translate English to
French: " and its search options) or names one pair in its tokenizer config (Marian); a request
for a pair is the pipeline built for the task `translation_{src}_to_{tgt}`, a request that names
none gets the deployment's preferred pair, else the first (as `pipeline("translation")` does).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, Field

from service.config import Settings
from service.http.fields import TaskRequest, Text, as_list
from service.kserve.tensors import TEXT, TaskTensors, TensorSpec, one_text_per_item, text_tensor
from service.runtime.errors import InvalidInput, ModelLoadError
from service.runtime.seq2seq import (
    SEQ2SEQ_EXPORT,
    Seq2SeqGenerator,
    Seq2SeqParameters,
    seq2seq_loader,
)
from service.runtime.task import HttpRoute, task


class TranslationParameters(Seq2SeqParameters):
    """The `parameters` object of `POST /translate`: the Hugging Face translation task spec
    (`src_lang`, `tgt_lang`, `clean_up_tokenization_spaces`, `truncation`,
    `generate_parameters`) and this service's shorthands (`max_new_tokens`, `num_beams`,
    `truncate`), which keep working; a value given both ways must agree."""

    src_lang: str | None = None
    tgt_lang: str | None = None


@dataclass(frozen=True)
class LanguagePair:
    src: str
    tgt: str
    task_params: Mapping[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        return f"{self.src}->{self.tgt}"


class TranslateRequest(TaskRequest):
    inputs: Text | list[Text] = Field(..., examples=["The house is wonderful."])
    parameters: TranslationParameters = Field(default_factory=TranslationParameters)


class Translation(BaseModel):
    translation_text: str


HTTP = HttpRoute(
    request=TranslateRequest,
    response=list[Translation],
    items=lambda body: [(t, body.parameters) for t in as_list(body.inputs)],
    respond=lambda results, body: [{"translation_text": text} for text in results],
    summary="Translation (`translation` pipeline payload).",
)

TENSORS = TaskTensors(
    inputs=(TEXT,),
    outputs=(TensorSpec("translation_text", "BYTES", (-1,), "one translation per text"),),
    parameters=TranslationParameters,
    items=one_text_per_item,
    encode=lambda results: [text_tensor("translation_text", results)],
)


@task(
    "translation",
    endpoint="translate",
    http=HTTP,
    tensors=TENSORS,
    export=SEQ2SEQ_EXPORT,
    loader=seq2seq_loader,
)
@dataclass
class Translator(Seq2SeqGenerator):
    """A loaded translation model: the generator plus the language pairs it offers."""

    pairs: list[LanguagePair] = field(default_factory=list)
    default_pair: LanguagePair | None = None

    parameters: ClassVar[type[Seq2SeqParameters]] = TranslationParameters

    @classmethod
    def load_options(cls, settings: Settings) -> dict[str, Any]:
        """The deployment's preferred pair (`models.translation_pair`, e.g. `en-fr`)."""
        src, _, tgt = settings.models.translation_pair.partition("-")
        return {"preferred_pair": (src, tgt) if tgt else None}

    @classmethod
    def load(
        cls,
        model_dir: Path,
        threads: int | None = None,
        *,
        max_new_tokens_limit: int = 512,
        max_beams: int = 8,
        default_pair: tuple[str, str] | None = None,
        preferred_pair: tuple[str, str] | None = None,
    ) -> Translator:
        """Load an exported folder (see `Seq2SeqGenerator.load`); `default_pair` names the
        `translation_{src}_to_{tgt}` entry used when a request names no languages (else the
        preferred pair where the model offers it, else the first)."""
        parts = cls.read_folder(model_dir, threads, max_new_tokens_limit, max_beams)
        model_config, tokenizer = parts["model_config"], parts["tokenizer"]
        pairs = [
            LanguagePair(*key.split("_")[1::2], task_params=value)
            for key, value in (model_config.get("task_specific_params") or {}).items()
            if key.startswith("translation_") and len(key.split("_")) == 4
        ]
        src, tgt = tokenizer.config.get("source_lang"), tokenizer.config.get("target_lang")
        if not pairs and src and tgt:  # a single-pair model (Marian) that names its languages
            pairs = [LanguagePair(src, tgt)]
        chosen = pairs[0] if pairs else None
        # A deployment-wide preference (e.g. en->fr), taken only where the model offers it.
        chosen = next((p for p in pairs if (p.src, p.tgt) == tuple(preferred_pair or ())), chosen)
        if default_pair is not None:
            chosen = next((p for p in pairs if (p.src, p.tgt) == tuple(default_pair)), None)
            if chosen is None:
                raise ModelLoadError(
                    f"default pair {default_pair} is not one of the model's "
                    f"pairs: {', '.join(map(str, pairs)) or 'none'}"
                )
        translator = cls(**parts, pairs=pairs, default_pair=chosen)
        translator.check_defaults()
        return translator

    def check_defaults(self) -> None:
        for pair in self.pairs or [None]:
            self._base_settings(pair.task_params if pair else {})

    def task_params(self, params: Seq2SeqParameters) -> Mapping[str, Any]:
        pair = self._pair(params)
        return pair.task_params if pair else {}

    def _pair(self, params: Seq2SeqParameters) -> LanguagePair | None:
        src = getattr(params, "src_lang", None)
        tgt = getattr(params, "tgt_lang", None)
        if src is None and tgt is None:
            return self.default_pair
        if not self.pairs:  # a model that names no languages: the caller's choice is moot
            return None
        matches = [
            p for p in self.pairs if (src is None or p.src == src) and (tgt is None or p.tgt == tgt)
        ]
        if matches:
            return self.default_pair if self.default_pair in matches else matches[0]
        supported = ", ".join(map(str, self.pairs))
        field_name = "parameters.src_lang" if tgt is None else "parameters.tgt_lang"
        raise InvalidInput(
            f"unsupported language pair {src or '*'}->{tgt or '*'}; "
            f"this model translates {supported}",
            field_name,
        )

    # The task's own words for the loop's calls.
    translate_ids = Seq2SeqGenerator.generate_ids
    translate = Seq2SeqGenerator.generate_texts
