"""Structured generation through every door of the running server: TGI's `grammar`, OpenAI's
`response_format` and tools (with the unchanged `openai` client), KServe v2's parameters over
REST and gRPC, and the grammar cache's metrics.

The model is the tiny random-weight Llama with a chat template: its text is gibberish, so
whatever structure the answers have comes from the grammar.
"""

from __future__ import annotations

import json
import re
from typing import Literal

import jsonschema
import numpy as np
import pytest
import requests
import tritonclient.grpc as grpcclient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, Field

MODEL = "tiny-llama-chat"
SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 8},
        "count": {"type": "integer", "minimum": 0, "maximum": 99},
        "ok": {"type": "boolean"},
    },
    "required": ["name", "count", "ok"],
    "additionalProperties": False,
}
WEATHER = {
    "type": "function",
    "function": {
        "name": "weather",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "maxLength": 4}},
            "required": ["city"],
        },
    },
}
FUZZ = settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@pytest.fixture(scope="module")
def url(live_server) -> str:
    return live_server.url


@pytest.fixture(scope="module")
def openai_client(url):
    from openai import OpenAI

    return OpenAI(base_url=f"{url}/v1", api_key="unused")


def generate(url: str, grammar: dict, **parameters) -> requests.Response:
    body = {
        "inputs": "Hi",
        "model": MODEL,
        "parameters": {"max_new_tokens": 60, "grammar": grammar, **parameters},
    }
    return requests.post(f"{url}/generate", json=body, timeout=60)


def stream_text(url: str, grammar: dict, **parameters) -> tuple[str, str]:
    """TGI's stream: the tokens' texts joined, and the last event's generated_text."""
    body = {
        "inputs": "Hi",
        "model": MODEL,
        "parameters": {"max_new_tokens": 60, "grammar": grammar, **parameters},
    }
    response = requests.post(f"{url}/generate_stream", json=body, stream=True, timeout=60)
    assert response.status_code == 200, response.text
    events = [
        json.loads(line[len("data:") :])
        for line in response.iter_lines(decode_unicode=True)
        if line.startswith("data:")
    ]
    return "".join(e["token"]["text"] for e in events), events[-1]["generated_text"]


_FIELDS = st.dictionaries(
    st.text("abcdefgh", min_size=1, max_size=4),
    st.sampled_from(
        [
            {"type": "string", "maxLength": 5},
            {"type": "integer", "minimum": -50, "maximum": 50},
            {"type": "boolean"},
            {"enum": ["red", "green", 3]},
            {
                "type": "array",
                "items": {"type": "integer", "minimum": 0, "maximum": 9},
                "maxItems": 3,
            },
        ]
    ),
    min_size=1,
    max_size=4,
)
SCHEMAS = _FIELDS.map(
    lambda properties: {
        "type": "object",
        "properties": properties,
        "required": sorted(properties),
        "additionalProperties": False,
    }
)


@FUZZ
@given(schema=SCHEMAS, sample=st.booleans(), seed=st.integers(0, 1000))
def test_tgi_grammar_answers_parse_streamed_or_not(url, schema, sample, seed):
    grammar = {"type": "json", "value": schema}
    options = {"do_sample": sample, "seed": seed}
    response = generate(url, grammar, **options)
    assert response.status_code == 200, response.text
    text = response.json()["generated_text"]
    jsonschema.validate(json.loads(text), schema)
    joined, final = stream_text(url, grammar, **options)
    assert joined == final == text


def test_tgi_regex_grammar_and_a_schema_given_as_text(url):
    pattern = r"[0-9]{3}-[a-z]{2,4}"
    response = generate(url, {"type": "regex", "value": pattern})
    assert re.fullmatch(pattern, response.json()["generated_text"])
    as_text = generate(url, {"type": "json", "value": json.dumps(SCHEMA)})
    jsonschema.validate(json.loads(as_text.json()["generated_text"]), SCHEMA)


