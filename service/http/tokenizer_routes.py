"""TGI's and TEI's model routes: `/info`, `/tokenize`, `/decode`.

The two servers share the paths but not every shape: TGI's `/tokenize` answers one flat list of
tokens for a prompt, TEI's a list per input with a `special` flag; TEI's `/decode` answers a
list of texts. A generation model answers `/tokenize` for one string as TGI does; any other
model, or a list of inputs, as TEI does. Requests name a model with `"model"` (`/info`: the
`model` query parameter); without one they speak for the default text-generation model, else
the first task's default.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from service.dataplane import TEXT_GENERATION, DataPlane, ServedModel
from service.http.errors import TASK_ERRORS
from service.http.fields import ModelName
from service.runtime.errors import InvalidInput
from service.runtime.tasks.generation import MAX_STOP_SEQUENCES

router = APIRouter(tags=["tgi-tei"], responses=TASK_ERRORS)
SERVER_VERSION = "0.1.0"
_DTYPES = {"int8": "int8", "int4": "int4"}


class TokenizeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    inputs: str | list[str] = Field(..., examples=["The house is small."])
    add_special_tokens: bool = True
    # TGI sends its generation parameters along; they do not change how text is tokenized.
    parameters: dict[str, Any] | None = None
    model: ModelName | None = None


class DecodeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    ids: list[int] | list[list[int]] = Field(..., examples=[[101, 2023, 102]])
    skip_special_tokens: bool = True
    model: ModelName | None = None


def _plane(request: Request) -> DataPlane:
    return request.app.state.plane


def _tokens(text: str, encoding: Any, with_special: bool) -> list[dict[str, Any]]:
    tokens = []
    for token_id, (start, stop), special in zip(
        encoding.ids, encoding.offsets, encoding.special_tokens_mask, strict=True
    ):
        token: dict[str, Any] = {
            "id": token_id,
            "text": text[start:stop],
            "start": start,
            "stop": stop,
        }
        if with_special:
            token["special"] = bool(special)
            if special:  # TEI: a special token has no place in the text
                token.update(text=encoding.tokens[len(tokens)], start=None, stop=None)
        tokens.append(token)
    return tokens


@router.post("/tokenize")
async def tokenize(body: TokenizeRequest, request: Request) -> Any:
    """Tokens with their character spans: TGI's shape for a generation model and one string,
    TEI's (a list per input, `special` flags) otherwise."""
    served = _plane(request).text_model(body.model)
    texts = [body.inputs] if isinstance(body.inputs, str) else body.inputs
    if not texts:
        raise InvalidInput("inputs: at least one text is required", field="inputs")
    encodings = served.tokenizer.encode_batch(list(texts), body.add_special_tokens)
    if served.task == TEXT_GENERATION and isinstance(body.inputs, str):
        return _tokens(texts[0], encodings[0], with_special=False)
    return [_tokens(t, e, with_special=True) for t, e in zip(texts, encodings, strict=True)]


@router.post("/decode", response_model=list[str])
async def decode(body: DecodeRequest, request: Request) -> Any:
    """TEI's `/decode`: one text per id list."""
    served = _plane(request).text_model(body.model)
    batches = body.ids if body.ids and isinstance(body.ids[0], list) else [body.ids]
    if not batches or not all(batches):
        raise InvalidInput("ids: at least one token id is required", field="ids")
    vocabulary = served.tokenizer.tokenizer.get_vocab_size(with_added_tokens=True)
    for ids in batches:
        bad = [i for i in ids if not 0 <= i < vocabulary]  # type: ignore[operator]
        if bad:
            raise InvalidInput(
                f"ids: {bad[0]} is not a token id of model {served.name!r} (0..{vocabulary - 1})",
                field="ids",
            )
    tokenizer = served.tokenizer
    return [
        tokenizer.decode(list(ids), skip_special_tokens=body.skip_special_tokens) for ids in batches
    ]


def _info(served: ServedModel, dp: DataPlane) -> dict[str, Any]:
    record, limits = served.record, dp.settings.limits
    max_input = served.max_input_tokens
    info: dict[str, Any] = {
        "model_id": record.name,
        "model_sha": record.version,
        "model_dtype": _DTYPES.get(record.quantization or "", "float32"),
        "model_device_type": "cpu",
        "model_pipeline_tag": record.task,
        "version": SERVER_VERSION,
        "max_client_batch_size": limits.max_inputs,
        "max_batch_tokens": dp.settings.batching.max_batch_tokens,
        "max_batch_requests": dp.settings.batching.max_batch_size,
        "max_input_length": max_input,
        # Ours, not TGI's or TEI's: the CPU class and the ORT choices made for it at start-up.
        "cpu": dp.tuning.as_dict(),
    }
    if record.task == TEXT_GENERATION:  # TGI's fields
        info.update(
            max_concurrent_requests=limits.max_concurrent_generations
            + limits.max_queued_generations,
            max_best_of=1,
            max_stop_sequences=MAX_STOP_SEQUENCES,
            max_input_tokens=(served.max_positions or 1) - 1,
            max_total_tokens=served.max_positions,
            validation_workers=1,
        )
    else:  # TEI's
        info.update(
            max_concurrent_requests=dp.settings.batching.max_queue,
            tokenization_workers=1,
            model_type={record.task: {}},
        )
        if served.pooling_modes is not None:
            info["model_type"] = {"embedding": {"pooling": "+".join(served.pooling_modes)}}
    return info


@router.get("/info")
async def info(request: Request, model: ModelName | None = Query(None)) -> dict[str, Any]:
    """TGI's and TEI's `/info` for one model: its id, version, type and the server's limits."""
    dp = _plane(request)
    return _info(dp.text_model(model), dp)
