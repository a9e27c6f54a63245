"""OpenAI-compatible generation: /v1/completions, /v1/chat/completions, /v1/models.

The official `openai` client works unchanged with `base_url=http://HOST:PORT/v1`. OpenAI's
defaults are kept (temperature 1 samples; `max_tokens` 16 for completions); fields we cannot honour
(n > 1, logprobs, echo, penalties) are refused with the field named instead of silently ignored.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any, Literal

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from service.dataplane import DataPlane
from service.http import untrained
from service.http.errors import OPENAI_ERRORS, SSE_EVENT
from service.http.fields import ModelName, Text
from service.http.streaming import EventStreamResponse
from service.runtime.errors import InvalidInput, ServingError
from service.runtime.tasks.generation import GenerationParameters

router = APIRouter(prefix="/v1", tags=["openai"], responses=OPENAI_ERRORS)
TASK = "text-generation"


class StreamOptions(BaseModel):
    include_usage: bool = False


class _Sampling(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: ModelName
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    n: int = 1
    stop: str | list[str] | None = None
    seed: int | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logprobs: Any = None
    user: str | None = None

    @model_validator(mode="after")
    def _supported(self) -> _Sampling:
        if self.n != 1:
            raise ValueError("n: only n=1 is supported")
        if self.presence_penalty or self.frequency_penalty:
            raise ValueError("presence_penalty/frequency_penalty are not supported")
        if self.logprobs not in (None, False):
            raise ValueError("logprobs are not supported")
        return self

    def parameters(self, max_tokens: int | None) -> GenerationParameters:
        temperature = 1.0 if self.temperature is None else self.temperature
        stop = [self.stop] if isinstance(self.stop, str) else (self.stop or [])
        values: dict[str, Any] = {"do_sample": temperature > 0, "stop": stop, "seed": self.seed}
        if max_tokens is not None:
            values["max_new_tokens"] = max_tokens
        if temperature > 0:
            values["temperature"] = temperature
            if self.top_p is not None:
                values["top_p"] = self.top_p
        try:
            return GenerationParameters(**values)
        except ValidationError as err:  # e.g. too many stop strings, an empty one, seed < 0
            first = err.errors()[0]
            field = ".".join(str(part) for part in first["loc"]) or None
            raise InvalidInput(f"{field}: {first['msg']}", field=field) from None


class CompletionRequest(_Sampling):
    prompt: Text | list[Text]
    max_tokens: int | None = Field(16, ge=1)
    echo: bool = False

    @model_validator(mode="after")
    def _one_prompt(self) -> CompletionRequest:
        if isinstance(self.prompt, list) and len(self.prompt) != 1:
            raise ValueError("prompt: a list must hold exactly one prompt")
        if self.echo:
            raise ValueError("echo is not supported")
        return self

    @property
    def text(self) -> str:
        return self.prompt if isinstance(self.prompt, str) else self.prompt[0]


class ChatMessage(BaseModel):
    role: Literal["system", "user", "assistant", "developer", "tool"]
    content: str | list[dict[str, Any]]
    name: str | None = None

    @model_validator(mode="after")
    def _valid_unicode(self) -> ChatMessage:
        text = self.as_template_message()["content"]
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as err:  # a lone surrogate: JSON can carry "\ud800"
            raise ValueError(f"content is not valid Unicode: lone surrogate "
                             f"U+{ord(text[err.start]):04X} at character {err.start}") from None
        return self

    def as_template_message(self) -> dict[str, str]:
        content = self.content
        if isinstance(content, list):
            content = "".join(part.get("text", "") for part in content
                              if part.get("type") == "text")
        role = "system" if self.role == "developer" else self.role
        return {"role": role, "content": content}


class ChatRequest(_Sampling):
    messages: list[ChatMessage] = Field(..., min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)


def plane(request: Request) -> DataPlane:
    return request.app.state.plane


def _finish(reason: str) -> str:
    return "length" if reason == "length" else "stop"


def _usage(final: Any) -> dict[str, int]:
    return {"prompt_tokens": final.prompt_tokens, "completion_tokens": final.generated_tokens,
            "total_tokens": final.prompt_tokens + final.generated_tokens}


def _sse(payload: dict[str, Any] | str) -> str:
    data = payload if isinstance(payload, str) else json.dumps(payload, ensure_ascii=False)
    return f"data: {data}\n\n"


def _without_stop(final: Any) -> str:
    """OpenAI leaves the matched stop sequence (and anything after it) out of the text."""
    text = final.generated_text
    if final.stop_sequence:
        cut = text.find(final.stop_sequence)
        return text[:cut] if cut >= 0 else text
    return text


class _StopHoldback:
    """Streams text but keeps back the last characters that could begin a stop sequence, and
    cuts at the stop sequence once it appears, so a stop string never reaches the client."""

    def __init__(self, stops: list[str]) -> None:
        self.stops = stops
        self.hold = max((len(s) for s in stops), default=1) - 1
        self.text = ""
        self.sent = 0
        self.stopped = False

    def push(self, piece: str) -> str:
        if self.stopped:
            return ""
        self.text += piece
        found = [i for i in (self.text.find(s) for s in self.stops) if i >= 0]
        if found:
            self.stopped = True
            safe = min(found)
        else:
            safe = max(self.sent, len(self.text) - self.hold)
        out, self.sent = self.text[self.sent:safe], max(self.sent, safe)
        return out

    def finish(self, final_text: str) -> str:
        out = "" if self.stopped else final_text[self.sent:]
        self.sent = len(final_text)
        return out


async def _stream(events: AsyncIterator[Any], first: Any, chunk: Any, stops: list[str],
                  include_usage: bool, base: dict[str, Any]) -> AsyncIterator[str]:
    """OpenAI's SSE: one chunk per text piece, a closing chunk, optional usage, `[DONE]`.
    Closing this generator (the client went away) closes `events`, which stops generation."""
    final = None
    holdback = _StopHoldback(stops)
    try:
        event = first
        while True:
            if getattr(event, "is_token", False):
                piece = holdback.push(event.text)
                if piece:
                    yield _sse({**base, "choices": [chunk(piece, None)]})
            else:
                final = event
            event = await anext(events)
    except StopAsyncIteration:
        pass
    except ServingError as exc:
        yield _sse({"error": {"message": exc.message, "type": type(exc).__name__}})
    finally:
        await events.aclose()
    if final is not None:
        rest = holdback.finish(_without_stop(final))
        if rest:
            yield _sse({**base, "choices": [chunk(rest, None)]})
        yield _sse({**base, "choices": [chunk("", _finish(final.finish_reason))]})
        if include_usage:
            yield _sse({**base, "choices": [], "usage": _usage(final)})
    yield _sse("[DONE]")


async def _collect(events: AsyncIterator[Any]) -> Any:
    final = None
    async for event in events:
        if not getattr(event, "is_token", False):
            final = event
    return final


@router.get("/models")
async def list_models(request: Request) -> dict[str, Any]:
    """The generation models, as OpenAI's model list."""
    return {"object": "list", "data": [
        {"id": m["name"], "object": "model", "created": 0, "owned_by": "nlp-serving",
         "task": m["task"], "source": m["source"], "untrained": m["untrained"]}
        for m in plane(request).describe() if m["task"] == TASK]}


