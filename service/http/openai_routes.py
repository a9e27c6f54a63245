"""OpenAI-compatible generation: /v1/completions, /v1/chat/completions, /v1/models.

The official `openai` client works unchanged with `base_url=http://HOST:PORT/v1`. OpenAI's
defaults are kept (temperature 1 samples; `max_tokens` 16 for completions; chat without
`max_tokens` runs until the context or the server's `limits.max_new_tokens` ends it). `n`
choices (and every prompt of a prompt list) decode side by side in the model's batch, seeded
`seed`, `seed + 1`, ...; `logprobs`/`top_logprobs`, `presence_penalty`/`frequency_penalty`,
`logit_bias`, `stop`, `seed`, `echo` and `stream_options.include_usage` are honoured; the request
schema (service/http/openai_schema.py) says what is accepted and ignored. `response_format` and
`tools` constrain the answer with a grammar (service/http/openai_tools.py); a tool call's text is
held back while it streams and sent as one `tool_calls` delta when it closes.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from fastapi import APIRouter, Request, Response

from service.dataplane import DataPlane, ServedModel
from service.http import untrained
from service.http.errors import OPENAI_ERRORS, SSE_EVENT
from service.http.openai_schema import (
    COMPLETIONS_MAX_TOKENS,
    ChatRequest,
    CompletionRequest,
)
from service.http.openai_tools import CALL_OPEN, parse_calls
from service.http.streaming import EventStreamResponse
from service.runtime.errors import InvalidInput, ModelNotFound, ServingError
from service.runtime.tasks.generation import GenerationParameters

router = APIRouter(prefix="/v1", tags=["openai"], responses=OPENAI_ERRORS)
TASK = "text-generation"
# The tasks whose models /v1 serves (and lists): generation, and embeddings (/v1/embeddings).
OPENAI_TASKS = (TASK, "feature-extraction")


def plane(request: Request) -> DataPlane:
    return request.app.state.plane


def _model_object(dp: DataPlane, described: dict[str, Any]) -> dict[str, Any]:
    """OpenAI's model object; `created` is when the build was stored."""
    return {
        "id": described["name"],
        "object": "model",
        "created": dp.models[described["name"]].record.created,
        "owned_by": "nlp-serving",
        "task": described["task"],
        "source": described["source"],
        "untrained": described["untrained"],
    }


@router.get("/models")
async def list_models(request: Request) -> dict[str, Any]:
    """The generation and embedding models, as OpenAI's model list."""
    dp = plane(request)
    return {
        "object": "list",
        "data": [_model_object(dp, m) for m in dp.describe() if m["task"] in OPENAI_TASKS],
    }


@router.get("/models/{model_id}")
async def retrieve_model(model_id: str, request: Request) -> dict[str, Any]:
    """One model of the list (`openai.models.retrieve`)."""
    dp = plane(request)
    for described in dp.describe():
        if described["name"] == model_id and described["task"] in OPENAI_TASKS:
            return _model_object(dp, described)
    raise ModelNotFound(f"model {model_id!r} is not served over /v1; see GET /v1/models")


# --- one choice: its generation and how its text and logprobs are written ---------------------


def _finish(reason: str) -> str:
    return "length" if reason == "length" else "stop"


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
        out, self.sent = self.text[self.sent : safe], max(self.sent, safe)
        return out

    def finish(self, final_text: str) -> str:
        out = "" if self.stopped else final_text[self.sent :]
        self.sent = len(final_text)
        return out


def _chat_logprob(token: Any) -> dict[str, Any]:
    return {
        "token": token.piece,
        "logprob": token.logprob,
        "bytes": list(token.piece.encode("utf-8")),
        "top_logprobs": [
            {"token": text, "logprob": logprob, "bytes": list(text.encode("utf-8"))}
            for _, text, logprob in token.top
        ],
    }


def _completion_logprobs(tokens: list[Any], offset: int) -> dict[str, Any]:
    """Completions' legacy logprobs object for these tokens; `offset`: where their text starts."""
    offsets = []
    for token in tokens:
        offsets.append(offset)
        offset += len(token.piece)
    return {
        "tokens": [t.piece for t in tokens],
        "token_logprobs": [t.logprob for t in tokens],
        "top_logprobs": [{text: logprob for _, text, logprob in t.top} for t in tokens],
        "text_offset": offsets,
    }


