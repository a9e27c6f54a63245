"""The torch-free generation loop against `transformers` on the same tiny weights.

Greedy tokens must equal `model.generate(do_sample=False)` and the text must equal the
text-generation pipeline's `generated_text` (return_full_text=False), for single prompts, batches,
the repetition penalty, eos, stop sequences, truncation and chat prompts.
"""

from __future__ import annotations

import json
import shutil
from functools import cache
from pathlib import Path

import pytest
from pydantic import ValidationError

from models.tiny import corpus_sentences
from service.runtime.errors import InvalidInput
from service.runtime.tasks.generation import (
    GenerationParameters,
    IncrementalText,
    TextGenerator,
)

KINDS = ["gpt2", "llama-chat"]
NEW_TOKENS = 20


def _prompts() -> list[str]:
    corpus = corpus_sentences()
    picked = [corpus[i] for i in (0, 1, 2, 50, 100, 500, 1000, 2000, 3000)]
    accented = [s for s in corpus if any(ord(c) > 127 for c in s)][:3]
    handmade = [
        "Hi",
        "A",
        "Héllo wörld, ça va? Très bien, merci.",
        "Emoji test 😀🎉 and a flag 🇫🇷 then text",
        "日本語のテキストと English mixed 中文",
        "Line one.\nLine two!\n\tIndented line three?",
        "Numbers 3.14159 and 1,000,000 and $42.",
        "  leading spaces and trailing punctuation ...",
        "It 's a test , with spaces before punctuation . Isn 't it ?",
        "The end of the prompt has a space ",
        " ".join(corpus[3000:3006]),  # a long prompt, ~200 tokens
    ]
    return picked + accented + handmade


PROMPTS = _prompts()


