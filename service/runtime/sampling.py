"""Next-token choice in numpy, with `transformers`' logits processors re-implemented one for one.

Greedy output must equal `model.generate(do_sample=False)` token for token, so the processors
keep transformers' semantics, order and float32 arithmetic: repetition penalty, then (sampling
only) temperature, top-k, top-p. Random draws cannot follow torch's generator; each request gets
its own seeded numpy `Generator` instead, so the same seed gives the same text.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field

import numpy as np

FILTERED = -np.inf


def apply_repetition_penalty(
    scores: np.ndarray, token_ids: np.ndarray, penalty: float
) -> np.ndarray:
    """`RepetitionPenaltyLogitsProcessor`: every id seen (prompt and generated) once, negative
    scores multiplied and positive ones divided. `scores` is [..., vocab], `token_ids` [..., n]."""
    if penalty == 1.0 or token_ids.shape[-1] == 0:
        return scores
    scores = scores.copy()
    ids = token_ids.astype(np.int64)
    seen = np.take_along_axis(scores, ids, axis=-1)
    seen = np.where(seen < 0, seen * np.float32(penalty), seen / np.float32(penalty))
    np.put_along_axis(scores, ids, seen.astype(scores.dtype), axis=-1)
    return scores


def apply_logit_bias(scores: np.ndarray, bias: dict[int, float]) -> np.ndarray:
    """OpenAI's `logit_bias`: added to the raw scores of the named tokens before anything else
    (-100 bans a token, +100 all but forces it)."""
    if not bias:
        return scores
    scores = scores.copy()
    ids = np.fromiter(bias, dtype=np.int64, count=len(bias))
    scores[..., ids] += np.fromiter(bias.values(), dtype=scores.dtype, count=len(bias))
    return scores


def apply_presence_frequency(
    scores: np.ndarray, generated: np.ndarray, presence: float, frequency: float
) -> np.ndarray:
    """OpenAI's penalties over the tokens generated so far (not the prompt): each one that
    appeared loses `presence`, plus `frequency` per time it appeared."""
    if (not presence and not frequency) or generated.shape[-1] == 0:
        return scores
    ids, counts = np.unique(generated.astype(np.int64), return_counts=True)
    scores = scores.copy()
    scores[..., ids] -= (np.float32(presence) + np.float32(frequency) * counts).astype(scores.dtype)
    return scores


def apply_temperature(scores: np.ndarray, temperature: float) -> np.ndarray:
    """`TemperatureLogitsWarper`."""
    if temperature == 1.0:
        return scores
    return scores / np.float32(temperature)


def apply_top_k(scores: np.ndarray, top_k: int, min_tokens_to_keep: int = 1) -> np.ndarray:
    """`TopKLogitsWarper`: drop scores below the k-th largest (ties with it survive)."""
    top_k = min(max(top_k, min_tokens_to_keep), scores.shape[-1])
    if top_k <= 0:
        return scores
    kth = -np.partition(-scores, top_k - 1, axis=-1)[..., top_k - 1 : top_k]
    return np.where(scores < kth, FILTERED, scores).astype(scores.dtype)


def apply_top_p(scores: np.ndarray, top_p: float, min_tokens_to_keep: int = 1) -> np.ndarray:
    """`TopPLogitsWarper`: keep the smallest set of most likely tokens whose probability reaches
    `top_p`, computed like transformers (ascending sort, float32 cumulative sum, `<= 1 - top_p`
    removed, the `min_tokens_to_keep` most likely always kept)."""
    if top_p >= 1.0:
        return scores
    order = np.argsort(scores, axis=-1, kind="stable")
    ascending = np.take_along_axis(scores, order, axis=-1)
    cumulative = np.cumsum(softmax(ascending).astype(scores.dtype), axis=-1, dtype=scores.dtype)
    remove_sorted = cumulative <= scores.dtype.type(1 - top_p)
    remove_sorted[..., -min_tokens_to_keep:] = False
    remove = np.empty_like(remove_sorted)
    np.put_along_axis(remove, order, remove_sorted, axis=-1)
    return np.where(remove, FILTERED, scores).astype(scores.dtype)


def softmax(scores: np.ndarray) -> np.ndarray:
    """Probabilities along the last axis, max-shifted as torch.softmax (sampling here; the
    encoder tasks' label and token scores too)."""
    shifted = np.exp(scores - np.max(scores, axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


def log_softmax(scores: np.ndarray) -> np.ndarray:
    """In float64, so that the log-probabilities we report do not lose the tail."""
    scores = scores.astype(np.float64)
    shifted = scores - np.max(scores, axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def new_seed() -> int:
    """A seed for a request that did not send one (reported back, as TGI does)."""
    return secrets.randbits(63)


@dataclass
class TokenChooser:
    """One sequence's decoding rule: processors in transformers' order, then argmax or a draw.

    `None` (or the neutral value) switches a processor off, as in `GenerationConfig`; unlike
    transformers, an unset `top_k` means no top-k filter (TGI's default), not 50.
    """

    do_sample: bool = False
    temperature: float | None = None
    top_k: int | None = None
    top_p: float | None = None
    repetition_penalty: float | None = None
    seed: int | None = None
    # OpenAI's processors, applied before transformers' (none of them by default).
    logit_bias: dict[int, float] = field(default_factory=dict)
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    # How many most likely alternatives to report with each chosen token (0: none).
    top_n: int = 0
    rng: np.random.Generator = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.do_sample and self.seed is None:
            self.seed = new_seed()
        self.rng = np.random.default_rng(self.seed)

    def process(
        self, logits: np.ndarray, token_ids: np.ndarray, generated: np.ndarray | None = None
    ) -> np.ndarray:
        """The scores the next token is chosen from: float32 [vocab], filtered ones at -inf.
        `token_ids` are the prompt and the tokens so far, `generated` the latter alone."""
        scores = logits.astype(np.float32, copy=False)
        scores = apply_logit_bias(scores, self.logit_bias)
        if generated is not None:
            scores = apply_presence_frequency(
                scores, generated, self.presence_penalty, self.frequency_penalty
            )
        if self.repetition_penalty is not None:
            scores = apply_repetition_penalty(scores, token_ids, self.repetition_penalty)
        if self.do_sample:
            if self.temperature is not None:
                scores = apply_temperature(scores, self.temperature)
            if self.top_k:
                scores = apply_top_k(scores, self.top_k)
            if self.top_p is not None:
                scores = apply_top_p(scores, self.top_p)
        return scores

    def choose(
        self, logits: np.ndarray, token_ids: np.ndarray, generated: np.ndarray | None = None
    ) -> tuple[int, float, tuple[tuple[int, float], ...]]:
        """(token id, its log-probability under the processed distribution, the `top_n` most
        likely (id, log-probability), best first)."""
        scores = self.process(logits, token_ids, generated)
        logprobs = log_softmax(scores)
        top: tuple[tuple[int, float], ...] = ()
        if self.top_n:
            best = np.argpartition(-logprobs, min(self.top_n, len(logprobs)) - 1)[: self.top_n]
            best = best[np.argsort(-logprobs[best], kind="stable")]
            top = tuple((int(i), float(logprobs[i])) for i in best)
        if self.do_sample:
            cumulative = np.cumsum(np.exp(logprobs))
            # side="right" can never land on a zero-probability (filtered) token.
            token = int(
                np.searchsorted(cumulative, self.rng.random() * cumulative[-1], side="right")
            )
            token = min(token, len(cumulative) - 1)
        else:
            token = int(np.argmax(scores))  # first maximum, like torch.argmax
        return token, float(logprobs[token]), top