@pytest.mark.parametrize(
    "grammar, words",
    [
        ({"type": "regex", "value": "a(b"}, "unclosed group"),
        ({"type": "json", "value": {"type": "object", "if": {}}}, "Unimplemented keys"),
        ({"type": "yaml", "value": "x"}, "type"),
        ({"type": "json", "value": {"enum": ["x" * 40_000]}}, "grammar.max_bytes"),
    ],
)
def test_tgi_bad_grammars_are_422_naming_the_field(url, grammar, words):
    response = generate(url, grammar)
    assert response.status_code == 422, response.text
    assert response.json()["field"].startswith("parameters.grammar")
    assert words in response.json()["error"]


def test_the_server_keeps_serving_after_bad_grammars(url):
    generate(url, {"type": "regex", "value": "(((("})
    response = generate(url, {"type": "regex", "value": "(yes|no)"})
    assert response.json()["generated_text"] in ("yes", "no")


# --- OpenAI -------------------------------------------------------------------------------------


class Pet(BaseModel):
    name: str = Field(max_length=6)
    kind: Literal["cat", "dog", "fish"]
    age: int = Field(ge=0, le=30)


@pytest.mark.parametrize("temperature", [0, 1])
def test_openai_parse_with_a_pydantic_model_works_unchanged(openai_client, temperature):
    completion = openai_client.chat.completions.parse(
        model=MODEL,
        messages=[{"role": "user", "content": "Describe a pet."}],
        response_format=Pet,
        max_tokens=60,
        temperature=temperature,
        seed=5,
    )
    choice = completion.choices[0]
    assert choice.finish_reason == "stop"
    assert isinstance(choice.message.parsed, Pet)


def test_openai_json_object_and_json_schema_stream_the_same_text(openai_client):
    schema_format = {
        "type": "json_schema",
        "json_schema": {"name": "thing", "schema": SCHEMA, "strict": True},
    }
    whole = openai_client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "A thing?"}],
        response_format=schema_format,
        max_tokens=60,
        temperature=0,
    )
    text = whole.choices[0].message.content
    jsonschema.validate(json.loads(text), SCHEMA)
    pieces = openai_client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "A thing?"}],
        response_format=schema_format,
        max_tokens=60,
        temperature=0,
        stream=True,
    )
    assert "".join(c.choices[0].delta.content or "" for c in pieces if c.choices) == text
    any_object = openai_client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Anything, as JSON"}],
        response_format={"type": "json_object"},
        max_tokens=150,
        temperature=0,
    )
    if any_object.choices[0].finish_reason == "stop":
        assert isinstance(json.loads(any_object.choices[0].message.content), dict)
    else:  # cut by max_tokens: still a JSON object's beginning
        assert any_object.choices[0].message.content.startswith("{")


def _call(openai_client, messages, **options):
    return openai_client.chat.completions.create(
        **{"model": MODEL, "messages": messages, "tools": [WEATHER], "temperature": 0, **options}
    )


@pytest.mark.parametrize(
    "tool_choice", ["required", {"type": "function", "function": {"name": "weather"}}]
)
def test_openai_tool_call_round_trip(openai_client, tool_choice):
    """The model calls the function (arguments valid against its schema), the tool's answer goes
    back with the call, and the model answers in text."""
    messages = [{"role": "user", "content": "Weather in Oslo?"}]
    called = _call(
        openai_client, messages, tool_choice=tool_choice, parallel_tool_calls=False, max_tokens=60
    )
    choice = called.choices[0]
    assert choice.finish_reason == "tool_calls"
    (call,) = choice.message.tool_calls
    assert call.function.name == "weather"
    jsonschema.validate(json.loads(call.function.arguments), WEATHER["function"]["parameters"])
    streamed = _call(
        openai_client,
        messages,
        tool_choice=tool_choice,
        parallel_tool_calls=False,
        max_tokens=60,
        stream=True,
    )
    deltas = [c.choices[0] for c in streamed if c.choices]
    (streamed_call,) = [t for d in deltas for t in (d.delta.tool_calls or [])]
    assert streamed_call.function.arguments == call.function.arguments
    assert deltas[-1].finish_reason == "tool_calls"

    messages += [
        choice.message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": '{"celsius": 4}'},
    ]
    answered = _call(openai_client, messages, tool_choice="none", max_completion_tokens=5)
    assert answered.choices[0].message.tool_calls is None
    assert answered.choices[0].message.content
    # The call and the tool's answer were rendered into the prompt.
    alone = _call(openai_client, messages[:1], tool_choice="none", max_completion_tokens=1)
    assert answered.usage.prompt_tokens > alone.usage.prompt_tokens + 20


