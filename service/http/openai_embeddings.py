"""OpenAI's `/v1/embeddings` over the embedding models: what RAG frameworks call by default.

Requests run through the same data plane, batcher and metrics as `/embed`. `encoding_format`
`base64` (which the `openai` client asks for unless told otherwise) is the float32 vector's
little-endian bytes; `dimensions` is honoured only where it asks for the model's own size (no
model here is trained to be shortened), otherwise refused naming it. `usage` counts the tokens
each input is embedded from.
"""

from __future__ import annotations

import base64
from typing import Any, Literal

import numpy as np
from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from service.dataplane import DataPlane
from service.http import untrained
from service.http.errors import OPENAI_ERRORS
from service.http.fields import ModelName, Text
from service.runtime.errors import InvalidInput
from service.runtime.tasks.embeddings import EmbeddingParameters

router = APIRouter(prefix="/v1", tags=["openai"], responses=OPENAI_ERRORS)
TASK = "feature-extraction"


class EmbeddingsRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    input: Text | list[Text] | list[int] | list[list[int]] = Field(
        ..., examples=["A sentence to embed."]
    )
    model: ModelName
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(None, ge=1)
    user: str | None = Field(None, description="accepted and ignored, as other servers do")

    def texts(self) -> list[str]:
        values = [self.input] if isinstance(self.input, str) else list(self.input)
        if not values:
            raise InvalidInput("input: at least one input is required", field="input")
        if not all(isinstance(v, str) for v in values):
            # Token ids of OpenAI's tokenizer mean nothing to these models' vocabularies
            # (langchain-openai: `check_embedding_ctx_length=False` sends text).
            raise InvalidInput("input: token-id input is not supported; send text", field="input")
        return values


def _encoded(vector: list[float], encoding_format: str) -> list[float] | str:
    if encoding_format == "base64":
        return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode("ascii")
    return vector


@router.post("/embeddings")
async def embeddings(
    body: EmbeddingsRequest, request: Request, response: Response
) -> dict[str, Any]:
    """Embeddings (`openai.embeddings.create`): one vector per input, in input order."""
    dp: DataPlane = request.app.state.plane
    texts = body.texts()
    most = request.app.state.settings.limits.max_inputs
    if len(texts) > most:  # the data plane would name `inputs`; OpenAI's field is `input`
        raise InvalidInput(f"input: {len(texts)} inputs; at most {most} per request", field="input")
    served = dp.model(TASK, body.model)
    dimension = served.embedding_dimension
    if body.dimensions is not None and body.dimensions != dimension:
        raise InvalidInput(
            f"dimensions: model {served.name!r} gives {dimension}-"
            "dimensional vectors and cannot shorten them",
            field="dimensions",
        )
    # OpenAI's embeddings cut over-long inputs instead of refusing them.
    options = EmbeddingParameters(truncate=True)
    vectors = await dp.run_batched(TASK, [(t, options) for t in texts], served.name, "http")
    tokens = served.count_tokens(texts, options)
    response.headers.update(untrained.headers_for(dp, TASK, served.name))
    return {
        "object": "list",
        "data": [
            {"object": "embedding", "index": i, "embedding": _encoded(vector, body.encoding_format)}
            for i, vector in enumerate(vectors)
        ],
        "model": served.name,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }
