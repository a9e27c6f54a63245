"""Causal text generation: the `transformers` text-generation pipeline's tokens, without torch.

Why our own loop: Optimum's `ORTModelForCausalLM.generate` needs torch and wraps every ORT call in
transformers' generic generation machinery (torch tensors in and out, cache objects, stopping
criteria); on a tiny GPT-2 docs/facts.md measured it about 4x slower than this plain numpy loop, and
it cannot stream. The loop is short: prefill the left-padded prompts once, then feed each step's
`present.*` outputs back as `past_key_values.*` with one new token per sequence. Greedy choices
equal `generate(do_sample=False)` (see `service.runtime.sampling`); the text equals the pipeline's
`generated_text` with `return_full_text=False`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import numpy as np
import onnxruntime as ort
from pydantic import AliasChoices, BaseModel, ConfigDict, Field, StringConstraints, field_validator

from service.config import GrammarSettings, Settings
from service.kserve.tensors import TaskTensors, TensorSpec, text_tensor
from service.runtime.constraints import Grammar, GrammarCompiler, TokenConstraint
from service.runtime.errors import InvalidInput, ModelLoadError, ServingError
from service.runtime.onnx_session import create_session
from service.runtime.sampling import TokenChooser
from service.runtime.task import ExportFacts, task, threads
from service.runtime.text_tokenizer import TextTokenizer, clean_up_tokenization

# TGI's historical default (and the pipeline's max_length=20 budget for short prompts).
DEFAULT_MAX_NEW_TOKENS = 20
DEFAULT_MAX_NEW_TOKENS_CAP = 512
# Prompt tokens decoded with the generated ones, so that decoders that look at the previous
# token (leading-space rules, clean-up of " ." etc.) see the same context as a full decode.
PROMPT_CONTEXT_TOKENS = 8
# Proper prefixes of `clean_up_tokenization`'s patterns, longest first: text ending in one of
# these may still change when the next token arrives, so it is held back from the stream.
_CLEAN_UP_PENDING = (" n'", " 'v", " 'r", " n", " '", " ")
_ORT_FLOAT_TYPES = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
}

# Every generated token is checked against every stop string: bound their number so that one
# request cannot buy unbounded CPU per token (OpenAI allows 4, TGI 4 by default).
MAX_STOP_SEQUENCES = 16
# Alternatives a token may report (OpenAI allows 20 for chat, TGI 5 by default).
MAX_TOP_N_TOKENS = 20

FinishReason = Literal["length", "eos_token", "stop_sequence"]
StopSequence = Annotated[str, StringConstraints(min_length=1)]


class GenerationParameters(BaseModel):
    """The `parameters` of a generate request (TGI schema; transformers semantics).

    - `do_sample` decides greedy vs sampling, as in transformers: temperature/top_k/top_p are
      ignored when it is false (TGI would switch sampling on for them).
    - `stop`: generation ends at the first token whose text completes one of these strings; like
      TGI, `generated_text` keeps the stop string (and the rest of that last token).
    - `return_full_text` is honoured by the protocol adapter (prompt + `generated_text`); the
      runtime always returns the new text only.
    - `truncate`: true keeps the last tokens that fit beside `max_new_tokens`; a number keeps at
      most that many last tokens (TGI). Without it, a prompt that does not fit is refused.
    - `grammar` (TGI's): every generated text matches it (a JSON schema, a regex or a Lark
      grammar; `service.runtime.constraints`), unless `max_new_tokens` cuts it short.
    """

    model_config = ConfigDict(extra="forbid")

    # None: as many as the model's context leaves after the prompt, up to the deployment's cap
    # (what OpenAI's chat does without `max_tokens`).
    max_new_tokens: int | None = Field(default=DEFAULT_MAX_NEW_TOKENS, ge=1)
    do_sample: bool = False
    temperature: float | None = Field(default=None, gt=0)
    top_k: int | None = Field(default=None, ge=0)
    top_p: float | None = Field(default=None, gt=0, le=1)
    repetition_penalty: float | None = Field(default=None, gt=0)
    seed: int | None = Field(default=None, ge=0, lt=2**64)
    stop: list[StopSequence] = Field(default_factory=list, max_length=MAX_STOP_SEQUENCES)
    return_full_text: bool = False
    details: bool = False
    truncate: bool | Annotated[int, Field(ge=1)] | None = Field(
        default=None, validation_alias=AliasChoices("truncate", "truncation")
    )
    # OpenAI's processors (before transformers' ones) and TGI's `top_n_tokens`: the most likely
    # alternatives reported with each token (0: only each token's own text, for logprobs).
    logit_bias: dict[int, Annotated[float, Field(ge=-100, le=100)]] = Field(default_factory=dict)
    presence_penalty: float | None = Field(default=None, ge=-2, le=2)
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2)
    top_n_tokens: int | None = Field(default=None, ge=0, le=MAX_TOP_N_TOKENS)
    grammar: Grammar | None = None

    @field_validator("stop", mode="before")
    @classmethod
    def _stop_list(cls, value: Any) -> Any:
        if value is None:
            return []
        return [value] if isinstance(value, str) else value


@dataclass(frozen=True)
class GeneratedToken:
    """One generated token as streamed. `text` is the new text it released: "" while a character
    is still incomplete or for special tokens (which `generated_text` skips), so the texts of all
    tokens concatenate to `generated_text`."""

    id: int
    text: str
    logprob: float
    special: bool
    # The most likely alternatives (id, text, log-probability), best first, and the token's own
    # text, when asked for (`top_n_tokens` not None: OpenAI's logprobs).
    top: tuple[tuple[int, str, float], ...] = ()
    piece: str = ""
    is_token: ClassVar[bool] = True


@dataclass
class GenerationResult:
    """A finished sequence. `finish_reason` is checked in the order eos, stop, length."""

    generated_text: str
    finish_reason: FinishReason
    generated_tokens: int
    prompt_tokens: int
    seed: int | None
    tokens: list[GeneratedToken]
    stop_sequence: str | None = None
    is_token: ClassVar[bool] = False


class IncrementalText:
    """The text of generated tokens, released only once no later token can change it.

    Decoding token by token is wrong for byte-level BPE (one character may span tokens) and for
    decoders with context rules, so each step decodes a short window and keeps the difference,
    as TGI does; text ending in U+FFFD waits for the rest of its bytes. The final text is the
    pipeline's: prompt tail plus generated tokens decoded, cleaned up, then cut after the prompt.
    """

    def __init__(self, tokenizer: TextTokenizer, prompt_ids: Sequence[int], clean_up: bool) -> None:
        self._tokenizer = tokenizer.tokenizer
        self._ids = list(prompt_ids[-PROMPT_CONTEXT_TOKENS:])
        self._prefix = 0
        self._read = len(self._ids)
        self._prefix_text = self._decode(self._ids)
        self._context = self._prefix_text
        self._clean_up = clean_up
        self._context_length = len(self._clean(self._context))
        self._raw = ""
        self.released = ""

    def _decode(self, ids: list[int]) -> str:
        return self._tokenizer.decode(ids, skip_special_tokens=True)

    def token_text(self, token_id: int) -> str:
        """One token's own text (special tokens by name), for reporting alternatives."""
        return self._tokenizer.decode([token_id], skip_special_tokens=False)

    def _clean(self, text: str) -> str:
        return clean_up_tokenization(text) if self._clean_up else text

    def add(self, token_id: int) -> None:
        self._ids.append(token_id)
        text = self._decode(self._ids[self._prefix :])
        if len(text) > len(self._prefix_text) and not text.endswith("\ufffd"):
            self._raw += text[len(self._prefix_text) :]
            self._prefix, self._read = self._read, len(self._ids)
            self._prefix_text = self._decode(self._ids[self._prefix : self._read])

    def flush(self) -> None:
        """Take in bytes still waiting for the rest of a character (decoded as U+FFFD)."""
        if self._read < len(self._ids):
            text = self._decode(self._ids[self._prefix :])
            self._raw += text[len(self._prefix_text) :]
            self._prefix, self._read = self._read, len(self._ids)
            self._prefix_text = self._decode(self._ids[self._prefix : self._read])

    @property
    def text(self) -> str:
        """All complete text so far, including what is still held back from the stream."""
        if not self._clean_up:
            return self._raw
        return self._clean(self._context + self._raw)[self._context_length :]

    def release(self, final: bool = False) -> str:
        """The text that became final since the last call."""
        text = self.text
        if not final and self._clean_up:
            for pending in _CLEAN_UP_PENDING:
                if text.endswith(pending):
                    text = text[: -len(pending)]
                    break
        if len(text) <= len(self.released) or not text.startswith(self.released):
            return ""
        piece = text[len(self.released) :]
        self.released = text
        return piece