def test_openai_auto_tool_choice_answers_a_call_or_text(openai_client):
    for seed in range(4):
        choice = _call(
            openai_client,
            [{"role": "user", "content": "Weather in Oslo?"}],
            tool_choice="auto",
            temperature=1,
            seed=seed,
            max_tokens=60,
        ).choices[0]
        if choice.message.tool_calls:
            assert choice.message.content is None
            for call in choice.message.tool_calls:
                assert call.function.name == "weather"
                json.loads(call.function.arguments)
        else:
            assert not choice.message.content.startswith("<")


@pytest.mark.parametrize(
    "extra, param",
    [
        ({"tool_choice": {"type": "function", "function": {"name": "nope"}}}, "tool_choice"),
        ({"response_format": {"type": "json_schema"}}, "response_format"),
        ({"response_format": {"type": "xml"}}, "response_format"),
        ({"tools": [{"type": "function", "function": {"name": "bad name!"}}]}, "tools"),
        (
            {
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {"name": "x", "schema": {"if": {}}},
                }
            },
            "response_format",
        ),
    ],
)
def test_openai_bad_structured_requests_are_400_naming_the_param(url, extra, param):
    body = {"model": MODEL, "messages": [{"role": "user", "content": "x"}], "max_tokens": 5}
    body.update(extra)
    if "tool_choice" in extra:
        body["tools"] = [WEATHER]
    response = requests.post(f"{url}/v1/chat/completions", json=body, timeout=60)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"].startswith(param), response.json()


# --- KServe v2 ----------------------------------------------------------------------------------


def test_kserve_v2_generate_and_grpc_infer_take_the_grammar(url, live_server):
    grammar = {"type": "json", "value": SCHEMA}
    rest = requests.post(
        f"{url}/v2/models/{MODEL}/generate",
        json={"text_input": "Hi", "parameters": {"max_new_tokens": 60, "grammar": grammar}},
        timeout=60,
    )
    assert rest.status_code == 200, rest.text
    jsonschema.validate(json.loads(rest.json()["text_output"]), SCHEMA)

    client = grpcclient.InferenceServerClient(live_server.grpc_address)
    tensor = grpcclient.InferInput("text", [1], "BYTES")
    tensor.set_data_from_numpy(np.array([b"Hi"], dtype=object))
    # tritonclient's parameters are scalars: the grammar goes as its JSON text.
    result = client.infer(
        MODEL, [tensor], parameters={"max_new_tokens": 60, "grammar": json.dumps(grammar)}
    )
    (text,) = result.as_numpy("generated_text")
    text = text.decode() if isinstance(text, bytes) else text
    assert text == rest.json()["text_output"]


def test_grammar_cache_hits_and_compile_time_are_scraped(url):
    def lookups() -> dict[str, float]:
        found = {}
        for line in requests.get(f"{url}/metrics", timeout=10).text.splitlines():
            if line.startswith("nlp_grammar_cache_total{") and f'model="{MODEL}"' in line:
                found[re.search(r'result="(\w+)"', line).group(1)] = float(line.split()[-1])
        return found

    fresh = {"type": "regex", "value": "(north|south)-[0-9]{2}"}
    before = lookups()
    generate(url, fresh)
    generate(url, fresh)
    after = lookups()
    assert after["miss"] - before.get("miss", 0) == 1
    assert after["hit"] - before.get("hit", 0) == 1
    scraped = requests.get(f"{url}/metrics", timeout=10).text
    assert f'nlp_grammar_compile_seconds_count{{model="{MODEL}"}}' in scraped
