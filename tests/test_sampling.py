"""Sampling: what it promises, since torch's random stream cannot be matched.

The numpy processors equal transformers' LogitsProcessor classes; a seed fixes the text; top_k=1
is greedy; and over thousands of seeds the first token follows the distribution transformers'
own warpers give from the PyTorch model's logits (chi-square), never leaving the kept set.
"""

from __future__ import annotations

from functools import cache

import numpy as np
import pytest

from service.runtime.sampling import (
    TokenChooser,
    apply_repetition_penalty,
    apply_temperature,
    apply_top_k,
    apply_top_p,
    log_softmax,
)
from service.runtime.tasks.generation import GenerationParameters, TextGenerator

# A prompt whose own tokens are among the likely next ones, so the repetition penalty matters.
PROMPT = "Looks and feels like a project better suited for the small screen."
DRAWS = 3000
# A fixed seed list makes the chi-square test deterministic; the level only guards the choice.
SIGNIFICANCE = 0.001


def random_logits(batch: int = 4, vocab: int = 1000, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(0, 3, (batch, vocab)).astype(np.float32)


def torch_processed(processor, logits: np.ndarray, input_ids: np.ndarray | None = None):
    import torch

    ids = (
        torch.zeros((logits.shape[0], 0), dtype=torch.long)
        if input_ids is None
        else torch.from_numpy(input_ids)
    )
    return processor(ids, torch.from_numpy(logits.copy())).numpy()


@pytest.mark.export_side
@pytest.mark.parametrize("penalty", [1.3, 0.7])
def test_repetition_penalty_equals_transformers(penalty):
    from transformers import RepetitionPenaltyLogitsProcessor

    logits = random_logits()
    # Repeated ids must be penalised once, as transformers' gather/scatter does.
    ids = np.random.default_rng(1).integers(0, 50, (4, 30))
    expected = torch_processed(RepetitionPenaltyLogitsProcessor(penalty), logits, ids)
    np.testing.assert_array_equal(apply_repetition_penalty(logits, ids, penalty), expected)


@pytest.mark.export_side
@pytest.mark.parametrize("temperature", [0.3, 0.7, 1.5])
def test_temperature_equals_transformers(temperature):
    from transformers import TemperatureLogitsWarper

    logits = random_logits()
    expected = torch_processed(TemperatureLogitsWarper(temperature), logits)
    np.testing.assert_allclose(apply_temperature(logits, temperature), expected, rtol=1e-6)


@pytest.mark.export_side
@pytest.mark.parametrize("top_k", [1, 5, 50, 5000])
def test_top_k_equals_transformers(top_k):
    from transformers import TopKLogitsWarper

    logits = random_logits()
    logits[0, :10] = 7.0  # ties at the k-th value survive in both
    expected = torch_processed(TopKLogitsWarper(top_k), logits)
    np.testing.assert_array_equal(apply_top_k(logits, top_k), expected)


@pytest.mark.export_side
@pytest.mark.parametrize("top_p", [0.05, 0.5, 0.9, 0.99])
def test_top_p_equals_transformers(top_p):
    from transformers import TopPLogitsWarper

    for seed in range(5):
        logits = random_logits(seed=seed)
        expected = torch_processed(TopPLogitsWarper(top_p), logits)
        np.testing.assert_array_equal(apply_top_p(logits, top_p), expected)


def test_greedy_is_argmax_after_repetition_penalty():
    logits = random_logits(batch=1)[0]
    ids = np.argsort(logits)[-3:]  # penalise the three best tokens
    chooser = TokenChooser(repetition_penalty=10.0)
    token, logprob, top = chooser.choose(logits, ids)
    penalised = apply_repetition_penalty(logits, ids, 10.0)
    assert token == int(np.argmax(penalised)) and token not in ids
    assert logprob == pytest.approx(log_softmax(penalised)[token])
    assert top == ()  # alternatives only when asked for


def test_logit_bias_bans_and_forces_tokens():
    logits = random_logits(batch=1)[0]
    best = int(np.argmax(logits))
    banned, _, _ = TokenChooser(logit_bias={best: -100.0}).choose(logits, np.array([], int))
    assert banned != best and banned == int(np.argsort(logits)[-2])
    forced = int(np.argmin(logits))
    chosen, _, _ = TokenChooser(logit_bias={forced: 100.0}).choose(logits, np.array([], int))
    assert chosen == forced


def test_presence_and_frequency_penalties_count_generated_tokens_only():
    logits = np.zeros(10, dtype=np.float32)
    logits[3], logits[4] = 1.0, 0.9
    prompt_and_generated = np.array([3, 3, 4])  # 3 twice in the prompt: no penalty for it
    generated = np.array([4])
    chooser = TokenChooser(presence_penalty=0.05, frequency_penalty=0.0)
    scores = chooser.process(logits, prompt_and_generated, generated)
    assert scores[3] == pytest.approx(1.0) and scores[4] == pytest.approx(0.85)
    chooser = TokenChooser(presence_penalty=0.0, frequency_penalty=0.5)
    scores = chooser.process(logits, np.array([3, 3]), np.array([3, 3]))
    assert scores[3] == pytest.approx(0.0)  # 1.0 - 2 x 0.5
    token, _, _ = chooser.choose(logits, np.array([3, 3]), np.array([3, 3]))
    assert token == 4


def test_top_n_alternatives_are_the_most_likely_best_first():
    logits = random_logits(batch=1)[0]
    token, logprob, top = TokenChooser(top_n=5).choose(logits, np.array([], int))
    expected = np.argsort(-log_softmax(logits), kind="stable")[:5]
    assert [i for i, _ in top] == expected.tolist()
    assert top[0] == (token, pytest.approx(logprob))
    assert all(a[1] >= b[1] for a, b in zip(top, top[1:], strict=False))


@pytest.fixture(scope="module")
def generator(tiny_exported) -> TextGenerator:
    return TextGenerator.load(tiny_exported("gpt2"), threads=1)


def sample(generator: TextGenerator, prompt: str = PROMPT, **values):
    return generator.generate([prompt], GenerationParameters(do_sample=True, **values))[0]


def test_same_seed_gives_same_text(generator):
    first = sample(generator, seed=7, temperature=1.2, top_p=0.95, max_new_tokens=30)
    again = sample(generator, seed=7, temperature=1.2, top_p=0.95, max_new_tokens=30)
    other = sample(generator, seed=8, temperature=1.2, top_p=0.95, max_new_tokens=30)
    assert (first.generated_text, first.seed) == (again.generated_text, 7)
    assert [t.id for t in first.tokens] != [t.id for t in other.tokens]
    streamed = list(
        generator.stream(
            PROMPT,
            GenerationParameters(
                do_sample=True, seed=7, temperature=1.2, top_p=0.95, max_new_tokens=30
            ),
        )
    )
    assert streamed[-1].generated_text == first.generated_text


def test_unseeded_sampling_reports_a_seed_that_replays_it(generator):
    result = sample(generator, max_new_tokens=15)
    assert isinstance(result.seed, int)
    assert (
        sample(generator, seed=result.seed, max_new_tokens=15).generated_text
        == result.generated_text
    )


def test_top_k_1_sampling_is_greedy(generator):
    for prompt in (PROMPT, "Héllo 😀", "It was a dark and stormy night"):
        greedy = generator.generate([prompt], GenerationParameters(max_new_tokens=20))[0]
        for seed in range(3):
            drawn = sample(
                generator, prompt, top_k=1, temperature=1.7, seed=seed, max_new_tokens=20
            )
            assert [t.id for t in drawn.tokens] == [t.id for t in greedy.tokens]


@cache
def _torch_model(checkpoint):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoTokenizer.from_pretrained(checkpoint), AutoModelForCausalLM.from_pretrained(
        checkpoint
    ).eval()


def expected_first_token_probs(checkpoint, values: dict) -> np.ndarray:
    """The first-token distribution from the PyTorch model through transformers' warpers."""
    import torch
    from transformers import (
        LogitsProcessorList,
        RepetitionPenaltyLogitsProcessor,
        TemperatureLogitsWarper,
        TopKLogitsWarper,
        TopPLogitsWarper,
    )

    tokenizer, model = _torch_model(checkpoint)
    input_ids = tokenizer(PROMPT, return_tensors="pt").input_ids
    processors = LogitsProcessorList()
    if "repetition_penalty" in values:
        processors.append(RepetitionPenaltyLogitsProcessor(values["repetition_penalty"]))
    if "temperature" in values:
        processors.append(TemperatureLogitsWarper(values["temperature"]))
    if "top_k" in values:
        processors.append(TopKLogitsWarper(values["top_k"]))
    if "top_p" in values:
        processors.append(TopPLogitsWarper(values["top_p"]))
    with torch.no_grad():
        logits = model(input_ids).logits[:, -1, :]
        return torch.softmax(processors(input_ids, logits), -1)[0].double().numpy()


@pytest.mark.parametrize(
    "values",
    [
        {"temperature": 0.7},
        {"top_k": 8, "temperature": 1.5},
        {"top_p": 0.6},
        {"top_k": 40, "top_p": 0.9, "temperature": 1.2, "repetition_penalty": 1.3},
    ],
)
def test_first_token_frequencies_follow_transformers_warpers(values, generator, tiny_checkpoint):
    from scipy.stats import chisquare

    expected = expected_first_token_probs(tiny_checkpoint("gpt2"), values)
    if "repetition_penalty" in values:  # the penalty must change what is drawn
        unpenalised = expected_first_token_probs(
            tiny_checkpoint("gpt2"), {k: v for k, v in values.items() if k != "repetition_penalty"}
        )
        assert np.abs(expected - unpenalised).sum() / 2 > 0.1
    counts = np.zeros_like(expected)
    for start in range(0, DRAWS, 500):
        params = [
            GenerationParameters(do_sample=True, max_new_tokens=1, seed=seed, **values)
            for seed in range(start, start + 500)
        ]
        for result in generator.generate([PROMPT] * len(params), params):
            token = result.tokens[0]
            counts[token.id] += 1
            assert token.logprob == pytest.approx(np.log(expected[token.id]), abs=1e-4)
    kept = expected > 0
    assert counts[~kept].sum() == 0  # nothing outside the top-k / top-p set is ever drawn
    # Chi-square needs expected counts >= 5: rare tokens are pooled into one bin.
    big = expected * DRAWS >= 5
    assert big.sum() >= 3, "the distribution is too peaked for a meaningful test"
    observed = np.append(counts[big], counts[kept & ~big].sum())
    wanted = np.append(expected[big], expected[kept & ~big].sum()) * DRAWS
    if wanted[-1] == 0:
        observed, wanted = observed[:-1], wanted[:-1]
    wanted *= observed.sum() / wanted.sum()
    assert chisquare(observed, wanted).pvalue > SIGNIFICANCE