@dataclass
class DecodingSequence:
    """One prompt's decoding state inside a batch."""

    prompt_ids: list[int]
    params: GenerationParameters
    chooser: TokenChooser
    detokenizer: IncrementalText
    eos_ids: frozenset[int]
    special_ids: frozenset[int]
    history: np.ndarray = field(init=False)
    length: int = field(init=False)
    # The request's grammar (structured generation); None decodes freely.
    constraint: TokenConstraint | None = None
    tokens: list[GeneratedToken] = field(default_factory=list)
    finish_reason: FinishReason | None = None
    stop_sequence: str | None = None
    # Set when the sequence could not go on (its grammar ran out of fuel): it ends with this
    # error instead of a result, and the batch's other sequences are not affected.
    error: ServingError | None = None

    def __post_init__(self) -> None:
        # Prompt + generated ids, for the repetition penalty (without padding, as unbatched).
        self.history = np.zeros(len(self.prompt_ids) + self.params.max_new_tokens, np.int64)
        self.history[: len(self.prompt_ids)] = self.prompt_ids
        self.length = len(self.prompt_ids)

    def advance(self, logits: np.ndarray) -> GeneratedToken:
        if self.constraint is not None:
            try:
                logits = self.constraint.mask(logits)
            except ServingError as exc:
                return self._fail(exc)
        token_id, logprob, top = self.chooser.choose(
            logits, self.history[: self.length], self.history[len(self.prompt_ids) : self.length]
        )
        grammar_done = False
        if self.constraint is not None:
            try:
                self.constraint.consume(token_id)
            except ServingError as exc:
                return self._fail(exc)
            grammar_done = self.constraint.finished
        self.history[self.length] = token_id
        self.length += 1
        text = self.detokenizer
        text.add(token_id)
        if token_id in self.eos_ids:
            self.finish_reason = "eos_token"
        elif (stop := self._stop_found()) is not None:
            self.finish_reason, self.stop_sequence = "stop_sequence", stop
        elif grammar_done:  # the grammar allows nothing but EOS now: as if the model chose it
            self.finish_reason = "eos_token"
        elif len(self.tokens) + 1 >= self.params.max_new_tokens:
            self.finish_reason = "length"
        if self.finish_reason is not None:
            text.flush()
        alternatives = tuple((i, text.token_text(i), lp) for i, lp in top)
        piece = text.token_text(token_id) if self.params.top_n_tokens is not None else ""
        token = GeneratedToken(
            id=token_id,
            text=text.release(final=self.finish_reason is not None),
            logprob=logprob,
            special=token_id in self.special_ids,
            top=alternatives,
            piece=piece,
        )
        self.tokens.append(token)
        return token

    def _fail(self, error: ServingError) -> GeneratedToken:
        """End this sequence with `error`: its row gets an EOS token (never delivered as text)
        so that the batch keeps one token per row until the sequence leaves it."""
        self.error, self.finish_reason = error, "eos_token"
        eos = min(self.eos_ids) if self.eos_ids else 0
        self.history[self.length] = eos
        self.length += 1
        return GeneratedToken(id=eos, text="", logprob=0.0, special=True)

    def _stop_found(self) -> str | None:
        if not self.params.stop:
            return None
        text, released = self.detokenizer.text, len(self.detokenizer.released)
        for stop in self.params.stop:
            # Text already released was searched before; a match may straddle its end.
            if stop in text[max(0, released - len(stop) + 1) :]:
                return stop
        return None

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None

    def result(self) -> GenerationResult:
        assert self.finish_reason is not None
        return GenerationResult(
            generated_text=self.detokenizer.text,
            finish_reason=self.finish_reason,
            generated_tokens=len(self.tokens),
            prompt_tokens=len(self.prompt_ids),
            seed=self.chooser.seed if self.params.do_sample else None,
            tokens=self.tokens,
            stop_sequence=self.stop_sequence,
        )


