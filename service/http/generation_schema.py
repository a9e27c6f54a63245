"""The TGI `/generate` payload: request schema, response and SSE event shapes.

`huggingface_hub.InferenceClient.text_generation` sends TGI's whole parameter set (unset ones as
null, a few booleans as false), so every TGI field is accepted here; the ones this server does not
implement are refused only when a caller actually turns them on.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from service.http.fields import ModelName, Text
from service.runtime.errors import ServingError
from service.runtime.tasks.generation import GenerationParameters

# TGI parameters we accept but do not implement: refused when set to anything but their default.
_UNSUPPORTED = {
    "best_of": (None, 1),
    "decoder_input_details": (None, False),
    "watermark": (None, False),
    "typical_p": (None, 1.0),
    "adapter_id": (None,),
}


class TGIParameters(GenerationParameters):
    """GenerationParameters plus TGI's fields that clients send even when unused."""

    model_config = ConfigDict(extra="forbid")
    best_of: int | None = None
    decoder_input_details: bool | None = None
    watermark: bool | None = None
    typical_p: float | None = None
    adapter_id: str | None = None

    @model_validator(mode="after")
    def _refuse_unsupported(self) -> TGIParameters:
        for name, defaults in _UNSUPPORTED.items():
            if getattr(self, name) not in defaults:
                raise ValueError(f"parameters.{name} is not supported by this server")
        return self

    def runtime(self) -> GenerationParameters:
        data = self.model_dump(exclude=set(_UNSUPPORTED))
        return GenerationParameters(**data)


class GenerateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    inputs: Text = Field(..., examples=["Once upon a time"])
    parameters: TGIParameters = Field(default_factory=TGIParameters)
    stream: bool = False
    model: ModelName | None = Field(None, description="A served text-generation model name")

    def to_runtime_parameters(self) -> GenerationParameters:
        return self.parameters.runtime()


def token_json(token: Any) -> dict[str, Any]:
    return {
        "id": int(token.id),
        "text": token.text,
        "logprob": float(token.logprob),
        "special": bool(token.special),
    }


def details_json(final: Any, tokens: list[Any] | None = None) -> dict[str, Any]:
    details: dict[str, Any] = {
        "finish_reason": final.finish_reason,
        "generated_tokens": final.generated_tokens,
        "seed": final.seed,
        "input_length": final.prompt_tokens,
        "prefill": [],
    }
    if tokens is not None:
        details["tokens"] = [token_json(t) for t in tokens]
        if any(t.top for t in tokens):  # TGI's `top_n_tokens`
            details["top_tokens"] = [top_tokens_json(t) for t in tokens]
    return details


def top_tokens_json(token: Any) -> list[dict[str, Any]]:
    return [
        {"id": i, "text": text, "logprob": logprob, "special": False}
        for i, text, logprob in token.top
    ]


def full_text(final: Any, body: GenerateRequest) -> str:
    prefix = body.inputs if body.parameters.return_full_text else ""
    return prefix + final.generated_text


def tgi_response(final: Any, body: GenerateRequest) -> dict[str, Any]:
    out: dict[str, Any] = {"generated_text": full_text(final, body)}
    if body.parameters.details:
        out["details"] = details_json(final, list(final.tokens))
    return out


async def generation_events_as_tgi_sse(
    first: Any, events: AsyncIterator[Any], body: GenerateRequest
) -> AsyncIterator[str]:
    """TGI's stream: one event per token; the last token's event carries the full text.
    Closing this generator (the client went away) closes `events`, which stops generation."""
    pending = first if getattr(first, "is_token", False) else None
    final = None if pending else first
    index = 0
    try:
        async for event in events:
            if getattr(event, "is_token", False):
                if pending is not None:
                    index += 1
                    yield _sse(
                        {
                            "index": index,
                            "token": token_json(pending),
                            "top_tokens": top_tokens_json(pending),
                            "generated_text": None,
                            "details": None,
                        }
                    )
                pending = event
            else:
                final = event
    except ServingError as exc:
        yield _sse({"error": exc.message, "error_type": type(exc).__name__})
        return
    finally:
        await events.aclose()
    if pending is not None and final is not None:
        index += 1
        yield _sse(
            {
                "index": index,
                "token": token_json(pending),
                "top_tokens": top_tokens_json(pending),
                "generated_text": full_text(final, body),
                "details": details_json(final) if body.parameters.details else None,
            }
        )


def _sse(payload: dict[str, Any]) -> str:
    return f"data:{json.dumps(payload, ensure_ascii=False)}\n\n"