@dataclass
class _Choice:
    """One choice of a request: the generation behind it, and its prompt (for usage and echo)."""

    index: int
    prompt_index: int
    events: AsyncIterator[Any]
    first: Any = None
    final: Any = None
    tokens: list[Any] = field(default_factory=list)


async def _open_choices(
    dp: DataPlane,
    served: ServedModel,
    prompts: list[Any],
    params: list[GenerationParameters],
    add_special_tokens: bool,
) -> list[_Choice]:
    """Every choice's generation, started (each one's first event awaited, so a refusal still
    gets its 4xx status); `params` holds one entry per choice of each prompt."""
    per_prompt = len(params)
    wanted = len(prompts) * per_prompt
    limit = dp.settings.limits.max_concurrent_generations
    if wanted > limit:
        raise InvalidInput(
            f"n: {wanted} choices ({len(prompts)} prompts x n={per_prompt}); at "
            f"most {limit} per request",
            field="n",
        )
    choices = [
        _Choice(
            p * per_prompt + i,
            p,
            dp.generate_stream(
                prompt, params[i], served.name, "http", add_special_tokens=add_special_tokens
            ),
        )
        for p, prompt in enumerate(prompts)
        for i in range(per_prompt)
    ]
    try:
        firsts = await asyncio.gather(*(anext(c.events) for c in choices))
    except BaseException:
        await asyncio.gather(*(c.events.aclose() for c in choices), return_exceptions=True)
        raise
    for choice, first in zip(choices, firsts, strict=True):
        choice.first = first
    return choices


async def _drain(choice: _Choice) -> None:
    event = choice.first
    while True:
        if getattr(event, "is_token", False):
            choice.tokens.append(event)
        else:
            choice.final = event
        try:
            event = await anext(choice.events)
        except StopAsyncIteration:
            return


def _usage(choices: list[_Choice]) -> dict[str, int]:
    """Each prompt counted once, every choice's completion tokens."""
    prompt_tokens = {c.prompt_index: c.final.prompt_tokens for c in choices if c.final}
    completion = sum(c.final.generated_tokens for c in choices if c.final)
    return {
        "prompt_tokens": sum(prompt_tokens.values()),
        "completion_tokens": completion,
        "total_tokens": sum(prompt_tokens.values()) + completion,
    }


def _sse(payload: dict[str, Any] | str) -> str:
    data = payload if isinstance(payload, str) else json.dumps(payload, ensure_ascii=False)
    return f"data: {data}\n\n"


class _CallHoldback:
    """Streams one choice's answer, but holds back text that is (or may still become) a tool
    call, and sends the calls as one `tool_calls` delta when the choice finishes (the openai
    client accumulates deltas, so one complete delta is a valid stream)."""

    def __init__(self) -> None:
        self.text = ""
        self.plain = False

    def delta(self, text: str, finish: str | None) -> tuple[dict[str, Any] | None, str | None]:
        """The delta to send for `text` (None: nothing yet) and the finish reason to give."""
        if self.plain:
            return ({} if finish else {"content": text}), finish
        self.text += text
        if not (self.text.startswith(CALL_OPEN) or CALL_OPEN.startswith(self.text)):
            self.plain = True  # an answer: what was held goes out now, the rest streams
            return {"content": self.text}, finish
        if finish is None:
            return None, None
        calls = parse_calls(self.text)
        if calls is None:  # cut short (length) before a call closed: the text as it is
            return ({"content": self.text} if self.text else {}), finish
        deltas = [{"index": i, **call} for i, call in enumerate(calls)]
        return {"tool_calls": deltas}, "tool_calls" if finish == "stop" else finish