@dataclass(frozen=True)
class _CacheLayout:
    """Names and shape of the graph's key/value cache inputs and outputs."""

    past_names: tuple[str, ...]
    present_names: tuple[str, ...]
    heads: int
    head_dim: int
    dtype: type

    @classmethod
    def read(cls, session: ort.InferenceSession, config: dict[str, Any]) -> _CacheLayout:
        inputs = [i for i in session.get_inputs() if i.name.startswith("past_key_values.")]
        outputs = {o.name for o in session.get_outputs()}
        if not inputs:
            raise ModelLoadError(
                "the generation graph has no past_key_values inputs; export it "
                "with the text-generation-with-past task"
            )
        past = tuple(i.name for i in inputs)
        present = tuple(name.replace("past_key_values.", "present.", 1) for name in past)
        missing = [name for name in present if name not in outputs]
        if missing:
            raise ModelLoadError(f"the generation graph lacks outputs {missing}")
        shape = inputs[0].shape
        heads = (
            shape[1]
            if isinstance(shape[1], int)
            else config.get(
                "num_key_value_heads", config.get("num_attention_heads", config.get("n_head"))
            )
        )
        if isinstance(shape[3], int):
            head_dim = shape[3]
        else:
            hidden = config.get("hidden_size", config.get("n_embd"))
            attention_heads = config.get("num_attention_heads", config.get("n_head"))
            head_dim = config.get("head_dim") or hidden // attention_heads
        dtype = _ORT_FLOAT_TYPES.get(inputs[0].type, np.float32)
        return cls(past, present, int(heads), int(head_dim), dtype)

    def empty(self, batch: int) -> dict[str, np.ndarray]:
        array = np.zeros((batch, self.heads, 0, self.head_dim), self.dtype)
        return dict.fromkeys(self.past_names, array)


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}


