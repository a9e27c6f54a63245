"""OpenAI's completions and chat request bodies, and what each field becomes here.

Every field of the current request schemas is either honoured or accepted and ignored where
OpenAI-compatible servers (vLLM, TGI) do the same: `store`, `metadata`, `service_tier`, `user`,
`modalities: ["text"]`, `reasoning_effort` (documented in docs/api.md). `response_format` and
`tools` constrain what the model writes (service/http/openai_tools.py).
"""

from __future__ import annotations

import contextlib
import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, model_validator

from service.http.fields import ModelName, Text
from service.http.openai_tools import (
    ResponseFormat,
    ToolChoice,
    ToolDefinition,
    ToolUse,
    calls_as_text,
    response_schema,
)
from service.runtime.constraints import Grammar
from service.runtime.errors import InvalidInput
from service.runtime.tasks.generation import MAX_TOP_N_TOKENS, GenerationParameters

COMPLETIONS_MAX_TOKENS = 16  # OpenAI's completions default (also for an explicit null)
COMPLETIONS_MAX_LOGPROBS = 5  # OpenAI's bound on completions' `logprobs`


class StreamOptions(BaseModel):
    include_usage: bool = False


class _Sampling(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: ModelName
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    n: int = Field(1, ge=1)
    stop: str | list[str] | None = None
    seed: int | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    presence_penalty: float | None = Field(None, ge=-2.0, le=2.0)
    frequency_penalty: float | None = Field(None, ge=-2.0, le=2.0)
    # Token id (as a string, JSON's object keys) -> bias added to its score, -100..100.
    logit_bias: dict[str, float] | None = None
    # Accepted and ignored, as other OpenAI-compatible servers do.
    user: str | None = None
    store: bool | None = None
    metadata: dict[str, str] | None = None
    service_tier: str | None = None

    def parameters(
        self,
        max_tokens: int | None,
        top_n_tokens: int | None = None,
        seed: int | None = None,
        grammar: Grammar | None = None,
    ) -> GenerationParameters:
        """The runtime's parameters; `max_tokens` None: as many as the context leaves, up to
        the server's `limits.max_new_tokens`. `seed` overrides the request's (one per choice)."""
        temperature = 1.0 if self.temperature is None else self.temperature
        stop = [self.stop] if isinstance(self.stop, str) else (self.stop or [])
        values: dict[str, Any] = {
            "do_sample": temperature > 0,
            "stop": stop,
            "seed": self.seed if seed is None else seed,
            "max_new_tokens": max_tokens,
            "presence_penalty": self.presence_penalty,
            "frequency_penalty": self.frequency_penalty,
            "top_n_tokens": top_n_tokens,
            "logit_bias": self._token_bias(),
            "grammar": grammar,
        }
        if temperature > 0:
            values["temperature"] = temperature
            if self.top_p is not None:
                values["top_p"] = self.top_p
        try:
            return GenerationParameters(**values)
        except ValidationError as err:  # e.g. too many stop strings, an empty one, seed < 0
            raise InvalidInput.from_validation(err.errors()) from None

    def _token_bias(self) -> dict[int, float]:
        bias = {}
        for key, value in (self.logit_bias or {}).items():
            if not key.lstrip("-").isdigit():
                raise InvalidInput(
                    f"logit_bias: keys are token ids, got {key!r}", field="logit_bias"
                )
            bias[int(key)] = value
        return bias

    def choice_seeds(self) -> list[int | None]:
        """One seed per choice: the request's seed, then seed + 1, ... (None: each its own)."""
        return [None if self.seed is None else self.seed + i for i in range(self.n)]


Prompt = Text | list[Text] | list[int] | list[list[int]]


class CompletionRequest(_Sampling):
    prompt: Prompt
    max_tokens: int | None = Field(COMPLETIONS_MAX_TOKENS, ge=1)
    echo: bool = False
    logprobs: int | None = Field(None, ge=0, le=COMPLETIONS_MAX_LOGPROBS)
    best_of: int | None = Field(None, ge=1)
    suffix: str | None = None

    @model_validator(mode="after")
    def _supported(self) -> CompletionRequest:
        if self.best_of not in (None, self.n):
            raise ValueError("best_of: only best_of equal to n is supported")
        if self.suffix:
            raise ValueError("suffix: these models do not insert text (suffix is not supported)")
        if isinstance(self.prompt, list) and not self.prompt:
            raise ValueError("prompt: at least one prompt is required")
        return self

    def prompts(self) -> list[str | list[int]]:
        """The prompts, each text or token ids (OpenAI's four prompt forms)."""
        if isinstance(self.prompt, str):
            return [self.prompt]
        if all(isinstance(p, int) for p in self.prompt):
            return [list(self.prompt)]  # type: ignore[arg-type]
        return list(self.prompt)  # type: ignore[arg-type]


class ChatMessage(BaseModel):
    role: Literal["system", "user", "assistant", "developer", "tool"]
    # None: an assistant turn that only called tools.
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: str | None = None

    @model_validator(mode="after")
    def _valid_unicode(self) -> ChatMessage:
        text = self.as_template_message()["content"]
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as err:  # a lone surrogate: JSON can carry "\ud800"
            raise ValueError(
                f"content is not valid Unicode: lone surrogate "
                f"U+{ord(text[err.start]):04X} at character {err.start}"
            ) from None
        return self

    def as_template_message(self, template_takes_tools: bool = False) -> dict[str, Any]:
        """The message as a chat template reads it. An assistant turn's calls go as
        transformers passes them to a template that takes tools, else as text in the call
        format the model was told (service/http/openai_tools.py)."""
        content = self.content or ""
        if isinstance(content, list):
            content = "".join(
                part.get("text", "") for part in content if part.get("type") == "text"
            )
        role = "system" if self.role == "developer" else self.role
        message: dict[str, Any] = {"role": role, "content": content}
        if self.tool_calls and template_takes_tools:
            message["tool_calls"] = [
                {"type": "function", "function": _parsed_arguments(c.get("function", {}))}
                for c in self.tool_calls
            ]
        elif self.tool_calls:
            message["content"] = "\n".join(
                p for p in (content, calls_as_text(self.tool_calls)) if p
            )
        if template_takes_tools and self.tool_call_id:
            message["tool_call_id"] = self.tool_call_id
        if template_takes_tools and self.name:
            message["name"] = self.name
        return message


def _parsed_arguments(function: dict[str, Any]) -> dict[str, Any]:
    """A call's function with its arguments as an object (what chat templates iterate over)."""
    arguments = function.get("arguments")
    if isinstance(arguments, str):
        with contextlib.suppress(ValueError):
            arguments = json.loads(arguments)
    return {**function, "arguments": arguments}


class ChatRequest(_Sampling):
    messages: list[ChatMessage] = Field(..., min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    logprobs: bool | None = None
    top_logprobs: int | None = Field(None, ge=0, le=MAX_TOP_N_TOKENS)
    response_format: ResponseFormat | None = None
    tools: list[ToolDefinition] | None = None
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: bool | None = None
    modalities: list[Literal["text"]] | None = None
    reasoning_effort: str | None = None
    _tool_use: ToolUse | None = PrivateAttr(default=None)
    _answer_schema: dict[str, Any] | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _supported(self) -> ChatRequest:
        if self.top_logprobs is not None and not self.logprobs:
            raise ValueError("top_logprobs: needs logprobs=true")
        self._answer_schema = response_schema(self.response_format)
        self._tool_use = ToolUse.of(self.tools, self.tool_choice, self.parallel_tool_calls)
        return self

    @property
    def tool_use(self) -> ToolUse | None:
        """How the model may call the request's tools (None: it may not)."""
        return self._tool_use

    def grammar(self) -> Grammar | None:
        """What the answer must follow: calls or an answer (tools), a JSON schema
        (`response_format`), or nothing."""
        if self._tool_use is not None:
            return self._tool_use.grammar(self._answer_schema)
        if self._answer_schema is not None:
            return Grammar.json_schema(self._answer_schema, "response_format")
        return None

    def template_messages(self, template_takes_tools: bool) -> list[dict[str, Any]]:
        """The messages for the chat template; the tools are described in a system turn when
        the template does not take them."""
        messages = [m.as_template_message(template_takes_tools) for m in self.messages]
        tools = self._tool_use
        if tools is not None and not template_takes_tools:
            prompt = tools.system_prompt()
            if messages[0]["role"] == "system":
                messages[0] = {**messages[0], "content": f"{messages[0]['content']}\n\n{prompt}"}
            else:
                messages.insert(0, {"role": "system", "content": prompt})
        return messages

    def top_n_tokens(self) -> int | None:
        """What the runtime reports with each token: None (no logprobs), else the alternatives."""
        return (self.top_logprobs or 0) if self.logprobs else None
