"""Real clients, unchanged, against the running service: `huggingface_hub.InferenceClient` and
the official `openai` client."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import requests

from loadtests.server_process import ROOT
from models.cpu import cpu_class, cpu_flags
from models.tiny import MAX_POSITIONS

PROMPT = "The best part of the film was"


@pytest.fixture(scope="module")
def url(live_server) -> str:
    return live_server.url


def run_client_script(script: str) -> dict:
    """Run a client script in a child process (InferenceClient refuses to run under
    HF_HUB_OFFLINE=1; the script only talks to our URLs) and read the JSON it prints last."""
    env = {
        k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    }
    env["HF_HUB_DISABLE_TELEMETRY"] = "1"
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def run_inference_client(url: str) -> dict:
    """InferenceClient refuses to run under HF_HUB_OFFLINE=1, so it runs in a child process
    without it; it only talks to our URLs."""
    script = textwrap.dedent(f"""
        import json
        from huggingface_hub import InferenceClient
        url = {url!r}
        out = {{}}
        labels = InferenceClient(model=url + "/classify").text_classification(
            "A warm and funny film.", top_k=2)
        out["classify"] = [[e.label, e.score] for e in labels]
        answer = InferenceClient(model=url + "/answer").question_answering(
            question="Where does the cat sleep?", context="The cat sleeps on the mat all day.")
        out["answer"] = [answer.answer, answer.start, answer.end, answer.score]
        gen = InferenceClient(model=url + "/generate")
        out["generate"] = gen.text_generation({PROMPT!r}, max_new_tokens=8)
        out["generate_details"] = gen.text_generation({PROMPT!r}, max_new_tokens=8,
                                                       details=True).details.finish_reason
        out["generate_stream"] = list(gen.text_generation({PROMPT!r}, max_new_tokens=8,
                                                          stream=True))
        out["translate"] = InferenceClient(model=url + "/translate").translation(
            "The house is small.").translation_text
        # Every parameter of the HF task specs, as the client sends them.
        out["classify_spec"] = [[e.label, e.score] for e in InferenceClient(
            model=url + "/classify").text_classification("A warm and funny film.", top_k=2,
                                                         function_to_apply="sigmoid")]
        answers = InferenceClient(model=url + "/answer").question_answering(
            question="Where does the cat sleep?", context="The cat sleeps on the mat all day.",
            top_k=2, doc_stride=32, max_answer_len=5, max_question_len=32, max_seq_len=64,
            handle_impossible_answer=False, align_to_words=False)
        out["answer_spec"] = [[a.answer, a.start, a.end, a.score] for a in answers]
        out["translate_spec"] = InferenceClient(model=url + "/translate").translation(
            "The house is small.", src_lang="en", tgt_lang="fr",
            clean_up_tokenization_spaces=True, truncation="longest_first",
            generate_parameters={{"max_new_tokens": 6, "num_beams": 2,
                                  "early_stopping": True}}).translation_text
        out["embed"] = InferenceClient(model=url + "/embed").feature_extraction(
            "The house is small.").tolist()
        out["embed_normalized"] = InferenceClient(model=url + "/embed").feature_extraction(
            "The house is small.", normalize=True, truncate=True).tolist()
        print(json.dumps(out))
    """)
    return run_client_script(script)


def post(url: str, path: str, body: dict) -> object:
    response = requests.post(f"{url}{path}", json=body, timeout=60)
    response.raise_for_status()
    return response.json()


def test_huggingface_inference_client_works_unchanged(url):
    out = run_inference_client(url)
    direct = post(
        url, "/classify", {"inputs": "A warm and funny film.", "parameters": {"top_k": 2}}
    )[0]
    assert out["classify"] == [[d["label"], d["score"]] for d in direct]
    answer = post(
        url,
        "/answer",
        {
            "inputs": {
                "question": "Where does the cat sleep?",
                "context": "The cat sleeps on the mat all day.",
            }
        },
    )
    assert out["answer"] == [answer["answer"], answer["start"], answer["end"], answer["score"]]
    generated = post(url, "/generate", {"inputs": PROMPT, "parameters": {"max_new_tokens": 8}})
    assert out["generate"] == generated["generated_text"]
    assert "".join(out["generate_stream"]) == generated["generated_text"]
    assert out["generate_details"] == "length"
    assert (
        out["translate"]
        == post(url, "/translate", {"inputs": "The house is small."})[0]["translation_text"]
    )
    assert out["embed"] == post(url, "/embed", {"inputs": "The house is small."})
    # The spec parameters reach the model: each answer equals the one this service's own
    # (older) parameter names ask for.
    assert out["classify_spec"] == [
        [d["label"], d["score"]]
        for d in post(
            url,
            "/classify",
            {
                "inputs": "A warm and funny film.",
                "parameters": {"top_k": 2, "function_to_apply": "sigmoid"},
            },
        )[0]
    ]
    assert out["classify_spec"] != out["classify"]  # sigmoid, not the default softmax
    answers = post(
        url,
        "/answer",
        {
            "inputs": {
                "question": "Where does the cat sleep?",
                "context": "The cat sleeps on the mat all day.",
            },
            "parameters": {
                "top_k": 2,
                "doc_stride": 32,
                "max_answer_len": 5,
                "max_seq_len": 64,
                "align_to_words": False,
            },
        },
    )
    assert out["answer_spec"] == [[a["answer"], a["start"], a["end"], a["score"]] for a in answers]
    assert (
        out["translate_spec"]
        == post(
            url,
            "/translate",
            {
                "inputs": "The house is small.",
                "parameters": {
                    "src_lang": "en",
                    "tgt_lang": "fr",
                    "max_new_tokens": 6,
                    "num_beams": 2,
                    "clean_up_tokenization_spaces": True,
                    "truncate": True,
                    "generate_parameters": {"early_stopping": True},
                },
            },
        )[0]["translation_text"]
    )
    # The client sends the options at the top level, as TEI and the HF spec define them.
    assert out["embed_normalized"] == post(
        url,
        "/embed",
        {"inputs": "The house is small.", "parameters": {"normalize": True, "truncate": True}},
    )


@pytest.fixture(scope="module")
def openai_client(url):
    from openai import OpenAI

    return OpenAI(base_url=f"{url}/v1", api_key="unused")


def test_openai_models_lists_generation_and_embedding_models(openai_client):
    import openai

    models = {m.id: m for m in openai_client.models.list()}
    assert set(models) == {
        "tiny-llama-chat",
        "tiny-llama-chat-genai",
        "tiny-llama-chat-int4",
        "tiny-gpt2",
        "tiny-bert-embedder",
    }
    assert all(m.created > 1_700_000_000 for m in models.values())  # when the build was stored
    retrieved = openai_client.models.retrieve("tiny-gpt2")
    assert (retrieved.id, retrieved.created) == ("tiny-gpt2", models["tiny-gpt2"].created)
    with pytest.raises(openai.NotFoundError) as missing:
        openai_client.models.retrieve("no-such-model")
    assert missing.value.body["code"] == "model_not_found"
    assert missing.value.body["type"] == "invalid_request_error"


def test_openai_embeddings_equal_embed_in_both_encodings(openai_client, url):
    import openai

    texts = ["The house is small.", "A warm and funny film about two old friends."]
    expected = post(url, "/embed", {"inputs": texts, "model": "tiny-bert-embedder"})
    default = openai_client.embeddings.create(model="tiny-bert-embedder", input=texts)  # base64
    as_floats = openai_client.embeddings.create(
        model="tiny-bert-embedder", input=texts, encoding_format="float"
    )
    for result in (default, as_floats):
        assert [d.index for d in result.data] == [0, 1]
        for got, want in zip(result.data, expected, strict=True):
            assert len(got.embedding) == len(want)
            assert max(abs(a - b) for a, b in zip(got.embedding, want, strict=True)) < 1e-6
    assert as_floats.usage.prompt_tokens == as_floats.usage.total_tokens > len(texts)
    dimension = len(expected[0])
    assert (
        openai_client.embeddings.create(model="tiny-bert-embedder", input="x", dimensions=dimension)
        .data[0]
        .embedding
    )
    with pytest.raises(openai.BadRequestError) as shorter:
        openai_client.embeddings.create(
            model="tiny-bert-embedder", input="x", dimensions=dimension - 1
        )
    assert shorter.value.body["param"] == "dimensions"
    with pytest.raises(openai.BadRequestError) as ids:
        openai_client.embeddings.create(model="tiny-bert-embedder", input=[[1, 2, 3]])
    assert ids.value.body["param"] == "input"


def test_openai_chat_without_max_tokens_runs_to_the_end_of_the_context(openai_client):
    """No 20-token default: the context (or the server's `limits.max_new_tokens`) ends it. The
    random tiny Llama (256 positions) never picks its end-of-sequence token greedily here."""
    chat = openai_client.chat.completions.create(
        model="tiny-llama-chat",
        messages=[{"role": "user", "content": "Tell a long story."}],
        temperature=0,
    )
    assert chat.choices[0].finish_reason == "length"
    assert chat.usage.prompt_tokens + chat.usage.completion_tokens == 2 * MAX_POSITIONS


def test_builder_graph_from_the_catalog_serves_the_tokens_of_optimums_export(openai_client, url):
    """`graph: genai` (fused attention, right-padded cache) is a different graph of the same
    weights: greedy text through every door equals the Optimum export's; the int4 variant
    serves too (its tokens may differ: 4-bit weights)."""
    prompts = [PROMPT, "Hi", "A long afternoon by the river, with nothing to do but watch"]

    def generate(model: str) -> list:
        return [
            post(
                url,
                "/generate",
                {"inputs": p, "model": model, "parameters": {"max_new_tokens": 12}},
            )
            for p in prompts
        ]

    assert generate("tiny-llama-chat-genai") == generate("tiny-llama-chat")
    assert all(isinstance(g["generated_text"], str) for g in generate("tiny-llama-chat-int4"))
    completion = openai_client.completions.create(
        model="tiny-llama-chat-genai", prompt=PROMPT, max_tokens=8, temperature=0
    )
    assert (
        completion.choices[0].text
        == openai_client.completions.create(
            model="tiny-llama-chat", prompt=PROMPT, max_tokens=8, temperature=0
        )
        .choices[0]
        .text
    )
    described = {m["name"]: m for m in requests.get(f"{url}/models", timeout=30).json()}
    assert described["tiny-llama-chat-int4"]["quantization"] == "int4"
    assert described["tiny-llama-chat-genai"]["graph"] == "genai"
    assert described["tiny-llama-chat"]["graph"] == "optimum"


def test_openai_completion_equals_greedy_generate(openai_client, url):
    completion = openai_client.completions.create(
        model="tiny-gpt2", prompt=PROMPT, max_tokens=8, temperature=0
    )
    expected = post(
        url,
        "/generate",
        {"inputs": PROMPT, "model": "tiny-gpt2", "parameters": {"max_new_tokens": 8}},
    )
    assert completion.choices[0].text == expected["generated_text"]
    assert completion.choices[0].finish_reason == "length"
    assert completion.usage.completion_tokens == 8
    assert completion.usage.prompt_tokens > 0
    assert completion.usage.total_tokens == (
        completion.usage.prompt_tokens + completion.usage.completion_tokens
    )


def test_openai_completion_stream_ends_with_done(openai_client, url):
    stream = openai_client.completions.create(
        model="tiny-gpt2",
        prompt=PROMPT,
        max_tokens=8,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].text for c in chunks if c.choices)
    expected = (
        openai_client.completions.create(
            model="tiny-gpt2", prompt=PROMPT, max_tokens=8, temperature=0
        )
        .choices[0]
        .text
    )
    assert text == expected
    assert chunks[-1].usage.completion_tokens == 8
    raw = requests.post(
        f"{url}/v1/completions",
        timeout=60,
        json={"model": "tiny-gpt2", "prompt": PROMPT, "max_tokens": 3, "stream": True},
    ).text
    assert raw.rstrip().endswith("data: [DONE]")


def test_openai_chat_uses_the_models_chat_template(openai_client, url, tiny_checkpoint):
    from transformers import AutoTokenizer

    messages = [{"role": "user", "content": "Name a colour."}]
    chat = openai_client.chat.completions.create(
        model="tiny-llama-chat", messages=messages, max_tokens=6, temperature=0
    )
    prompt = AutoTokenizer.from_pretrained(tiny_checkpoint("llama-chat")).apply_chat_template(
        messages, tokenize=False, add_generation_prompt=True
    )
    expected = post(
        url,
        "/generate",
        {"inputs": prompt, "model": "tiny-llama-chat", "parameters": {"max_new_tokens": 6}},
    )
    assert chat.choices[0].message.role == "assistant"
    assert chat.choices[0].message.content == expected["generated_text"]
    streamed = openai_client.chat.completions.create(
        model="tiny-llama-chat", messages=messages, max_tokens=6, temperature=0, stream=True
    )
    text = "".join(c.choices[0].delta.content or "" for c in streamed if c.choices)
    assert text == chat.choices[0].message.content


def test_openai_stop_sequence_is_left_out(openai_client):
    full = (
        openai_client.completions.create(
            model="tiny-gpt2", prompt=PROMPT, max_tokens=12, temperature=0
        )
        .choices[0]
        .text
    )
    stop = full[3:6]
    cut = openai_client.completions.create(
        model="tiny-gpt2", prompt=PROMPT, max_tokens=12, temperature=0, stop=[stop]
    )
    assert cut.choices[0].text == full[: full.index(stop)]
    assert cut.choices[0].finish_reason == "stop"
    streamed = openai_client.completions.create(
        model="tiny-gpt2", prompt=PROMPT, max_tokens=12, temperature=0, stop=[stop], stream=True
    )
    assert "".join(c.choices[0].text for c in streamed if c.choices) == cut.choices[0].text


def test_openai_errors_reach_the_client(openai_client):
    import openai

    with pytest.raises(openai.NotFoundError):
        openai_client.completions.create(model="no-such-model", prompt="x")
    with pytest.raises(openai.BadRequestError) as info:  # more choices than decode slots
        openai_client.completions.create(model="tiny-gpt2", prompt="x", n=9)
    assert info.value.body["param"] == "n"
    with pytest.raises(openai.BadRequestError) as structured:
        openai_client.chat.completions.create(
            model="tiny-llama-chat",
            messages=[{"role": "user", "content": "hi"}],
            response_format={"type": "json_schema"},  # without its json_schema object
        )
    assert structured.value.body["param"] == "response_format"
    with pytest.raises(openai.APIStatusError):
        openai_client.chat.completions.create(
            model="tiny-gpt2", messages=[{"role": "user", "content": "hi"}]
        )


def _sse_events(response) -> list[dict]:
    return [
        json.loads(line[len(b"data:") :])
        for line in response.iter_lines()
        if line.startswith(b"data:")
    ]


def test_tgi_routes_generate_stream_and_root_answer_as_tgi_does(url):
    body = {
        "inputs": PROMPT,
        "model": "tiny-gpt2",
        "parameters": {"max_new_tokens": 6, "details": True},
    }
    expected = post(url, "/generate", body)  # TGI's /generate: one object
    assert post(url, "/", body) == [expected]  # TGI's POST / (a base-URL client): a list
    assert expected["details"]["input_length"] > 0
    for path, extra in (
        ("/generate_stream", {}),
        ("/", {"stream": True}),
        ("/generate", {"stream": True}),
    ):
        response = requests.post(f"{url}{path}", json={**body, **extra}, timeout=60, stream=True)
        assert response.headers["content-type"].startswith("text/event-stream"), path
        events = _sse_events(response)
        assert len(events) == 6, path
        assert "".join(e["token"]["text"] for e in events) == expected["generated_text"]
        assert events[-1]["generated_text"] == expected["generated_text"]
        assert events[-1]["details"]["input_length"] == expected["details"]["input_length"]
    assert requests.get(f"{url}/health", timeout=10).status_code == 200


def test_tgi_and_tei_tokenize_decode_and_info(url):
    # TGI: a generation model and one prompt -> one flat list of tokens with their spans.
    generated = post(
        url,
        "/generate",
        {
            "inputs": PROMPT,
            "model": "tiny-gpt2",
            "parameters": {"max_new_tokens": 1, "details": True},
        },
    )
    tokens = post(url, "/tokenize", {"inputs": PROMPT, "model": "tiny-gpt2"})
    assert len(tokens) == generated["details"]["input_length"]
    assert "".join(t["text"] for t in tokens) == PROMPT
    assert all(PROMPT[t["start"] : t["stop"]] == t["text"] for t in tokens)
    # TEI: an encoder model -> a list per input, special tokens flagged; /decode inverts it.
    (bert,) = post(
        url, "/tokenize", {"inputs": ["The house is small."], "model": "tiny-bert-embedder"}
    )
    assert [t["special"] for t in (bert[0], bert[-1])] == [True, True]
    assert not any(t["special"] for t in bert[1:-1])
    ids = [t["id"] for t in bert]
    assert post(url, "/decode", {"ids": ids, "model": "tiny-bert-embedder"}) == [
        "the house is small."
    ]
    assert post(url, "/decode", {"ids": [ids, ids[1:3]], "model": "tiny-bert-embedder"}) == [
        "the house is small.",
        "the house",
    ]
    bad = requests.post(
        f"{url}/decode", json={"ids": [10**9], "model": "tiny-bert-embedder"}, timeout=30
    )
    assert bad.status_code == 422 and bad.json()["field"] == "ids"
    tei = requests.get(f"{url}/info", params={"model": "tiny-bert-embedder"}, timeout=30).json()
    assert tei["model_id"] == "tiny-bert-embedder"
    assert tei["model_type"] == {"embedding": {"pooling": "mean"}}
    # Ours beside TEI's fields: the CPU class and the ORT choices made for it at start-up.
    assert tei["cpu"]["cpu_class"] == cpu_class(cpu_flags())
    assert tei["cpu"]["threads"] >= 1 and tei["cpu"]["encoder_runners"] >= 1
    assert set(tei["cpu"]["flags"]) <= cpu_flags()
    tgi = requests.get(f"{url}/info", params={"model": "tiny-gpt2"}, timeout=30).json()
    assert tgi["model_pipeline_tag"] == "text-generation"
    assert tgi["max_total_tokens"] == 2 * MAX_POSITIONS == tgi["max_input_tokens"] + 1
    assert requests.get(f"{url}/info", timeout=30).json()["model_pipeline_tag"] == (
        "text-generation"
    )


def test_openai_n_choices_seeds_and_prompt_forms(openai_client, url):
    """`n` choices decode side by side, seeded seed, seed + 1, ...; a prompt list gives each
    prompt its choices; token-id prompts equal their text; `echo` puts the prompt in front."""
    sampled = openai_client.completions.create(
        model="tiny-gpt2", prompt=PROMPT, max_tokens=6, n=3, seed=7, temperature=1.0
    )
    assert [c.index for c in sampled.choices] == [0, 1, 2]
    for i, choice in enumerate(sampled.choices):
        alone = openai_client.completions.create(
            model="tiny-gpt2", prompt=PROMPT, max_tokens=6, seed=7 + i, temperature=1.0
        )
        assert choice.text == alone.choices[0].text
    assert sampled.usage.completion_tokens == 18
    assert sampled.usage.prompt_tokens == alone.usage.prompt_tokens  # the prompt counted once
    greedy = openai_client.completions.create(
        model="tiny-gpt2", prompt=[PROMPT, "Hi"], max_tokens=5, temperature=0
    )
    texts = [c.text for c in greedy.choices]
    ids = post(url, "/tokenize", {"inputs": PROMPT, "model": "tiny-gpt2"})
    by_ids = openai_client.completions.create(
        model="tiny-gpt2", prompt=[t["id"] for t in ids], max_tokens=5, temperature=0
    )
    assert by_ids.choices[0].text == texts[0]
    hi = openai_client.completions.create(
        model="tiny-gpt2", prompt="Hi", max_tokens=5, temperature=0
    )
    assert texts[1] == hi.choices[0].text
    echoed = openai_client.completions.create(
        model="tiny-gpt2", prompt=PROMPT, max_tokens=5, temperature=0, echo=True
    )
    assert echoed.choices[0].text == PROMPT + texts[0]
    streamed = openai_client.completions.create(
        model="tiny-gpt2", prompt=PROMPT, max_tokens=6, n=2, seed=7, temperature=1.0, stream=True
    )
    joined = {0: "", 1: ""}
    for event in streamed:
        for choice in event.choices:
            joined[choice.index] += choice.text
    assert joined == {0: sampled.choices[0].text, 1: sampled.choices[1].text}


def test_openai_logprobs_and_logit_bias(openai_client):
    chat = openai_client.chat.completions.create(
        model="tiny-llama-chat",
        messages=[{"role": "user", "content": "Name a colour."}],
        max_tokens=5,
        temperature=0,
        logprobs=True,
        top_logprobs=3,
    )
    content = chat.choices[0].logprobs.content
    assert len(content) == chat.usage.completion_tokens == 5
    for entry in content:
        assert len(entry.top_logprobs) == 3 and entry.logprob <= 0
        # Greedy: the chosen token is the most likely one.
        assert entry.top_logprobs[0].token == entry.token
        assert entry.top_logprobs[0].logprob == pytest.approx(entry.logprob)
    completion = openai_client.completions.create(
        model="tiny-gpt2", prompt=PROMPT, max_tokens=4, temperature=0, logprobs=2
    )
    logprobs = completion.choices[0].logprobs
    assert "".join(logprobs.tokens) == completion.choices[0].text
    assert len(logprobs.token_logprobs) == 4 and all(len(t) <= 2 for t in logprobs.top_logprobs)
    assert logprobs.text_offset[0] == 0
    first = logprobs.tokens[0]
    ids = requests.post(
        f"{openai_client.base_url}".replace("/v1/", "/tokenize"),
        timeout=30,
        json={"inputs": PROMPT + first, "model": "tiny-gpt2"},
    ).json()
    banned = openai_client.completions.create(
        model="tiny-gpt2",
        prompt=PROMPT,
        max_tokens=4,
        temperature=0,
        logit_bias={str(ids[-1]["id"]): -100},
    )
    assert not banned.choices[0].text.startswith(first)
    penalised = openai_client.completions.create(
        model="tiny-gpt2",
        prompt=PROMPT,
        max_tokens=12,
        temperature=0,
        frequency_penalty=2.0,
        presence_penalty=2.0,
    )
    plain = openai_client.completions.create(
        model="tiny-gpt2", prompt=PROMPT, max_tokens=12, temperature=0
    )
    assert penalised.usage.completion_tokens == plain.usage.completion_tokens == 12


def test_openai_fields_other_servers_ignore_are_accepted(openai_client):
    chat = openai_client.chat.completions.create(
        model="tiny-llama-chat",
        max_tokens=3,
        temperature=0,
        messages=[
            {"role": "user", "content": "hi"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
                ],
            },
            {"role": "user", "content": "and now?"},
        ],
        response_format={"type": "text"},
        tool_choice="none",
        tools=[{"type": "function", "function": {"name": "f", "parameters": {}}}],
        store=False,
        metadata={"team": "a"},
        service_tier="auto",
        user="u-1",
        parallel_tool_calls=False,
        stream_options=None,
    )
    assert chat.choices[0].finish_reason == "length"
    completion = openai_client.completions.create(
        model="tiny-gpt2", prompt=PROMPT, max_tokens=2, best_of=1, suffix=None, user="u-1"
    )
    assert completion.usage.completion_tokens == 2


def test_async_openai_client_chat_stream_with_usage_and_embeddings(url):
    """`AsyncOpenAI`, unmodified: chat streamed with usage, completions, embeddings."""
    import asyncio

    from openai import AsyncOpenAI

    async def calls() -> tuple:
        client = AsyncOpenAI(base_url=f"{url}/v1", api_key="unused")
        try:
            messages = [{"role": "user", "content": "Tell me about the film."}]
            stream = await client.chat.completions.create(
                model="tiny-llama-chat",
                messages=messages,
                max_tokens=6,
                temperature=0,
                stream=True,
                stream_options={"include_usage": True},
            )
            chunks = [chunk async for chunk in stream]
            chat = await client.chat.completions.create(
                model="tiny-llama-chat", messages=messages, max_tokens=6, temperature=0
            )
            completion = await client.completions.create(
                model="tiny-gpt2", prompt=PROMPT, max_tokens=5, temperature=0
            )
            vectors = await client.embeddings.create(
                model="tiny-bert-embedder", input=["The house is small."]
            )
            return chunks, chat, completion, vectors
        finally:
            await client.close()

    chunks, chat, completion, vectors = asyncio.run(calls())
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == chat.choices[0].message.content
    assert chunks[-1].usage.completion_tokens == chat.usage.completion_tokens == 6
    expected = post(
        url,
        "/generate",
        {"inputs": PROMPT, "model": "tiny-gpt2", "parameters": {"max_new_tokens": 5}},
    )
    assert completion.choices[0].text == expected["generated_text"]
    direct = post(url, "/embed", {"inputs": ["The house is small."]})[0]
    assert vectors.data[0].embedding == pytest.approx(direct, abs=1e-6)


def run_async_inference_client(url: str) -> dict:
    """`AsyncInferenceClient`, every task method with its spec parameters (a child process,
    as `run_inference_client`)."""
    script = textwrap.dedent(f"""
        import asyncio, json
        from huggingface_hub import AsyncInferenceClient
        url = {url!r}

        async def main():
            out = {{}}
            labels = await AsyncInferenceClient(model=url + "/classify").text_classification(
                "A warm and funny film.", top_k=2, function_to_apply="sigmoid")
            out["classify"] = [[e.label, e.score] for e in labels]
            answer = await AsyncInferenceClient(model=url + "/answer").question_answering(
                question="Where does the cat sleep?",
                context="The cat sleeps on the mat all day.", top_k=1, max_answer_len=5,
                handle_impossible_answer=False, align_to_words=True)
            answer = answer[0] if isinstance(answer, list) else answer
            out["answer"] = [answer.answer, answer.start, answer.end, answer.score]
            gen = AsyncInferenceClient(model=url + "/generate")
            out["generate"] = await gen.text_generation({PROMPT!r}, max_new_tokens=8,
                                                        stop=["zzz"], seed=3)
            out["generate_stream"] = [t async for t in await gen.text_generation(
                {PROMPT!r}, max_new_tokens=8, stream=True)]
            out["translate"] = (await AsyncInferenceClient(model=url + "/translate").translation(
                "The house is small.", src_lang="en", tgt_lang="fr",
                generate_parameters={{"max_new_tokens": 6}})).translation_text
            out["embed"] = (await AsyncInferenceClient(model=url + "/embed").feature_extraction(
                "The house is small.", normalize=True, truncate=True,
                truncation_direction="right")).tolist()
            print(json.dumps(out))

        asyncio.run(main())
    """)
    return run_client_script(script)


def test_async_huggingface_inference_client_works_unchanged(url):
    out = run_async_inference_client(url)
    assert out["classify"] == [
        [d["label"], d["score"]]
        for d in post(
            url,
            "/classify",
            {
                "inputs": "A warm and funny film.",
                "parameters": {"top_k": 2, "function_to_apply": "sigmoid"},
            },
        )[0]
    ]
    answer = post(
        url,
        "/answer",
        {
            "inputs": {
                "question": "Where does the cat sleep?",
                "context": "The cat sleeps on the mat all day.",
            },
            "parameters": {"max_answer_len": 5},
        },
    )
    assert out["answer"] == [answer["answer"], answer["start"], answer["end"], answer["score"]]
    generated = post(url, "/generate", {"inputs": PROMPT, "parameters": {"max_new_tokens": 8}})
    assert out["generate"] == generated["generated_text"]
    assert "".join(out["generate_stream"]) == generated["generated_text"]
    assert (
        out["translate"]
        == post(
            url,
            "/translate",
            {
                "inputs": "The house is small.",
                "parameters": {"src_lang": "en", "tgt_lang": "fr", "max_new_tokens": 6},
            },
        )[0]["translation_text"]
    )
    assert out["embed"] == post(
        url, "/embed", {"inputs": "The house is small.", "normalize": True, "truncate": True}
    )


def test_text_generation_client_works_unchanged(url):
    """TGI's own Python client (`text-generation`), sync and async, against `POST /` (where it
    sends everything) and `/generate_stream`-style streaming."""
    import asyncio

    from text_generation import AsyncClient, Client

    client = Client(url, timeout=60)
    response = client.generate(PROMPT, max_new_tokens=8, top_n_tokens=2)
    expected = post(
        url,
        "/generate",
        {"inputs": PROMPT, "parameters": {"max_new_tokens": 8, "details": True, "top_n_tokens": 2}},
    )
    assert response.generated_text == expected["generated_text"]
    assert response.details.finish_reason.value == "length"
    assert response.details.generated_tokens == 8
    assert [t.id for t in response.details.tokens] == [
        t["id"] for t in expected["details"]["tokens"]
    ]
    assert len(response.details.top_tokens[0]) == 2
    tokens = list(client.generate_stream(PROMPT, max_new_tokens=8))
    assert "".join(t.token.text for t in tokens) == expected["generated_text"]
    assert tokens[-1].generated_text == expected["generated_text"]
    assert tokens[-1].details.finish_reason.value == "length"

    async def async_calls() -> tuple:
        async_client = AsyncClient(url, timeout=60)
        answer = await async_client.generate(PROMPT, max_new_tokens=8)
        streamed = [t async for t in async_client.generate_stream(PROMPT, max_new_tokens=8)]
        return answer, streamed

    answer, streamed = asyncio.run(async_calls())
    assert answer.generated_text == expected["generated_text"]
    assert "".join(t.token.text for t in streamed) == expected["generated_text"]


def test_langchain_openai_retrieval_then_answer_round_trip(url):
    """A retrieval framework's OpenAI adapters, unmodified (`langchain-openai`): embed a few
    documents and a question with `OpenAIEmbeddings`, pick the nearest document, and answer
    with `ChatOpenAI` from it. Each step equals the service's own answer to the same call.
    `check_embedding_ctx_length=False` keeps LangChain from fetching OpenAI's tiktoken files
    (no internet here); the texts go to the server as they are."""
    import numpy as np
    from langchain_openai import ChatOpenAI, OpenAIEmbeddings

    documents = [
        "The cat sleeps on the mat all day.",
        "The festival opened on a rainy Friday.",
        "Prices rose twelve percent in March.",
    ]
    question = "Where does the cat sleep?"
    embeddings = OpenAIEmbeddings(
        model="tiny-bert-embedder",
        base_url=f"{url}/v1",
        api_key="unused",
        check_embedding_ctx_length=False,
    )
    vectors = np.array(embeddings.embed_documents(documents))
    query = np.array(embeddings.embed_query(question))
    direct = np.array(
        post(url, "/v1/embeddings", {"model": "tiny-bert-embedder", "input": documents})["data"][0][
            "embedding"
        ]
    )
    np.testing.assert_allclose(vectors[0], direct, atol=1e-6)
    scores = vectors @ query / (np.linalg.norm(vectors, axis=1) * np.linalg.norm(query))
    context = documents[int(scores.argmax())]
    chat = ChatOpenAI(
        model="tiny-llama-chat", base_url=f"{url}/v1", api_key="unused", max_tokens=8, temperature=0
    )
    messages = [("system", f"Answer from this document: {context}"), ("human", question)]
    reply = chat.invoke(messages)
    expected = post(
        url,
        "/v1/chat/completions",
        {
            "model": "tiny-llama-chat",
            "max_tokens": 8,
            "temperature": 0,
            "messages": [
                {"role": "system", "content": f"Answer from this document: {context}"},
                {"role": "user", "content": question},
            ],
        },
    )
    assert reply.content == expected["choices"][0]["message"]["content"]
    assert reply.usage_metadata["output_tokens"] == 8
    streamed = "".join(chunk.content for chunk in chat.stream(messages))
    assert streamed == reply.content