def _id_list(value: Any) -> list[int]:
    """An id field of config.json/generation_config.json: one id, a list of ids or null."""
    if value is None:
        return []
    return [int(v) for v in (value if isinstance(value, list) else [value])]


def _position_limit(config: dict[str, Any], tokenizer: TextTokenizer) -> int:
    for key in ("max_position_embeddings", "n_positions", "max_sequence_length", "n_ctx"):
        if isinstance(config.get(key), int):
            return config[key]
    return tokenizer.model_max_length


# Generation's HTTP routes are TGI's (`/generate`, `/generate_stream`, `POST /`) and OpenAI's,
# protocol adapters of their own (http/task_routes.py, http/openai_routes.py).
TENSORS = TaskTensors(
    inputs=(TensorSpec("text", "BYTES", (-1,), "one prompt per element"),),
    outputs=(
        TensorSpec(
            "generated_text",
            "BYTES",
            (-1,),
            "the new text (prompt + new text with return_full_text)",
        ),
    ),
    parameters=GenerationParameters,
    items=lambda texts, params: list(texts["text"]),
    encode=lambda results: [text_tensor("generated_text", results)],
)


def _load(path: Path, settings: Settings) -> TextGenerator:
    return TextGenerator.load(
        path,
        threads=threads(settings),
        max_new_tokens_cap=settings.limits.max_new_tokens,
        grammar_settings=settings.grammar,
    )


