"""OpenAI's structured outputs (`response_format`) and tool calls (`tools`), as grammars.

Both become one grammar for the decode loop (service/runtime/constraints.py), so what the model
writes always parses:

- `response_format: {"type": "json_object"}` is any JSON object; `{"type": "json_schema",
  "json_schema": {"name", "schema", "strict"}}` is that schema (applied whether or not `strict`).
- Tools: the model is told the functions and one format, `<tool_call>{"name": ..., "arguments":
  {...}}</tool_call>` (Hermes-style tags, which instruction-tuned models have seen), and the
  grammar holds it to that format with each function's `parameters` schema. `tool_choice`
  `"required"` or a named function allows only calls (of that function); `"auto"` allows calls
  or a plain answer, which then may not start with "<" (so the first character decides which
  it is); `"none"` allows no call. Up to `MAX_CALLS` calls in one answer unless
  `parallel_tool_calls` is false.
- A chat template that knows tools (it mentions `tools`) receives them as transformers passes
  them; otherwise the functions are described in a system message. An assistant turn that made
  calls is rendered back in the same tag format, so a tool-calling round trip reads naturally.
"""

from __future__ import annotations

import json
import re
import uuid
from contextlib import suppress
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from service.runtime.constraints import JSON_OPTIONS, Grammar

CALL_OPEN, CALL_CLOSE = "<tool_call>", "</tool_call>"
MAX_CALLS = 4  # calls in one answer with parallel_tool_calls (OpenAI sets no number)
FUNCTION_NAME = r"^[A-Za-z0-9_-]{1,64}$"  # OpenAI's rule for function names
_CALLS = re.compile(re.escape(CALL_OPEN) + r"(.*?)" + re.escape(CALL_CLOSE), re.DOTALL)


class JsonSchemaFormat(BaseModel):
    name: str = Field(..., pattern=FUNCTION_NAME)
    description: str | None = None
    # OpenAI's "schema" key (a pydantic BaseModel attribute name, hence the alias).
    schema_: dict[str, Any] | None = Field(None, alias="schema")
    strict: bool | None = None


class ResponseFormat(BaseModel):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None