def _chat_answer(final: Any, tools: bool) -> dict[str, Any]:
    """A finished choice's message and finish reason: its calls when it called tools."""
    text = _without_stop(final)
    calls = parse_calls(text) if tools else None
    if calls is not None:
        message = {"role": "assistant", "content": None, "tool_calls": calls}
        reason = "tool_calls" if final.finish_reason != "length" else "length"
        return {"message": message, "finish_reason": reason}
    message = {"role": "assistant", "content": text}
    return {"message": message, "finish_reason": _finish(final.finish_reason)}


# Chunk(choice, text, tokens whose logprobs go with it, finish reason or None) -> choice object,
# or None when there is nothing to send yet.
ChunkWriter = Callable[[_Choice, str, list[Any], str | None], dict[str, Any] | None]


async def _stream(
    choices: list[_Choice],
    chunk: ChunkWriter,
    stops: list[str],
    include_usage: bool,
    base: dict[str, Any],
) -> AsyncIterator[str]:
    """OpenAI's SSE for every choice: chunks as tokens arrive (choices interleaved), a closing
    chunk each, optional usage, `[DONE]`. Closing this generator (the client went away) closes
    every generation."""
    queue: asyncio.Queue[tuple[_Choice, Any]] = asyncio.Queue()
    done = object()

    async def pump(choice: _Choice) -> None:
        try:
            event = choice.first
            while True:
                await queue.put((choice, event))
                event = await anext(choice.events)
        except StopAsyncIteration:
            await queue.put((choice, done))
        except ServingError as exc:
            await queue.put((choice, exc))

    pumps = [asyncio.ensure_future(pump(c)) for c in choices]
    holdbacks = {c.index: _StopHoldback(stops) for c in choices}
    pending: dict[int, list[Any]] = {c.index: [] for c in choices}
    open_choices = len(choices)
    try:
        while open_choices:
            choice, event = await queue.get()
            if event is done or isinstance(event, ServingError):
                open_choices -= 1
                if isinstance(event, ServingError):
                    yield _sse(
                        {
                            "error": {
                                "message": event.message,
                                "type": event.kind,
                                "code": event.code,
                            }
                        }
                    )
                    return
                final = choice.final
                if final is not None:
                    rest = holdbacks[choice.index].finish(_without_stop(final))
                    if rest or pending[choice.index]:
                        written = chunk(choice, rest, pending[choice.index], None)
                        if written is not None:
                            yield _sse({**base, "choices": [written]})
                    written = chunk(choice, "", [], _finish(final.finish_reason))
                    if written is not None:
                        yield _sse({**base, "choices": [written]})
                continue
            if getattr(event, "is_token", False):
                pending[choice.index].append(event)
                piece = holdbacks[choice.index].push(event.text)
                if piece:
                    written = chunk(choice, piece, pending[choice.index], None)
                    if written is not None:
                        yield _sse({**base, "choices": [written]})
                        pending[choice.index] = []
            else:
                choice.final = event
        if include_usage:
            yield _sse({**base, "choices": [], "usage": _usage(choices)})
        yield _sse("[DONE]")
    finally:
        for task in pumps:
            task.cancel()
        await asyncio.gather(*pumps, return_exceptions=True)
        await asyncio.gather(*(c.events.aclose() for c in choices), return_exceptions=True)


# --- routes ---------------------------------------------------------------------------------

_STREAMS = {
    200: {
        "description": "JSON; `text/event-stream` when `stream`",
        "content": {"text/event-stream": {"schema": SSE_EVENT}},
    }
}