@task(
    "text-generation",
    endpoint="generate",
    tensors=TENSORS,
    export=ExportFacts("text-generation-with-past", parity="causal-lm"),
    load=_load,
    streams=True,
)
@dataclass
class TextGenerator:
    """A causal LM served from an Optimum `text-generation-with-past` export, or from the graph
    ONNX Runtime GenAI's builder writes (`models/genai_export.py`)."""

    session: ort.InferenceSession
    tokenizer: TextTokenizer
    eos_token_ids: frozenset[int]
    pad_token_id: int
    max_positions: int
    cache: _CacheLayout
    max_new_tokens_cap: int = DEFAULT_MAX_NEW_TOKENS_CAP
    # Graphs written by onnxruntime-genai's model builder (fused GroupQueryAttention, positions
    # derived from the attention mask) take right-padded caches; Optimum's take left padding.
    right_padded: bool = False
    # The pipeline's postprocess decodes with clean_up_tokenization_spaces=True whatever the
    # tokenizer config says; keep that for identical text.
    clean_up_tokenization_spaces: bool = True
    # Structured generation: the model's grammars (None: requests with a grammar are refused).
    grammars: GrammarCompiler | None = None
    special_ids: frozenset[int] = field(init=False)
    _input_names: frozenset[str] = field(init=False)
    _outputs: list[str] = field(init=False)

    def __post_init__(self) -> None:
        self._input_names = frozenset(i.name for i in self.session.get_inputs())
        self._outputs = ["logits", *self.cache.present_names]
        self.special_ids = frozenset(
            token_id
            for token_id, token in self.tokenizer.tokenizer.get_added_tokens_decoder().items()
            if token.special
        )

    @classmethod
    def load(
        cls,
        model_dir: Path,
        threads: int | None = None,
        max_new_tokens_cap: int = DEFAULT_MAX_NEW_TOKENS_CAP,
        grammar_settings: GrammarSettings | None = None,
    ) -> TextGenerator:
        model_dir = Path(model_dir)
        if not (model_dir / "model.onnx").exists():
            raise ModelLoadError(f"{model_dir} has no model.onnx")
        config = _read_json(model_dir / "config.json")
        generation = _read_json(model_dir / "generation_config.json")
        tokenizer = TextTokenizer.load(model_dir)
        eos = _id_list(generation.get("eos_token_id", config.get("eos_token_id")))
        if not eos and tokenizer.eos_id is not None:
            eos = [tokenizer.eos_id]
        # As generate(): the model's pad id, else the first eos id. Padding is masked, so the
        # choice never shows in the output.
        pad = next(
            (
                v
                for v in (
                    generation.get("pad_token_id"),
                    config.get("pad_token_id"),
                    tokenizer.pad_id,
                    *eos,
                )
                if v is not None
            ),
            0,
        )
        session = create_session(model_dir / "model.onnx", threads)
        logits_width = next((o.shape[-1] for o in session.get_outputs() if o.name == "logits"), 0)
        vocabulary = max(
            tokenizer.tokenizer.get_vocab_size(with_added_tokens=True),
            logits_width if isinstance(logits_width, int) else 0,
        )
        grammars = GrammarCompiler(
            (model_dir / "tokenizer.json").read_text(encoding="utf-8"),
            eos,
            vocabulary,
            grammar_settings or GrammarSettings(),
        )
        return cls(
            session=session,
            tokenizer=tokenizer,
            eos_token_ids=frozenset(eos),
            pad_token_id=int(pad),
            max_positions=_position_limit(config, tokenizer),
            cache=_CacheLayout.read(session, config),
            max_new_tokens_cap=max_new_tokens_cap,
            right_padded=(model_dir / "genai_config.json").exists(),
            grammars=grammars,
        )

    # --- chat and counting ----------------------------------------------------------------------
    @property
    def chat_template(self) -> str | None:
        return self.tokenizer.chat_template

    def apply_chat_template(
        self,
        messages: list[dict[str, Any]],
        add_generation_prompt: bool = True,
        tools: list[dict[str, Any]] | None = None,
    ) -> str:
        """The prompt text for a conversation; tokenize it with `add_special_tokens=False` (the
        template already holds the special tokens, as in transformers' chat pipeline)."""
        if not self.chat_template:
            raise InvalidInput("this model has no chat template", field="messages")
        from jinja2.exceptions import TemplateError

        try:
            return self.tokenizer.apply_chat_template(messages, add_generation_prompt, tools)
        except TemplateError as exc:
            raise InvalidInput(
                f"chat template refused the messages: {exc}", field="messages"
            ) from exc

    def count_tokens(self, text: str, add_special_tokens: bool = True) -> int:
        return len(self.tokenizer.encode(text, add_special_tokens=add_special_tokens).ids)

    def warmup(self) -> None:
        """One short generation, so the first request does not pay ORT's first-run costs."""
        self.generate(
            ["Hello"], GenerationParameters(max_new_tokens=min(2, self.max_new_tokens_cap))
        )
        if self.grammars is not None:
            self.grammars.tokenizer  # noqa: B018 (built now, not by the first grammar request)

    def close(self) -> None:
        """Nothing to release: the session goes with the object."""

    # --- generation -----------------------------------------------------------------------------
    def stream(
        self,
        prompt: str,
        params: GenerationParameters | None = None,
        *,
        add_special_tokens: bool = True,
    ) -> Iterator[GeneratedToken | GenerationResult]:
        """Tokens as they are generated, then the `GenerationResult`.

        The prompt is validated now (InvalidInput is raised by this call, not by iteration);
        closing the iterator stops generation.
        """
        sequence = self.prepare(prompt, params or GenerationParameters(), add_special_tokens)
        return self._stream(sequence)

    def _stream(self, sequence: DecodingSequence) -> Iterator[GeneratedToken | GenerationResult]:
        batch, first = self.prefill([sequence])
        yield from first
        while not sequence.finished:
            yield from self.step(batch)
        if sequence.error is not None:
            raise sequence.error
        yield sequence.result()

    def generate(
        self,
        prompts: Sequence[str],
        params: GenerationParameters | Sequence[GenerationParameters] | None = None,
        *,
        add_special_tokens: bool = True,
    ) -> list[GenerationResult]:
        """Several prompts decoded together (left-padded, one KV cache); each stops on its own
        and leaves the batch. `params` is one set for all prompts or one per prompt."""
        if params is None or isinstance(params, GenerationParameters):
            params = [params or GenerationParameters()] * len(prompts)
        if len(params) != len(prompts):
            raise ValueError("give one GenerationParameters per prompt")
        sequences = [
            self.prepare(prompt, p, add_special_tokens)
            for prompt, p in zip(prompts, params, strict=True)
        ]
        if sequences:
            batch, _ = self.prefill(sequences)
            batch.drop_finished()
            while batch.sequences:
                self.step(batch)
                batch.drop_finished()
        failed = next((s.error for s in sequences if s.error is not None), None)
        if failed is not None:
            raise failed
        return [s.result() for s in sequences]

    def check(self, params: GenerationParameters) -> None:
        """Refuse parameters beyond this deployment's limits."""
        if params.max_new_tokens is None:
            return
        if params.max_new_tokens > self.max_new_tokens_cap:
            raise InvalidInput(
                f"max_new_tokens must be at most {self.max_new_tokens_cap} for this model, "
                f"got {params.max_new_tokens}",
                field="parameters.max_new_tokens",
            )
        if params.max_new_tokens >= self.max_positions:
            raise InvalidInput(
                f"max_new_tokens must be less than this model's limit of {self.max_positions} "
                f"tokens (prompt included), got {params.max_new_tokens}",
                field="parameters.max_new_tokens",
            )

    def prepare(
        self,
        prompt: str | Sequence[int],
        params: GenerationParameters,
        add_special_tokens: bool = True,
    ) -> DecodingSequence:
        """Tokenize and validate a prompt (text, or token ids as OpenAI's completions take them)
        into a sequence ready to join a batch (InvalidInput is raised here, before any
        decoding)."""
        self.check(params)
        vocabulary = self.tokenizer.tokenizer.get_vocab_size(with_added_tokens=True)
        if isinstance(prompt, str):
            ids = self.tokenizer.encode(prompt, add_special_tokens=add_special_tokens).ids
        else:
            ids = [int(i) for i in prompt]
            bad = [i for i in ids if not 0 <= i < vocabulary]
            if bad:
                raise InvalidInput(
                    f"prompt: {bad[0]} is not a token id of this model (0..{vocabulary - 1})",
                    field="prompt",
                )
        room = self.max_positions - (params.max_new_tokens or 1)
        truncate = params.truncate
        if truncate is True:
            ids = ids[-room:]
        elif truncate:  # a token count (bool False/None mean no truncation)
            ids = ids[-truncate:]
        if len(ids) > room:
            raise InvalidInput(
                f"input is {len(ids)} tokens long; with max_new_tokens={params.max_new_tokens} "
                f"it exceeds this model's limit of {self.max_positions} tokens (at most {room} "
                f"prompt tokens); send a shorter prompt, fewer max_new_tokens or truncate=true",
                field="inputs",
            )
        if not ids:
            raise InvalidInput("inputs must not be empty", field="inputs")
        if params.max_new_tokens is None:
            fill = min(self.max_new_tokens_cap, self.max_positions - len(ids))
            params = params.model_copy(update={"max_new_tokens": fill})
        bad = [i for i in params.logit_bias if not 0 <= i < vocabulary]
        if bad:
            raise InvalidInput(
                f"logit_bias: {bad[0]} is not a token id of this model (0..{vocabulary - 1})",
                field="logit_bias",
            )
        constraint = None
        if params.grammar is not None:
            if self.grammars is None:
                raise InvalidInput("this model does not take grammars", field=params.grammar.field)
            constraint = self.grammars.constraint(params.grammar)
        chooser = TokenChooser(
            do_sample=params.do_sample,
            temperature=params.temperature,
            top_k=params.top_k,
            top_p=params.top_p,
            repetition_penalty=params.repetition_penalty,
            seed=params.seed,
            logit_bias=dict(params.logit_bias),
            presence_penalty=params.presence_penalty or 0.0,
            frequency_penalty=params.frequency_penalty or 0.0,
            top_n=params.top_n_tokens or 0,
        )
        # A grammar constrains the exact text: the pipeline's clean-up (" ." -> ".") would change
        # what was generated, so constrained text is decoded as it is.
        clean_up = self.clean_up_tokenization_spaces and constraint is None
        return DecodingSequence(
            prompt_ids=ids,
            params=params,
            chooser=chooser,
            detokenizer=IncrementalText(self.tokenizer, ids, clean_up),
            eos_ids=self.eos_token_ids,
            special_ids=self.special_ids,
            constraint=constraint,
        )

    # --- batched decoding: the primitives the scheduler and generate() share -------------------
    def prefill(
        self, sequences: list[DecodingSequence]
    ) -> tuple[DecodeBatch, list[GeneratedToken]]:
        """Run the left-padded prompts once and choose each one's first token.

        Only the last position's logits are read; rows that finished on their first token stay
        in the returned batch until `drop_finished`."""
        batch = len(sequences)
        lengths = np.array([len(s.prompt_ids) for s in sequences])
        width = int(lengths.max())
        input_ids = np.full((batch, width), self.pad_token_id, np.int64)
        mask = np.zeros((batch, width), np.int64)
        for row, sequence in enumerate(sequences):
            n = lengths[row]
            cols = slice(0, n) if self.right_padded else slice(width - n, None)
            input_ids[row, cols] = sequence.prompt_ids
            mask[row, cols] = 1
        # As transformers' prepare_inputs_for_generation: padding positions are set to 1.
        positions = np.where(mask == 1, np.cumsum(mask, axis=-1) - 1, 1)
        last = lengths - 1 if self.right_padded else None
        logits, past = self._run_graph(
            input_ids, mask, positions, self.cache.empty(batch), first=True, last=last
        )
        state = DecodeBatch(list(sequences), mask, past, right_padded=self.right_padded)
        return state, state.advance(logits)

    def step(self, batch: DecodeBatch) -> list[GeneratedToken]:
        """One token for every sequence of the batch (none of which may be finished)."""
        rows = len(batch.sequences)
        if batch.right_padded:  # each row's new position follows its own last one
            lengths = batch.mask.sum(axis=1)
            mask = np.concatenate([batch.mask, np.zeros((rows, 1), np.int64)], axis=1)
            mask[np.arange(rows), lengths] = 1
        else:
            mask = np.concatenate([batch.mask, np.ones((rows, 1), np.int64)], axis=1)
        positions = mask.sum(axis=-1, keepdims=True) - 1
        logits, batch.past = self._run_graph(
            batch.next_ids, mask, positions, batch.past, first=False
        )
        batch.mask = mask
        return batch.advance(logits)

    def _run_graph(
        self,
        input_ids: np.ndarray,
        mask: np.ndarray,
        positions: np.ndarray,
        past: dict[str, Any],
        first: bool,
        last: np.ndarray | None = None,
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """One ORT call. The cache stays in ORT's own buffers (OrtValues) from one step to the
        next: `run` would copy every present key/value into numpy and back each step. `last`:
        each row's last real input position (right-padded prompts), else the final one."""
        feed: dict[str, Any] = {
            "input_ids": _ortvalue(input_ids),
            "attention_mask": _ortvalue(mask),
        }
        for name, value in past.items():
            feed[name] = value if isinstance(value, ort.OrtValue) else _ortvalue(value)
        if "position_ids" in self._input_names:
            feed["position_ids"] = _ortvalue(positions)
        if "use_cache_branch" in self._input_names:
            feed["use_cache_branch"] = _ortvalue(np.array([not first]))
        logits, *present = self.session.run_with_ort_values(self._outputs, feed)
        # Logits of the last position only: (rows, vocab).
        values = logits.numpy()
        chosen = values[:, -1] if last is None else values[np.arange(values.shape[0]), last]
        return chosen, dict(zip(self.cache.past_names, present, strict=True))


def _ortvalue(array: np.ndarray) -> ort.OrtValue:
    return ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(array))