# Both answer JSON, or Server-Sent Events when the request has `"stream": true`.
_STREAMS = {200: {"description": "JSON; `text/event-stream` when `stream`",
                  "content": {"text/event-stream": {"schema": SSE_EVENT}}}}


@router.post("/completions", responses=_STREAMS)
async def completions(body: CompletionRequest, request: Request, response: Response) -> Any:
    dp = plane(request)
    served = dp.model(TASK, body.model)
    warning = untrained.headers_for(dp, TASK, served.name)
    params = body.parameters(body.max_tokens)
    events = dp.generate_stream(body.text, params, served.name, "http")
    base = {"id": f"cmpl-{uuid.uuid4().hex}", "object": "text_completion",
            "created": int(time.time()), "model": served.name}
    if body.stream:
        first = await anext(events)

        def chunk(text: str, finish: str | None) -> dict[str, Any]:
            return {"text": text, "index": 0, "logprobs": None, "finish_reason": finish}

        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return EventStreamResponse(
            _stream(events, first, chunk, params.stop, include_usage, base), headers=warning)
    final = await _collect(events)
    response.headers.update(warning)
    return {**base, "choices": [{"text": _without_stop(final), "index": 0, "logprobs": None,
                                 "finish_reason": _finish(final.finish_reason)}],
            "usage": _usage(final)}


@router.post("/chat/completions", responses=_STREAMS)
async def chat_completions(body: ChatRequest, request: Request, response: Response) -> Any:
    dp = plane(request)
    served = dp.model(TASK, body.model)
    if not served.runtime.chat_template:
        raise InvalidInput(f"model {served.name!r} has no chat template; use /v1/completions",
                           field="model")
    warning = untrained.headers_for(dp, TASK, served.name)
    prompt = served.runtime.apply_chat_template(
        [m.as_template_message() for m in body.messages])
    params = body.parameters(body.max_completion_tokens or body.max_tokens)
    # The template already holds the model's special tokens (a BOS must not be added twice).
    events = dp.generate_stream(prompt, params, served.name, "http", add_special_tokens=False)
    base = {"id": f"chatcmpl-{uuid.uuid4().hex}", "created": int(time.time()),
            "model": served.name}
    if body.stream:
        first = await anext(events)
        sent_role = False

        def chunk(text: str, finish: str | None) -> dict[str, Any]:
            nonlocal sent_role
            delta: dict[str, Any] = {} if finish else {"content": text}
            if not sent_role:
                delta["role"] = "assistant"
                sent_role = True
            return {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}

        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return EventStreamResponse(
            _stream(events, first, chunk, params.stop, include_usage,
                    {**base, "object": "chat.completion.chunk"}), headers=warning)
    final = await _collect(events)
    response.headers.update(warning)
    return {**base, "object": "chat.completion",
            "choices": [{"index": 0, "logprobs": None,
                         "message": {"role": "assistant", "content": _without_stop(final)},
                         "finish_reason": _finish(final.finish_reason)}],
            "usage": _usage(final)}
