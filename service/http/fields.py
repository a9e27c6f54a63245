"""Field types the HTTP schemas share."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints


def _not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("text must not be empty or only whitespace")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as err:  # a lone surrogate: JSON can carry "\ud800"
        raise ValueError(
            f"text is not valid Unicode: lone surrogate U+{ord(value[err.start]):04X}"
            f" at character {err.start}"
        ) from None
    return value


# Empty or whitespace-only text is refused: no model has anything to say about it.
Text = Annotated[str, AfterValidator(_not_blank)]
ModelName = Annotated[
    str, StringConstraints(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]*$")
]


class TaskRequest(BaseModel):
    """The envelope of every Hugging Face task payload: the task's `inputs` and `parameters`
    (declared by each task's request model) and which served model answers."""

    model_config = ConfigDict(extra="forbid")
    model: ModelName | None = Field(
        None, description="A served model name (GET /models); default: the task's default model"
    )


def as_list(inputs: str | list[str]) -> list[str]:
    """`inputs` as a list: one string is a batch of one."""
    return [inputs] if isinstance(inputs, str) else inputs


def like_inputs(results: list[Any], body: Any) -> Any:
    """The answer shaped as `body.inputs` was: one result for one string, the list for a list
    (as the pipelines return it and `InferenceClient` reads it)."""
    return results[0] if isinstance(body.inputs, str) else results