def _as_array(value: Any) -> np.ndarray:
    return value.numpy() if isinstance(value, ort.OrtValue) else value


@dataclass
class DecodeBatch:
    """Sequences decoded together: one KV cache padded to a common width (on the left, or on the
    right for graphs that take right padding), its mask, and the token each row feeds next.
    Sequences join (`merge`) and leave (`keep`) between steps, which is what lets concurrent
    requests share every ORT call (iteration-level batching)."""

    sequences: list[DecodingSequence]
    mask: np.ndarray  # (rows, past width): 1 where the cache holds a real position
    past: dict[str, Any]  # past_key_values.* -> (rows, heads, width, head_dim), numpy or OrtValue
    # Padding after each row's positions instead of before (graphs with GroupQueryAttention).
    right_padded: bool = False
    next_ids: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.next_ids = np.zeros((len(self.sequences), 1), np.int64)

    def advance(self, logits: np.ndarray) -> list[GeneratedToken]:
        tokens = []
        for row, sequence in enumerate(self.sequences):
            token = sequence.advance(logits[row])
            self.next_ids[row, 0] = token.id
            tokens.append(token)
        return tokens

    def drop_finished(self) -> list[DecodingSequence]:
        """Remove finished sequences; returns them."""
        done = [s for s in self.sequences if s.finished]
        if done:
            self.keep([row for row, s in enumerate(self.sequences) if not s.finished])
        return done

    def keep(self, rows: list[int]) -> None:
        """Keep only `rows`, and cut cache columns that are padding in every remaining row."""
        index = np.asarray(rows, np.int64)
        self.sequences = [self.sequences[r] for r in rows]
        self.next_ids = self.next_ids[index]
        mask = self.mask[index]
        used = mask.any(axis=0)
        if self.right_padded:
            start, end = 0, (len(used) - int(np.argmax(used[::-1]))) if len(rows) else 0
        else:
            start, end = (int(np.argmax(used)) if len(rows) else 0), mask.shape[1]
        self.mask = mask[:, start:end]
        self.past = {
            name: _as_array(value)[index, :, start:end] for name, value in self.past.items()
        }

    def merge(self, other: DecodeBatch) -> None:
        """Append `other`'s rows; the shorter cache is padded (masked) to the longer."""
        width = max(self.mask.shape[1], other.mask.shape[1])

        def pad(array: np.ndarray, axis: int) -> np.ndarray:
            missing = width - array.shape[axis]
            if not missing:
                return array
            widths = [(0, 0)] * array.ndim
            widths[axis] = (0, missing) if self.right_padded else (missing, 0)
            return np.pad(array, widths)

        self.sequences = self.sequences + other.sequences
        self.next_ids = np.concatenate([self.next_ids, other.next_ids])
        self.mask = np.concatenate([pad(self.mask, 1), pad(other.mask, 1)])
        self.past = {
            name: np.concatenate([pad(_as_array(value), 2), pad(_as_array(other.past[name]), 2)])
            for name, value in self.past.items()
        }