class FunctionDefinition(BaseModel):
    name: str = Field(..., pattern=FUNCTION_NAME)
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class ToolDefinition(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["function"]
    function: FunctionDefinition


class NamedFunction(BaseModel):
    name: str


class NamedToolChoice(BaseModel):
    type: Literal["function"]
    function: NamedFunction


ToolChoice = Literal["none", "auto", "required"] | NamedToolChoice


def response_schema(response_format: ResponseFormat | None) -> dict[str, Any] | None:
    """The JSON schema the answer must follow, or None for free text."""
    if response_format is None or response_format.type == "text":
        return None
    if response_format.type == "json_object":
        return {"type": "object"}
    if response_format.json_schema is None:
        raise ValueError('response_format: "json_schema" needs a json_schema object')
    return response_format.json_schema.schema_ or {"type": "object"}


@dataclass
class ToolUse:
    """The tools a request lets the model call and how: its grammar, its prompt, its parser."""

    tools: list[FunctionDefinition]
    choice: Literal["auto", "required"] | str  # or the one function's name
    parallel: bool = True

    @classmethod
    def of(
        cls,
        tools: list[ToolDefinition] | None,
        choice: ToolChoice | None,
        parallel: bool | None,
    ) -> ToolUse | None:
        """None when no call is possible (no tools, or `tool_choice: "none"`)."""
        if not tools or choice == "none":
            if isinstance(choice, NamedToolChoice) or choice == "required":
                raise ValueError("tool_choice: the request has no tools to call")
            return None
        functions = [t.function for t in tools]
        names = [f.name for f in functions]
        if len(set(names)) != len(names):
            raise ValueError("tools: function names must be unique")
        if isinstance(choice, NamedToolChoice):
            if choice.function.name not in names:
                raise ValueError(
                    f"tool_choice: no function named {choice.function.name!r} among the tools"
                )
            return cls(functions, choice.function.name, parallel is not False)
        return cls(functions, choice or "auto", parallel is not False)

    @property
    def callable(self) -> list[FunctionDefinition]:
        if self.choice in ("auto", "required"):
            return self.tools
        return [f for f in self.tools if f.name == self.choice]

    def grammar(self, answer_schema: dict[str, Any] | None) -> Grammar:
        """Calls only (`required`, a named function), or calls or an answer (`auto`); the answer
        follows `answer_schema` when the request has a JSON response format."""
        call = {
            "anyOf": [
                {
                    "type": "object",
                    "properties": {
                        "name": {"const": f.name},
                        "arguments": f.parameters or {"type": "object"},
                    },
                    "required": ["name", "arguments"],
                    "additionalProperties": False,
                }
                for f in self.callable
            ],
            "x-guidance": JSON_OPTIONS,
        }
        repeat = f'("\\n" call)~0..{MAX_CALLS - 1}' if self.parallel else ""
        rules = [
            f"calls: call {repeat}",
            f"call: {json.dumps(CALL_OPEN)} %json {json.dumps(call)} {json.dumps(CALL_CLOSE)}",
        ]
        if self.choice == "auto":
            if answer_schema is None:
                answer = 'answer: /[^<](?s:.*)/ | ""'
            else:
                answer = (
                    f"answer: %json {json.dumps({**answer_schema, 'x-guidance': JSON_OPTIONS})}"
                )
            rules = ["start: answer | calls", answer, *rules]
        else:
            rules = ["start: calls", *rules]
        return Grammar(type="lark", value="\n".join(rules)).named("tools")

    def system_prompt(self) -> str:
        """The functions and the call format, for a chat template that does not take tools
        (kept short: small models have small contexts)."""
        described = "\n".join(
            json.dumps(
                {
                    "name": f.name,
                    **({"description": f.description} if f.description else {}),
                    "parameters": f.parameters or {"type": "object"},
                },
                ensure_ascii=False,
                separators=(",", ":"),
            )
            for f in self.tools
        )
        how = "You must call one." if self.choice != "auto" else "Call one only if it helps."
        return (
            f"Functions:\n{described}\n{how} Call as "
            f'{CALL_OPEN}{{"name": ..., "arguments": {{...}}}}{CALL_CLOSE}'
        )

    def template_tools(self) -> list[dict[str, Any]]:
        """The tools as transformers hands them to a chat template."""
        return [
            {"type": "function", "function": f.model_dump(exclude_none=True)} for f in self.tools
        ]


def parse_calls(text: str) -> list[dict[str, Any]] | None:
    """OpenAI `tool_calls` from an answer written in the call format; None for a plain answer
    (or one cut short before its first call closed)."""
    if not text.startswith(CALL_OPEN):
        return None
    calls = []
    for body in _CALLS.findall(text):
        try:
            call = json.loads(body)
        except ValueError:
            return None
        calls.append(
            {
                "id": f"call_{uuid.uuid4().hex[:24]}",
                "type": "function",
                "function": {
                    "name": call["name"],
                    "arguments": json.dumps(call["arguments"], ensure_ascii=False),
                },
            }
        )
    return calls or None


def calls_as_text(tool_calls: list[dict[str, Any]]) -> str:
    """An assistant turn's calls in the call format (for templates that do not render them)."""
    parts = []
    for call in tool_calls:
        function = call.get("function", {})
        arguments = function.get("arguments", "{}")
        if isinstance(arguments, str):
            with suppress(ValueError):  # else sent as it came
                arguments = json.loads(arguments)
        parts.append(
            CALL_OPEN
            + json.dumps({"name": function.get("name"), "arguments": arguments}, ensure_ascii=False)
            + CALL_CLOSE
        )
    return "\n".join(parts)
