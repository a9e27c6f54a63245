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

PROMPT = "The best part of the film was"


@pytest.fixture(scope="module")
def url(live_server) -> str:
    return live_server.url


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
        out["embed"] = InferenceClient(model=url + "/embed").feature_extraction(
            "The house is small.").tolist()
        print(json.dumps(out))
    """)
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE",
                                                           "TRANSFORMERS_OFFLINE")}
    env["HF_HUB_DISABLE_TELEMETRY"] = "1"
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def post(url: str, path: str, body: dict) -> object:
    response = requests.post(f"{url}{path}", json=body, timeout=60)
    response.raise_for_status()
    return response.json()


def test_huggingface_inference_client_works_unchanged(url):
    out = run_inference_client(url)
    direct = post(url, "/classify", {"inputs": "A warm and funny film.",
                                     "parameters": {"top_k": 2}})[0]
    assert out["classify"] == [[d["label"], d["score"]] for d in direct]
    answer = post(url, "/answer", {"inputs": {"question": "Where does the cat sleep?",
                                              "context": "The cat sleeps on the mat all day."}})
    assert out["answer"] == [answer["answer"], answer["start"], answer["end"], answer["score"]]
    generated = post(url, "/generate", {"inputs": PROMPT,
                                        "parameters": {"max_new_tokens": 8}})[0]
    assert out["generate"] == generated["generated_text"]
    assert "".join(out["generate_stream"]) == generated["generated_text"]
    assert out["generate_details"] == "length"
    assert out["translate"] == post(url, "/translate",
                                    {"inputs": "The house is small."})[0]["translation_text"]
    assert out["embed"] == post(url, "/embed", {"inputs": "The house is small."})


@pytest.fixture(scope="module")
def openai_client(url):
    from openai import OpenAI

    return OpenAI(base_url=f"{url}/v1", api_key="unused")


def test_openai_models_lists_generation_models(openai_client):
    ids = {m.id for m in openai_client.models.list()}
    assert ids == {"tiny-llama-chat", "tiny-llama-chat-genai", "tiny-llama-chat-int4",
                   "tiny-gpt2"}


def test_builder_graph_from_the_catalog_serves_the_tokens_of_optimums_export(openai_client,
                                                                             url):
    """`graph: genai` (fused attention, right-padded cache) is a different graph of the same
    weights: greedy text through every door equals the Optimum export's; the int4 variant
    serves too (its tokens may differ: 4-bit weights)."""
    prompts = [PROMPT, "Hi", "A long afternoon by the river, with nothing to do but watch"]

    def generate(model: str) -> list:
        return [post(url, "/generate", {"inputs": p, "model": model,
                                        "parameters": {"max_new_tokens": 12}})[0]
                for p in prompts]

    assert generate("tiny-llama-chat-genai") == generate("tiny-llama-chat")
    assert all(isinstance(g["generated_text"], str) for g in generate("tiny-llama-chat-int4"))
    completion = openai_client.completions.create(model="tiny-llama-chat-genai", prompt=PROMPT,
                                                  max_tokens=8, temperature=0)
    assert completion.choices[0].text == openai_client.completions.create(
        model="tiny-llama-chat", prompt=PROMPT, max_tokens=8, temperature=0).choices[0].text
    described = {m["name"]: m for m in requests.get(f"{url}/models", timeout=30).json()}
    assert described["tiny-llama-chat-int4"]["quantization"] == "int4"
    assert described["tiny-llama-chat-genai"]["graph"] == "genai"
    assert described["tiny-llama-chat"]["graph"] == "optimum"


def test_openai_completion_equals_greedy_generate(openai_client, url):
    completion = openai_client.completions.create(model="tiny-gpt2", prompt=PROMPT,
                                                  max_tokens=8, temperature=0)
    expected = post(url, "/generate", {"inputs": PROMPT, "model": "tiny-gpt2",
                                       "parameters": {"max_new_tokens": 8}})[0]
    assert completion.choices[0].text == expected["generated_text"]
    assert completion.choices[0].finish_reason == "length"
    assert completion.usage.completion_tokens == 8
    assert completion.usage.prompt_tokens > 0
    assert completion.usage.total_tokens == (completion.usage.prompt_tokens
                                             + completion.usage.completion_tokens)


def test_openai_completion_stream_ends_with_done(openai_client, url):
    stream = openai_client.completions.create(model="tiny-gpt2", prompt=PROMPT, max_tokens=8,
                                              temperature=0, stream=True,
                                              stream_options={"include_usage": True})
    chunks = list(stream)
    text = "".join(c.choices[0].text for c in chunks if c.choices)
    expected = openai_client.completions.create(model="tiny-gpt2", prompt=PROMPT, max_tokens=8,
                                                temperature=0).choices[0].text
    assert text == expected
    assert chunks[-1].usage.completion_tokens == 8
    raw = requests.post(f"{url}/v1/completions", timeout=60, json={
        "model": "tiny-gpt2", "prompt": PROMPT, "max_tokens": 3, "stream": True}).text
    assert raw.rstrip().endswith("data: [DONE]")


def test_openai_chat_uses_the_models_chat_template(openai_client, url, tiny_checkpoint):
    from transformers import AutoTokenizer

    messages = [{"role": "user", "content": "Name a colour."}]
    chat = openai_client.chat.completions.create(model="tiny-llama-chat", messages=messages,
                                                 max_tokens=6, temperature=0)
    prompt = AutoTokenizer.from_pretrained(tiny_checkpoint("llama-chat")).apply_chat_template(
        messages, tokenize=False, add_generation_prompt=True)
    expected = post(url, "/generate", {"inputs": prompt, "model": "tiny-llama-chat",
                                       "parameters": {"max_new_tokens": 6}})[0]
    assert chat.choices[0].message.role == "assistant"
    assert chat.choices[0].message.content == expected["generated_text"]
    streamed = openai_client.chat.completions.create(
        model="tiny-llama-chat", messages=messages, max_tokens=6, temperature=0, stream=True)
    text = "".join(c.choices[0].delta.content or "" for c in streamed if c.choices)
    assert text == chat.choices[0].message.content


def test_openai_stop_sequence_is_left_out(openai_client):
    full = openai_client.completions.create(model="tiny-gpt2", prompt=PROMPT, max_tokens=12,
                                            temperature=0).choices[0].text
    stop = full[3:6]
    cut = openai_client.completions.create(model="tiny-gpt2", prompt=PROMPT, max_tokens=12,
                                           temperature=0, stop=[stop])
    assert cut.choices[0].text == full[:full.index(stop)]
    assert cut.choices[0].finish_reason == "stop"
    streamed = openai_client.completions.create(model="tiny-gpt2", prompt=PROMPT, max_tokens=12,
                                                temperature=0, stop=[stop], stream=True)
    assert "".join(c.choices[0].text for c in streamed if c.choices) == cut.choices[0].text


def test_openai_errors_reach_the_client(openai_client):
    import openai

    with pytest.raises(openai.NotFoundError):
        openai_client.completions.create(model="no-such-model", prompt="x")
    with pytest.raises(openai.BadRequestError) as info:
        openai_client.completions.create(model="tiny-gpt2", prompt="x", n=2)
    assert "n" in str(info.value)
    with pytest.raises(openai.APIStatusError):
        openai_client.chat.completions.create(model="tiny-gpt2",
                                              messages=[{"role": "user", "content": "hi"}])