@router.post("/completions", responses=_STREAMS)
async def completions(body: CompletionRequest, request: Request, response: Response) -> Any:
    dp = plane(request)
    served = dp.model(TASK, body.model)
    warning = untrained.headers_for(dp, TASK, served.name)
    if body.echo and body.logprobs is not None:
        raise InvalidInput(
            "echo: the prompt's own logprobs are not computed; send echo or logprobs, not both",
            field="echo",
        )
    prompts = body.prompts()
    top_n = body.logprobs
    params = [
        body.parameters(body.max_tokens or COMPLETIONS_MAX_TOKENS, top_n, seed)
        for seed in body.choice_seeds()
    ]
    choices = await _open_choices(dp, served, prompts, params, add_special_tokens=True)
    tokenizer = served.tokenizer

    def echoed(choice: _Choice) -> str:
        prompt = prompts[choice.prompt_index]
        return (
            (prompt if isinstance(prompt, str) else tokenizer.decode(prompt)) if body.echo else ""
        )

    base = {
        "id": f"cmpl-{uuid.uuid4().hex}",
        "object": "text_completion",
        "created": int(time.time()),
        "model": served.name,
    }
    if body.stream:
        offsets: dict[int, int] = {}

        def chunk(
            choice: _Choice, text: str, tokens: list[Any], finish: str | None
        ) -> dict[str, Any]:
            prefix = "" if choice.index in offsets else echoed(choice)
            start = offsets.setdefault(choice.index, len(prefix))
            logprobs = None
            if top_n is not None and tokens:
                logprobs = _completion_logprobs(tokens, start)
                offsets[choice.index] = start + sum(len(t.piece) for t in tokens)
            return {
                "text": prefix + text,
                "index": choice.index,
                "logprobs": logprobs,
                "finish_reason": finish,
            }

        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return EventStreamResponse(
            _stream(choices, chunk, params[0].stop, include_usage, base), headers=warning
        )
    await asyncio.gather(*(_drain(c) for c in choices))
    response.headers.update(warning)
    return {
        **base,
        "choices": [
            {
                "text": echoed(c) + _without_stop(c.final),
                "index": c.index,
                "logprobs": None
                if top_n is None
                else _completion_logprobs(c.tokens, len(echoed(c))),
                "finish_reason": _finish(c.final.finish_reason),
            }
            for c in choices
        ],
        "usage": _usage(choices),
    }


@router.post("/chat/completions", responses=_STREAMS)
async def chat_completions(body: ChatRequest, request: Request, response: Response) -> Any:
    dp = plane(request)
    served = dp.model(TASK, body.model)
    takes_tools = served.template_takes_tools
    tool_use = body.tool_use
    prompt = served.chat_prompt(
        body.template_messages(takes_tools),
        tools=tool_use.template_tools() if tool_use is not None and takes_tools else None,
    )
    warning = untrained.headers_for(dp, TASK, served.name)
    top_n = body.top_n_tokens()
    grammar = body.grammar()
    params = [
        body.parameters(body.max_completion_tokens or body.max_tokens, top_n, seed, grammar)
        for seed in body.choice_seeds()
    ]
    # The template already holds the model's special tokens (a BOS must not be added twice).
    choices = await _open_choices(dp, served, [prompt], params, add_special_tokens=False)
    base = {"id": f"chatcmpl-{uuid.uuid4().hex}", "created": int(time.time()), "model": served.name}
    if body.stream:
        greeted: set[int] = set()
        calls = {c.index: _CallHoldback() for c in choices} if tool_use is not None else {}

        def chunk(
            choice: _Choice, text: str, tokens: list[Any], finish: str | None
        ) -> dict[str, Any] | None:
            delta: dict[str, Any] | None = {} if finish else {"content": text}
            if choice.index in calls:
                delta, finish = calls[choice.index].delta(text, finish)
                if delta is None:
                    return None
            if choice.index not in greeted:
                delta["role"] = "assistant"
                greeted.add(choice.index)
            logprobs = None
            if top_n is not None and tokens:
                logprobs = {"content": [_chat_logprob(t) for t in tokens]}
            return {
                "index": choice.index,
                "delta": delta,
                "logprobs": logprobs,
                "finish_reason": finish,
            }

        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return EventStreamResponse(
            _stream(
                choices,
                chunk,
                params[0].stop,
                include_usage,
                {**base, "object": "chat.completion.chunk"},
            ),
            headers=warning,
        )
    await asyncio.gather(*(_drain(c) for c in choices))
    response.headers.update(warning)
    return {
        **base,
        "object": "chat.completion",
        "choices": [
            {
                "index": c.index,
                "logprobs": None
                if top_n is None
                else {"content": [_chat_logprob(t) for t in c.tokens]},
                **_chat_answer(c.final, tool_use is not None),
            }
            for c in choices
        ],
        "usage": _usage(choices),
    }