@pytest.fixture(scope="module")
def hf(tiny_checkpoint):
    """`hf(kind)` -> (tokenizer, model, pipeline) of the PyTorch checkpoint."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, pipeline

    @cache
    def get(kind: str, folder: Path | None = None):
        path = folder or tiny_checkpoint(kind)
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path).eval()
        return tokenizer, model, pipeline("text-generation", model=model, tokenizer=tokenizer)

    return get


@pytest.fixture(scope="module")
def ours(tiny_exported):
    @cache
    def get(kind: str, folder: Path | None = None, cap: int = 512) -> TextGenerator:
        return TextGenerator.load(folder or tiny_exported(kind), threads=1, max_new_tokens_cap=cap)

    return get


def hf_generate(hf_parts, prompt: str | None = None, input_ids=None, **kwargs) -> list[int]:
    import torch

    tokenizer, model, _ = hf_parts
    if input_ids is None:
        input_ids = tokenizer(prompt, return_tensors="pt").input_ids
    with torch.no_grad():
        out = model.generate(
            input_ids, attention_mask=torch.ones_like(input_ids), do_sample=False, **kwargs
        )
    return out[0, input_ids.shape[1] :].tolist()


def hf_text(hf_parts, prompt, **kwargs) -> str:
    pipe = hf_parts[2]
    return pipe(prompt, do_sample=False, return_full_text=False, **kwargs)[0]["generated_text"]


def ids(result) -> list[int]:
    return [t.id for t in result.tokens]


@pytest.mark.parametrize("kind", KINDS)
def test_greedy_tokens_and_text_match_transformers(kind, hf, ours):
    generator, parts = ours(kind), hf(kind)
    params = GenerationParameters(max_new_tokens=NEW_TOKENS)
    for prompt in PROMPTS:
        result = generator.generate([prompt], params)[0]
        expected = hf_generate(parts, prompt, max_new_tokens=NEW_TOKENS)
        assert ids(result) == expected, prompt
        assert result.generated_text == hf_text(parts, prompt, max_new_tokens=NEW_TOKENS), prompt
        assert result.prompt_tokens == len(parts[0](prompt).input_ids)
        assert result.generated_tokens == len(expected)
        assert result.seed is None


@pytest.mark.parametrize("kind", KINDS)
def test_repetition_penalty_matches_transformers(kind, hf, ours):
    generator, parts = ours(kind), hf(kind)
    params = GenerationParameters(max_new_tokens=NEW_TOKENS, repetition_penalty=1.3)
    for prompt in PROMPTS[::3]:
        result = generator.generate([prompt], params)[0]
        expected = hf_generate(parts, prompt, max_new_tokens=NEW_TOKENS, repetition_penalty=1.3)
        assert ids(result) == expected, prompt
        assert result.generated_text == hf_text(
            parts, prompt, max_new_tokens=NEW_TOKENS, repetition_penalty=1.3
        )


def test_greedy_logprobs_are_transformers_log_softmax(hf, ours):
    import torch

    tokenizer, model, _ = hf("llama-chat")
    prompt = PROMPTS[0]
    result = ours("llama-chat").generate([prompt], GenerationParameters(max_new_tokens=5))[0]
    input_ids = tokenizer(prompt, return_tensors="pt").input_ids
    with torch.no_grad():
        out = model.generate(
            input_ids,
            do_sample=False,
            max_new_tokens=5,
            output_scores=True,
            return_dict_in_generate=True,
        )
    for token, scores in zip(result.tokens, out.scores, strict=True):
        expected = torch.log_softmax(scores[0].double(), -1)[token.id].item()
        assert token.logprob == pytest.approx(expected, abs=1e-4)


def _with_extra_eos(src: Path, dst: Path, extra_eos: int) -> Path:
    """A copy of a model folder whose generation_config lists a second eos id."""
    shutil.copytree(src, dst)
    config_file = dst / "generation_config.json"
    config = json.loads(config_file.read_text())
    config["eos_token_id"] = [config["eos_token_id"], extra_eos]
    config_file.write_text(json.dumps(config))
    return dst


@pytest.fixture(scope="module")
def eos_models(tmp_path_factory, tiny_checkpoint, tiny_exported, hf, ours):
    """llama-chat with a second eos id: a token greedy decoding of PROMPTS[0] emits at step 6."""
    plain = ours("llama-chat").generate([PROMPTS[0]], GenerationParameters(max_new_tokens=8))
    eos = ids(plain[0])[5]
    root = tmp_path_factory.mktemp("eos")
    checkpoint = _with_extra_eos(tiny_checkpoint("llama-chat"), root / "checkpoint", eos)
    exported = _with_extra_eos(tiny_exported("llama-chat"), root / "exported", eos)
    return eos, hf("llama-chat", checkpoint), ours("llama-chat", exported)


def test_eos_from_a_list_stops_generation_like_transformers(eos_models):
    eos, parts, generator = eos_models
    assert eos in generator.eos_token_ids and len(generator.eos_token_ids) == 2
    result = generator.generate([PROMPTS[0]], GenerationParameters(max_new_tokens=NEW_TOKENS))[0]
    assert result.finish_reason == "eos_token"
    assert ids(result)[-1] == eos and eos not in ids(result)[:-1]
    assert ids(result) == hf_generate(parts, PROMPTS[0], max_new_tokens=NEW_TOKENS)
    assert result.generated_text == hf_text(parts, PROMPTS[0], max_new_tokens=NEW_TOKENS)


@pytest.mark.parametrize("kind", KINDS)
def test_left_padded_batch_equals_one_by_one(kind, ours, eos_models):
    generator = eos_models[2] if kind == "llama-chat" else ours(kind)
    prompts = [PROMPTS[0], "Hi", PROMPTS[-1], PROMPTS[12], "A", PROMPTS[5]]
    params = [GenerationParameters(max_new_tokens=n) for n in (12, 20, 5, 16, 20, 1)]
    batched = generator.generate(prompts, params)
    single = [generator.generate([p], q)[0] for p, q in zip(prompts, params, strict=True)]
    for b, s in zip(batched, single, strict=True):
        assert ids(b) == ids(s)
        assert (b.generated_text, b.finish_reason) == (s.generated_text, s.finish_reason)
        assert [t.logprob for t in b.tokens] == pytest.approx(
            [t.logprob for t in s.tokens], abs=1e-4
        )
    if kind == "llama-chat":  # the eos model: one row stops early while the others go on
        assert batched[0].finish_reason == "eos_token"
        assert {r.finish_reason for r in batched} == {"eos_token", "length"}


@pytest.mark.parametrize("kind", KINDS)
def test_streamed_pieces_concatenate_to_generated_text(kind, ours):
    generator = ours(kind)
    params = GenerationParameters(max_new_tokens=NEW_TOKENS)
    held_back = 0
    for prompt in PROMPTS:
        events = list(generator.stream(prompt, params))
        tokens, final = events[:-1], events[-1]
        assert all(t.is_token for t in tokens) and not final.is_token
        assert "".join(t.text for t in tokens) == final.generated_text
        assert tokens == final.tokens
        assert ids(final) == ids(generator.generate([prompt], params)[0])
        held_back += sum(1 for t in tokens if not t.text)
    assert held_back  # some token completed no character: the hold-back path was taken


def test_incremental_text_never_splits_a_character(hf, ours):
    """Multi-byte characters span several byte-level tokens: no piece may end in U+FFFD."""
    generator, tokenizer = ours("gpt2"), hf("gpt2")[0]
    prompt_ids = tokenizer("Say:").input_ids
    text = "é😀 ça 🇫🇷,日本 It 's ok , no ?"
    generated = tokenizer(text, add_special_tokens=False).input_ids
    assert len(generated) > len(text.split())  # characters really are split over tokens
    stream = IncrementalText(generator.tokenizer, prompt_ids, clean_up=True)
    pieces = []
    for i, token in enumerate(generated):
        stream.add(token)
        if i == len(generated) - 1:
            stream.flush()
        pieces.append(stream.release(final=i == len(generated) - 1))
    assert all(not p.endswith("\ufffd") for p in pieces)
    full = tokenizer.decode(prompt_ids + generated, clean_up_tokenization_spaces=True)
    expected = full[len(tokenizer.decode(prompt_ids, clean_up_tokenization_spaces=True)) :]
    assert "".join(pieces) == expected == "é😀 ça 🇫🇷,日本 It's ok, no?"


@pytest.mark.parametrize("kind", KINDS)
def test_stop_sequence_ends_generation_at_the_token_that_completes_it(kind, ours):
    generator = ours(kind)
    prompt = PROMPTS[1]
    full = generator.generate([prompt], GenerationParameters(max_new_tokens=NEW_TOKENS))[0]
    stop = full.generated_text[12:15]
    first = full.generated_text.index(stop)
    params = GenerationParameters(max_new_tokens=NEW_TOKENS, stop=["never-in-text", stop])
    result = generator.generate([prompt], params)[0]
    assert (result.finish_reason, result.stop_sequence) == ("stop_sequence", stop)
    # Like TGI, the text keeps the stop sequence; it ends with the token that completed it.
    assert ids(result) == ids(full)[: len(result.tokens)]
    assert full.generated_text.startswith(result.generated_text)
    assert stop in result.generated_text
    before_last = generator.tokenizer.decode(ids(result)[:-1])
    assert len(before_last) < first + len(stop)
    streamed = list(generator.stream(prompt, params))
    assert "".join(t.text for t in streamed[:-1]) == result.generated_text
    missing = GenerationParameters(max_new_tokens=NEW_TOKENS, stop=["never-in-text"])
    assert generator.generate([prompt], missing)[0].finish_reason == "length"


def test_max_new_tokens_above_the_cap_is_refused(ours):
    generator = ours("gpt2", cap=8)
    assert generator.generate(["Hi"], GenerationParameters(max_new_tokens=8))[0].generated_tokens
    with pytest.raises(InvalidInput) as refused:
        generator.stream("Hi", GenerationParameters(max_new_tokens=9))  # raised before iterating
    assert refused.value.field == "parameters.max_new_tokens"
    assert "8" in refused.value.message


@pytest.mark.parametrize("kind", KINDS)
def test_too_long_prompt_is_refused_naming_the_limit_unless_truncated(kind, hf, ours):
    generator, parts = ours(kind), hf(kind)
    prompt = " ".join(corpus_sentences()[:40])
    tokens = parts[0](prompt, return_tensors="pt").input_ids
    assert tokens.shape[1] > generator.max_positions == 256
    with pytest.raises(InvalidInput) as refused:
        generator.stream(prompt, GenerationParameters(max_new_tokens=10))
    assert refused.value.field == "inputs"
    assert "256" in refused.value.message

    result = generator.generate([prompt], GenerationParameters(max_new_tokens=10, truncate=True))[0]
    assert result.prompt_tokens == 256 - 10
    assert ids(result) == hf_generate(parts, input_ids=tokens[:, -246:], max_new_tokens=10)

    result = generator.generate(
        [prompt], GenerationParameters.model_validate({"max_new_tokens": 10, "truncation": 100})
    )[0]
    assert result.prompt_tokens == 100
    assert ids(result) == hf_generate(parts, input_ids=tokens[:, -100:], max_new_tokens=10)


CONVERSATIONS = [
    [{"role": "user", "content": "Hello!"}],
    [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Why?"}],
    [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello, how can I help?"},
        {"role": "user", "content": "Écris un poème 😀 sur Paris."},
    ],
    [{"role": "system", "content": "Line one\nLine two"}, {"role": "user", "content": ""}],
]


def test_chat_template_renders_like_transformers(hf, ours):
    generator, (tokenizer, _, pipe) = ours("llama-chat"), hf("llama-chat")
    assert generator.chat_template
    for messages in CONVERSATIONS:
        expected = tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=True
        )
        prompt = generator.apply_chat_template(messages)
        assert prompt == expected
        # The chat pipeline tokenizes the rendered template without adding special tokens.
        result = generator.generate(
            [prompt], GenerationParameters(max_new_tokens=10), add_special_tokens=False
        )[0]
        text = pipe(messages, do_sample=False, max_new_tokens=10, return_full_text=False)[0][
            "generated_text"
        ]
        assert result.generated_text == text


def test_model_without_chat_template_refuses_messages(ours):
    generator = ours("gpt2")
    assert not generator.chat_template
    with pytest.raises(InvalidInput) as refused:
        generator.apply_chat_template(CONVERSATIONS[0])
    assert refused.value.field == "messages"


def test_parameters_follow_the_tgi_schema():
    params = GenerationParameters.model_validate({"stop": "\n", "truncate": 5})
    assert params.stop == ["\n"] and params.truncate == 5
    assert params.max_new_tokens == 20 and params.do_sample is False
    assert params.return_full_text is False and params.details is False
    assert GenerationParameters.model_validate({"stop": None}).stop == []
    assert GenerationParameters.model_validate({"truncate": True}).truncate is True
    for bad in (
        {"best_of": 2},
        {"max_new_tokens": 0},
        {"temperature": 0},
        {"top_p": 1.5},
        {"stop": [""]},
    ):
        with pytest.raises(ValidationError):
            GenerationParameters.model_validate(bad)


def test_count_tokens_and_warmup(ours, hf):
    generator, tokenizer = ours("llama-chat"), hf("llama-chat")[0]
    generator.warmup()
    for prompt in PROMPTS[:5]:
        assert generator.count_tokens(prompt) == len(tokenizer(prompt).input_ids)


def test_generation_runtime_imports_neither_torch_nor_transformers():
    import subprocess
    import sys

    code = (
        "import sys, service.runtime.tasks.generation, service.runtime.sampling; "
        "print(sorted({'torch', 'transformers', 'optimum'} & set(sys.modules)))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).parent.parent,
    )
    assert out.stdout.strip() == "[]"
