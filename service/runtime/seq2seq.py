"""Sequence-to-sequence generation with an exported encoder-decoder: our own numpy decoding loop.

Translation, summarization and text-to-text are one model family run one way; their task
modules only say which pipeline they reproduce (its `task_specific_params` entry, its prefix,
its answer's key) and what a request may add (translation: the language pair).

Why not `optimum.onnxruntime.ORTModelForSeq2SeqLM.generate`: it imports torch and runs
transformers' generic loop around every ONNX call; on the tiny T5 it took 66 ms where a plain
numpy loop took 4.2 ms (docs/facts.md). Here, 48 greedy tokens on 1 thread: this module 10 ms,
`ORTModelForSeq2SeqLM.generate` 43 ms, PyTorch 81 ms. So the encoder runs once per batch and the
decoder steps through `decoder_model.onnx` (first token: returns the cross-attention
keys/values) and then `decoder_with_past_model.onnx` (KV cache). That pair measured faster than
`decoder_model_merged.onnx` with its `If` node (tiny T5, 48 tokens, 1 thread: 11.4 vs 16.9 ms
greedy, 26.6 vs 32.9 ms with 4 beams), so the merged graph is only the fallback for a folder
that lacks the pair.

The search reproduces transformers 4.57 token for token: greedy (`_sample` without sampling) and
the vectorised `_beam_search` (top 2*beams continuations, finished-hypothesis bank, length
penalty, early_stopping True / False / "never" heuristic), with the logits processors these
configs use (no_repeat_ngram_size, bad_words_ids, min_length / min_new_tokens,
forced_bos_token_id, forced_eos_token_id) in transformers' order. One difference of shape only:
a sentence whose result can no longer change leaves the batch (transformers keeps computing it).

Defaults are the pipeline's, not bare `generate`'s: the text2text pipelines start from their own
defaults (max_new_tokens=256, num_beams=4), let the model's generation config fill what those
leave at the library default, drop their max_new_tokens when the model sets its own max_length,
then apply `task_specific_params[task]` (T5's "summarization": prefix, num_beams, max_length,
min_length, length_penalty, no_repeat_ngram_size, early_stopping; note that the pipeline's
max_new_tokens=256 still wins over a task's max_length). Request parameters come last.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from service.runtime.errors import InvalidInput, ModelLoadError
from service.runtime.onnx_session import create_session
from service.runtime.prepared import Prepared
from service.runtime.task import ExportFacts, Loader, PreparingRuntime, threads
from service.runtime.text_tokenizer import TextTokenizer

if TYPE_CHECKING:
    from service.config import Settings

# What every sequence-to-sequence task exports: Optimum's encoder and split decoders (see above).
SEQ2SEQ_EXPORT = ExportFacts(
    "text2text-generation-with-past",
    parity="seq2seq",
    graphs=("encoder_model.onnx", "decoder_model.onnx", "decoder_with_past_model.onnx"),
)
TARGET_TOKENIZER_FILE = "target_tokenizer.json"  # written for Marian by models/marian_tokenizer.py

# transformers' GenerationConfig() values for the keys this module reads.
_LIBRARY_DEFAULTS: dict[str, Any] = {
    "max_length": 20,
    "max_new_tokens": None,
    "min_length": 0,
    "min_new_tokens": None,
    "num_beams": 1,
    "length_penalty": 1.0,
    "early_stopping": False,
    "no_repeat_ngram_size": 0,
    "bad_words_ids": None,
    "forced_bos_token_id": None,
    "forced_eos_token_id": None,
    "eos_token_id": None,
    "pad_token_id": None,
    "bos_token_id": None,
    "decoder_start_token_id": None,
}
# Text2TextGenerationPipeline._default_generation_config.
_PIPELINE_DEFAULTS: dict[str, Any] = {"max_new_tokens": 256, "num_beams": 4}
# Generation options whose non-default values would change the tokens and that we do not run.
_UNSUPPORTED: dict[str, Any] = {
    "do_sample": False,
    "num_beam_groups": 1,
    "diversity_penalty": 0.0,
    "repetition_penalty": 1.0,
    "encoder_repetition_penalty": 1.0,
    "encoder_no_repeat_ngram_size": 0,
    "suppress_tokens": None,
    "begin_suppress_tokens": None,
    "sequence_bias": None,
    "force_words_ids": None,
    "constraints": None,
    "exponential_decay_length_penalty": None,
    "num_return_sequences": 1,
    "renormalize_logits": False,
    "remove_invalid_values": False,
}
_NEG = np.float32(-1.0e9)  # transformers' "never choose this" score in beam search


class GenerateParameters(BaseModel):
    """`parameters.generate_parameters` of the Hugging Face text2text-generation, summarization
    and translation task specs: keyword
    arguments of `generate`, applied as the pipeline applies them (over its resolved generation
    config, so e.g. T5's pipeline default max_new_tokens=256 still beats a `max_length`).

    Greedy and beam search only: sampling, group beam search and contrastive search are refused
    with a 422 naming the field. The knobs that only act when sampling (`temperature`, `top_k`,
    `top_p`, `typical_p`, `epsilon_cutoff`, `eta_cutoff`) are accepted and, as in `generate`
    without `do_sample`, change nothing; `use_cache` changes nothing either (the decoder always
    runs with its KV cache, the tokens are the same)."""

    model_config = ConfigDict(extra="forbid")

    max_new_tokens: int | None = Field(default=None, ge=1)
    # At least the decoder start and one token: beam search has no answer for less.
    max_length: int | None = Field(
        default=None, ge=2, description="tokens of the output, decoder start included"
    )
    min_new_tokens: int | None = Field(default=None, ge=0)
    min_length: int | None = Field(default=None, ge=0)
    num_beams: int | None = Field(default=None, ge=1)
    early_stopping: bool | Literal["never"] | None = None
    # Beam scores divide by length**length_penalty (summaries: > 1 favours longer ones).
    length_penalty: float | None = Field(default=None, ge=-10, le=10)
    no_repeat_ngram_size: int | None = Field(default=None, ge=0, le=64)
    do_sample: bool | None = None
    num_beam_groups: int | None = Field(default=None, ge=1)
    penalty_alpha: float | None = Field(default=None, ge=0)
    temperature: float | None = Field(default=None, ge=0)
    top_k: int | None = Field(default=None, ge=0)
    top_p: float | None = Field(default=None, ge=0, le=1)
    typical_p: float | None = Field(default=None, ge=0, le=1)
    epsilon_cutoff: float | None = Field(default=None, ge=0, le=1)
    eta_cutoff: float | None = Field(default=None, ge=0, le=1)
    use_cache: bool | None = None

    @field_validator("do_sample")
    @classmethod
    def _no_sampling(cls, value: bool | None) -> bool | None:
        if value:
            raise ValueError(
                "sampling is not supported for sequence-to-sequence tasks (greedy or beam search)"
            )
        return value

    @field_validator("num_beam_groups")
    @classmethod
    def _no_groups(cls, value: int | None) -> int | None:
        if value is not None and value > 1:
            raise ValueError("group beam search is not supported (num_beam_groups must be 1)")
        return value

    @field_validator("penalty_alpha")
    @classmethod
    def _no_contrastive(cls, value: float | None) -> float | None:
        if value:
            raise ValueError("contrastive search is not supported (penalty_alpha must be 0)")
        return value

    def search_options(self) -> dict[str, Any]:
        """The options that decide the tokens, as `generate` keyword arguments."""
        return {key: getattr(self, key) for key in SEARCH_OPTIONS if getattr(self, key) is not None}


SEARCH_OPTIONS = (
    "max_new_tokens",
    "max_length",
    "min_new_tokens",
    "min_length",
    "num_beams",
    "early_stopping",
    "length_penalty",
    "no_repeat_ngram_size",
)


class Seq2SeqParameters(BaseModel):
    """The `parameters` of a sequence-to-sequence request: the Hugging Face task specs'
    `clean_up_tokenization_spaces`, `truncation` and `generate_parameters`, and this service's
    shorthands `max_new_tokens`, `num_beams` and `truncate`; a value given both ways must
    agree."""

    model_config = ConfigDict(extra="forbid")

    max_new_tokens: int | None = Field(default=None, ge=1)
    num_beams: int | None = Field(default=None, ge=1)
    truncate: bool = False
    truncation: (
        bool | Literal["do_not_truncate", "longest_first", "only_first", "only_second"] | None
    ) = None
    clean_up_tokenization_spaces: bool = False  # the pipelines' default
    generate_parameters: GenerateParameters | None = None

    @field_validator("truncation")
    @classmethod
    def _one_text(cls, value: Any) -> Any:
        if value == "only_second":
            raise ValueError("'only_second' truncates a second text; this task takes one")
        return value

    @model_validator(mode="after")
    def _shorthands_agree(self) -> Seq2SeqParameters:
        spec = self.generate_parameters
        for key in ("max_new_tokens", "num_beams"):
            mine, theirs = getattr(self, key), getattr(spec, key) if spec else None
            if mine is not None and theirs is not None and mine != theirs:
                raise ValueError(f"{key} is {mine} but generate_parameters.{key} is {theirs}")
        return self

    @property
    def cuts(self) -> bool:
        """Whether inputs longer than the model takes are cut (else refused)."""
        return self.truncate or self.truncation in (True, "longest_first", "only_first")

    def search_options(self) -> dict[str, Any]:
        """`generate` keyword arguments this request sets, shorthands and spec form merged."""
        options = self.generate_parameters.search_options() if self.generate_parameters else {}
        for key in ("max_new_tokens", "num_beams"):
            if getattr(self, key) is not None:
                options[key] = getattr(self, key)
        return options


@dataclass(frozen=True)
class GenerationSettings:
    """Everything that decides the tokens; `max_length` counts the decoder start token."""

    decoder_start_token_id: int
    eos_token_ids: tuple[int, ...]
    pad_token_id: int
    max_length: int
    min_length: int = 0
    num_beams: int = 1
    length_penalty: float = 1.0
    early_stopping: bool | Literal["never"] = False
    no_repeat_ngram_size: int = 0
    bad_words_ids: tuple[tuple[int, ...], ...] = ()
    forced_bos_token_id: int | None = None
    forced_eos_token_ids: tuple[int, ...] = ()

    def with_overrides(self, **overrides: Any) -> GenerationSettings:
        return replace(self, **overrides)


# ---- generation config resolution ---------------------------------------------------------------


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}


def _as_ids(value: Any) -> tuple[int, ...]:
    if value is None:
        return ()
    return tuple(int(v) for v in value) if isinstance(value, list | tuple) else (int(value),)


def pipeline_generation_config(
    model_config: Mapping[str, Any],
    generation_config: Mapping[str, Any],
    task_params: Mapping[str, Any],
) -> dict[str, Any]:
    """The generation config a transformers text2text pipeline (translation, summarization)
    would hand to `generate`."""
    model_values = (
        dict(generation_config)
        if generation_config
        else {k: v for k, v in model_config.items() if k in _LIBRARY_DEFAULTS or k in _UNSUPPORTED}
    )
    resolved = {**_LIBRARY_DEFAULTS, **_PIPELINE_DEFAULTS}
    for key, value in model_values.items():
        if key.startswith("_") or key == "transformers_version":
            continue
        default = _LIBRARY_DEFAULTS.get(key, _UNSUPPORTED.get(key))
        if resolved.get(key, default) == default and value != default:
            resolved[key] = value
    if (
        resolved["max_new_tokens"] == _PIPELINE_DEFAULTS["max_new_tokens"]
        and resolved["max_length"] is not None
        and resolved["max_length"] != 20
    ):
        resolved["max_new_tokens"] = None
    resolved.update({k: v for k, v in task_params.items() if k != "prefix"})
    return resolved


def settings_from_config(
    config: Mapping[str, Any], max_position_embeddings: int | None = None
) -> GenerationSettings:
    """`generate`'s own length rules applied to a resolved generation config."""
    unsupported = sorted(
        k for k, default in _UNSUPPORTED.items() if config.get(k, default) not in (default, None)
    )
    if unsupported:
        raise ModelLoadError(f"generation options not supported by the ONNX runtime: {unsupported}")
    eos = _as_ids(config.get("eos_token_id"))
    pad = config.get("pad_token_id")
    pad = int(pad) if pad is not None else (eos[0] if eos else 0)
    start = config.get("decoder_start_token_id")
    start = config.get("bos_token_id") if start is None else start
    if start is None:
        raise ModelLoadError("the model names no decoder_start_token_id or bos_token_id")
    if config.get("max_new_tokens") is not None:
        max_length = int(config["max_new_tokens"]) + 1
    else:
        max_length = int(config.get("max_length") or 20)
        if max_length == 20:  # the library default means "20 new tokens"
            max_length = 21 if max_position_embeddings is None else min(21, max_position_embeddings)
    min_length = int(config.get("min_length") or 0)
    if config.get("min_new_tokens") is not None:
        min_length = int(config["min_new_tokens"]) + 1
    bad_words = tuple(
        tuple(int(t) for t in seq)
        for seq in config.get("bad_words_ids") or ()
        if not (len(seq) == 1 and int(seq[0]) in eos)
    )
    early = config.get("early_stopping", False)
    forced_bos = config.get("forced_bos_token_id")
    return GenerationSettings(
        decoder_start_token_id=int(start),
        eos_token_ids=eos,
        pad_token_id=pad,
        max_length=max_length,
        min_length=min_length,
        num_beams=int(config.get("num_beams") or 1),
        length_penalty=float(config.get("length_penalty", 1.0)),
        early_stopping=early if early == "never" else bool(early),
        no_repeat_ngram_size=int(config.get("no_repeat_ngram_size") or 0),
        bad_words_ids=bad_words,
        forced_bos_token_id=None if forced_bos is None else int(forced_bos),
        forced_eos_token_ids=_as_ids(config.get("forced_eos_token_id")),
    )


# ---- the ONNX graphs ----------------------------------------------------------------------------


class Seq2SeqGraphs:
    """Encoder plus decoder with KV cache; hides whether the folder has split or merged decoders."""

    def __init__(self, model_dir: Path, threads: int | None = None) -> None:
        self.encoder = create_session(model_dir / "encoder_model.onnx", threads)
        first = model_dir / "decoder_model.onnx"
        with_past = model_dir / "decoder_with_past_model.onnx"
        merged = model_dir / "decoder_model_merged.onnx"
        if first.exists() and with_past.exists():
            self.first = create_session(first, threads)
            self.with_past = create_session(with_past, threads)
            self.merged = False
        elif merged.exists():
            self.first = self.with_past = create_session(merged, threads)
            self.merged = True
        else:
            raise ModelLoadError(f"{model_dir} has no decoder ONNX graph")
        self._first_outputs = [o.name for o in self.first.get_outputs()]
        self._past_outputs = [o.name for o in self.with_past.get_outputs()]
        self._past_inputs = [
            i for i in self.with_past.get_inputs() if i.name.startswith("past_key_values.")
        ]
        hidden = [i.shape[2] for i in self.first.get_inputs() if i.name == "encoder_hidden_states"]
        self._hidden_size = hidden[0] if hidden and isinstance(hidden[0], int) else 1

    def encode(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        return self.encoder.run(None, {"input_ids": input_ids, "attention_mask": attention_mask})[0]

    def first_step(
        self, input_ids: np.ndarray, hidden: np.ndarray, mask: np.ndarray
    ) -> tuple[np.ndarray, dict[str, np.ndarray], dict[str, np.ndarray]]:
        """Logits of the last position, the decoder's self-attention cache, the cross cache."""
        feed = {
            "input_ids": input_ids,
            "encoder_hidden_states": hidden,
            "encoder_attention_mask": mask,
        }
        if self.merged:
            feed["use_cache_branch"] = np.zeros(1, dtype=bool)
            for spec in self._past_inputs:  # ignored by the no-cache branch; any shape fits
                feed[spec.name] = np.zeros(
                    (input_ids.shape[0], spec.shape[1], 0, spec.shape[3]), dtype=np.float32
                )
        outputs = dict(zip(self._first_outputs, self.first.run(None, feed), strict=True))
        self_kv, cross_kv = {}, {}
        for name, value in outputs.items():
            if name.startswith("present."):
                past = "past_key_values." + name[len("present.") :]
                (cross_kv if ".encoder." in name else self_kv)[past] = value
        return outputs["logits"][:, -1, :], self_kv, cross_kv

    def next_step(
        self,
        input_ids: np.ndarray,
        mask: np.ndarray,
        self_kv: dict[str, np.ndarray],
        cross_kv: dict[str, np.ndarray],
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        feed = {"input_ids": input_ids, "encoder_attention_mask": mask, **self_kv, **cross_kv}
        if self.merged:
            feed["use_cache_branch"] = np.ones(1, dtype=bool)
            # Unused by the cache branch (cross keys/values are cached), but its shape is checked.
            feed["encoder_hidden_states"] = np.zeros(
                (input_ids.shape[0], 1, self._hidden_size), dtype=np.float32
            )
        new_kv = {}
        logits = None
        for name, value in zip(self._past_outputs, self.with_past.run(None, feed), strict=True):
            if name == "logits":
                logits = value[:, -1, :]
            elif ".decoder." in name:
                new_kv["past_key_values." + name[len("present.") :]] = value
        return logits, new_kv


# ---- logits processors (transformers' order) ----------------------------------------------------


def _log_softmax(x: np.ndarray) -> np.ndarray:
    shifted = x - x.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def process_scores(scores: np.ndarray, sequences: np.ndarray, s: GenerationSettings) -> np.ndarray:
    """Apply the logits processors `generate` builds for `s` to (rows, vocab) scores in place."""
    cur_len = sequences.shape[1]
    if s.no_repeat_ngram_size and cur_len + 1 >= s.no_repeat_ngram_size:
        n = s.no_repeat_ngram_size
        for row, tokens in enumerate(sequences.tolist()):
            seen: dict[tuple[int, ...], list[int]] = {}
            for i in range(len(tokens) - n + 1):
                seen.setdefault(tuple(tokens[i : i + n - 1]), []).append(tokens[i + n - 1])
            banned = seen.get(tuple(tokens[cur_len + 1 - n : cur_len]), [])
            scores[row, banned] = -np.inf
    for bad in s.bad_words_ids:
        if len(bad) == 1:
            scores[:, bad[0]] = -np.inf
        elif len(bad) <= cur_len:
            prefix = np.asarray(bad[:-1], dtype=sequences.dtype)
            rows = np.all(sequences[:, cur_len - len(prefix) :] == prefix, axis=1)
            scores[rows, bad[-1]] = -np.inf
    if s.eos_token_ids and cur_len < s.min_length:
        scores[:, list(s.eos_token_ids)] = -np.inf
    if s.forced_bos_token_id is not None and cur_len == 1:
        scores[:] = -np.inf
        scores[:, s.forced_bos_token_id] = 0
    if s.forced_eos_token_ids and cur_len == s.max_length - 1:
        scores[:] = -np.inf
        scores[:, list(s.forced_eos_token_ids)] = 0
    return scores


# ---- search -------------------------------------------------------------------------------------


@dataclass
class _Batch:
    """Per-row decoder state; `take` keeps the rows named (beam reordering, finished sentences)."""

    mask: np.ndarray
    self_kv: dict[str, np.ndarray]
    cross_kv: dict[str, np.ndarray]

    def take(self, rows: np.ndarray, cross_rows: np.ndarray | None = None) -> None:
        self.self_kv = {k: v.take(rows, axis=0) for k, v in self.self_kv.items()}
        if cross_rows is not None:
            self.mask = self.mask.take(cross_rows, axis=0)
            self.cross_kv = {k: v.take(cross_rows, axis=0) for k, v in self.cross_kv.items()}


def _eos_table(s: GenerationSettings, vocab: int) -> np.ndarray:
    table = np.zeros(vocab, dtype=bool)
    table[list(s.eos_token_ids)] = True
    return table


def _gather(values: np.ndarray, index: np.ndarray) -> np.ndarray:
    """`values[b, index[b, j]]` per row b: torch.take_along_dim on dim 1, any trailing dims."""
    return values[np.arange(values.shape[0])[:, None], index]


def _top_k(values: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k largest values per row, best first (like `torch.topk`)."""
    if values.shape[1] > k:
        part = np.argpartition(-values, k - 1, axis=1)[:, :k]
    else:
        part = np.broadcast_to(np.arange(values.shape[1]), values.shape)
    order = np.argsort(-_gather(values, part), axis=1, kind="stable")
    return _gather(part, order)


def greedy_search(
    graphs: Seq2SeqGraphs, hidden: np.ndarray, mask: np.ndarray, s: GenerationSettings
) -> list[list[int]]:
    """transformers' `_sample` with do_sample=False; each sentence's ids up to its eos."""
    n = hidden.shape[0]
    sequences = np.full((n, 1), s.decoder_start_token_id, dtype=np.int64)
    results: list[list[int]] = [[] for _ in range(n)]
    active = np.arange(n)
    logits, self_kv, cross_kv = graphs.first_step(sequences, hidden, mask)
    state = _Batch(mask, self_kv, cross_kv)
    is_eos = _eos_table(s, logits.shape[-1])
    while True:
        scores = process_scores(logits.astype(np.float32, copy=True), sequences, s)
        next_tokens = scores.argmax(axis=-1)
        sequences = np.concatenate([sequences, next_tokens[:, None]], axis=1)
        done = is_eos[next_tokens]  # a fresh array: safe to modify
        if sequences.shape[1] >= s.max_length:
            done[:] = True
        for row in np.flatnonzero(done):
            results[active[row]] = sequences[row].tolist()
        if done.all():
            return results
        if done.any():
            keep = np.flatnonzero(~done)
            active, sequences = active[keep], sequences[keep]
            state.take(keep, keep)
        logits, state.self_kv = graphs.next_step(
            sequences[:, -1:], state.mask, state.self_kv, state.cross_kv
        )


def beam_search(
    graphs: Seq2SeqGraphs, hidden: np.ndarray, mask: np.ndarray, s: GenerationSettings
) -> list[list[int]]:
    """transformers 4.57 `_beam_search` (vectorised version), one best hypothesis per sentence."""
    batch, beams, max_length = hidden.shape[0], s.num_beams, s.max_length
    keep_k = max(2, 1 + len(s.eos_token_ids)) * beams
    lp = s.length_penalty

    # Positions past a hypothesis' length are never read: results are cut to their length.
    running = np.full((batch, beams, max_length), s.pad_token_id, dtype=np.int64)
    running[:, :, 0] = s.decoder_start_token_id
    finished = running.copy()
    running_scores = np.zeros((batch, beams), dtype=np.float32)
    running_scores[:, 1:] = _NEG
    finished_scores = np.full((batch, beams), _NEG, dtype=np.float32)
    finished_lengths = np.zeros((batch, beams), dtype=np.int64)
    is_finished = np.zeros((batch, beams), dtype=bool)
    unsatisfied = np.ones((batch, 1), dtype=bool)
    top_beams = np.arange(keep_k) < beams
    results: list[list[int]] = [[] for _ in range(batch)]
    active = np.arange(batch)

    logits, self_kv, cross_kv = graphs.first_step(running[:, 0, :1], hidden, mask)
    # Every beam of a sentence starts from the same token: compute once, then repeat per beam.
    logits = np.repeat(logits, beams, axis=0)
    is_eos = _eos_table(s, logits.shape[-1])
    state = _Batch(
        np.repeat(mask, beams, axis=0),
        {k: np.repeat(v, beams, axis=0) for k, v in self_kv.items()},
        {k: np.repeat(v, beams, axis=0) for k, v in cross_kv.items()},
    )
    cur_len = 1
    while True:
        n = len(active)
        log_probs = _log_softmax(logits.astype(np.float32, copy=False))
        history = running[:, :, :cur_len].reshape(n * beams, cur_len)
        log_probs = process_scores(log_probs, history, s)
        vocab = log_probs.shape[-1]
        log_probs = log_probs.reshape(n, beams, vocab) + running_scores[:, :, None]
        log_probs = log_probs.reshape(n, beams * vocab)

        # c. the best keep_k continuations over all beams of each sentence
        top = _top_k(log_probs, keep_k)
        top_scores = _gather(log_probs, top)
        source_beam = top // vocab
        top_sequences = _gather(running, source_beam)
        top_sequences[:, :, cur_len] = top % vocab

        # d. which continuations are finished
        if cur_len + 1 >= max_length:
            hits = np.ones((n, keep_k), dtype=bool)
        else:
            hits = is_eos[top_sequences[:, :, cur_len]]

        # e. the best unfinished continuations run on
        run_scores = top_scores + hits.astype(np.float32) * _NEG
        chosen = _top_k(run_scores, beams)
        running = _gather(top_sequences, chosen)
        running_scores = _gather(run_scores, chosen)
        parent = _gather(source_beam, chosen)

        # f. finished continuations enter the bank if they beat what it holds
        just_finished = hits & top_beams[None, :]
        bank = top_scores / np.float32(cur_len**lp)  # cur_len + 1 tokens, less the start
        full = is_finished.all(axis=-1, keepdims=True) & (s.early_stopping is True)
        bank = bank + full.astype(np.float32) * _NEG
        bank = bank + (~unsatisfied).astype(np.float32) * _NEG
        bank = bank + (~just_finished).astype(np.float32) * _NEG
        merged_scores = np.concatenate([finished_scores, bank], axis=1)
        best = _top_k(merged_scores, beams)
        finished = _gather(np.concatenate([finished, top_sequences], axis=1), best)
        finished_scores = _gather(merged_scores, best)
        lengths = np.concatenate(
            [finished_lengths, np.full((n, keep_k), cur_len + 1, dtype=np.int64)], axis=1
        )
        finished_lengths = _gather(lengths, best)
        is_finished = _gather(np.concatenate([is_finished, just_finished], axis=1), best)

        # g. stopping: the heuristic, then per sentence (results of a done sentence are final)
        cur_len += 1
        never = s.early_stopping == "never" and lp > 0.0
        best_length = max_length - 1 if never else cur_len - 1
        best_running = running_scores[:, :1] / np.float32(best_length**lp)
        worst_finished = np.where(is_finished, finished_scores.min(axis=1, keepdims=True), _NEG)
        unsatisfied = unsatisfied & np.any(best_running > worst_finished, axis=-1, keepdims=True)
        done = ~unsatisfied[:, 0]
        if s.early_stopping is True:
            done |= is_finished.all(axis=-1)
        if cur_len >= max_length:
            done[:] = True
        for row in np.flatnonzero(done):
            length = finished_lengths[row, 0] or max_length
            results[active[row]] = finished[row, 0, :length].tolist()
        if done.all():
            return results

        rows = (parent + np.arange(n)[:, None] * beams).reshape(-1)
        if done.any():
            keep = np.flatnonzero(~done)
            active = active[keep]
            running, running_scores = running[keep], running_scores[keep]
            finished, finished_scores = finished[keep], finished_scores[keep]
            finished_lengths, is_finished = finished_lengths[keep], is_finished[keep]
            unsatisfied = unsatisfied[keep]
            rows = rows.reshape(n, beams)[keep].reshape(-1)
            cross_rows = (keep[:, None] * beams + np.arange(beams)).reshape(-1)
            state.take(rows, cross_rows)
        else:
            state.take(rows)
        logits, state.self_kv = graphs.next_step(
            running[:, :, cur_len - 1].reshape(-1, 1), state.mask, state.self_kv, state.cross_kv
        )


# ---- the generator ------------------------------------------------------------------------------


Seq2SeqItem = tuple[str, Seq2SeqParameters]


@dataclass(kw_only=True)
class EncodedText(Prepared[Seq2SeqItem, list[int]]):
    """A text's input ids and the generation settings its parameters resolve to."""

    settings: GenerationSettings


@dataclass
class Seq2SeqGenerator(PreparingRuntime):
    """A loaded encoder-decoder: tokenizers, ONNX graphs, the defaults requests start from.

    `pipeline_task` names the transformers pipeline reproduced: its `task_specific_params` entry
    and prefix apply to every request (a subclass may choose them per request, as translation
    does by language pair)."""

    graphs: Seq2SeqGraphs
    tokenizer: TextTokenizer
    target_tokenizer: TextTokenizer
    model_config: dict[str, Any]
    generation_config: dict[str, Any]
    max_input_tokens: int
    max_new_tokens_limit: int
    max_beams: int

    pipeline_task: ClassVar[str] = "text2text-generation"
    parameters: ClassVar[type[Seq2SeqParameters]] = Seq2SeqParameters

    @classmethod
    def load(
        cls,
        model_dir: Path,
        threads: int | None = None,
        *,
        max_new_tokens_limit: int = 512,
        max_beams: int = 8,
    ) -> Seq2SeqGenerator:
        """Load an exported folder. `max_new_tokens_limit` and `max_beams` bound what a request
        may ask for (and clamp the model's own defaults)."""
        generator = cls(**cls.read_folder(model_dir, threads, max_new_tokens_limit, max_beams))
        generator.check_defaults()
        return generator

    @classmethod
    def load_options(cls, settings: Settings) -> dict[str, Any]:
        """Keyword arguments of `load` a task takes from the deployment's settings."""
        return {}

    @staticmethod
    def read_folder(
        model_dir: Path, threads: int | None, max_new_tokens_limit: int, max_beams: int
    ) -> dict[str, Any]:
        """The fields every encoder-decoder folder gives, as keyword arguments."""
        model_dir = Path(model_dir)
        model_config = _read_json(model_dir / "config.json")
        tokenizer = TextTokenizer.load(model_dir)
        target_tokenizer = tokenizer
        if (model_dir / TARGET_TOKENIZER_FILE).exists():
            from tokenizers import Tokenizer

            target_tokenizer = replace(
                tokenizer, tokenizer=Tokenizer.from_file(str(model_dir / TARGET_TOKENIZER_FILE))
            )
        positions = model_config.get("max_position_embeddings")
        max_input = tokenizer.model_max_length
        if positions:  # absolute position embeddings bound both sides
            max_input = min(max_input, int(positions))
            max_new_tokens_limit = min(max_new_tokens_limit, int(positions) - 1)
        return {
            "graphs": Seq2SeqGraphs(model_dir, threads),
            "tokenizer": tokenizer,
            "target_tokenizer": target_tokenizer,
            "model_config": model_config,
            "generation_config": _read_json(model_dir / "generation_config.json"),
            "max_input_tokens": max_input,
            "max_new_tokens_limit": max_new_tokens_limit,
            "max_beams": max_beams,
        }

    def check_defaults(self) -> None:
        """Refuse unsupported generation options at load, not per request."""
        self._base_settings(self.task_params(self.parameters()))

    def warmup(self) -> None:
        """One short generation, so the first request does not pay for ORT's lazy set-up."""
        self.generate_texts(["Hello."], self.parameters(max_new_tokens=2))

    # --- request -> settings ---------------------------------------------------------------------
    def task_params(self, params: Seq2SeqParameters) -> Mapping[str, Any]:
        """The pipeline's `task_specific_params` entry the request runs with."""
        return (self.model_config.get("task_specific_params") or {}).get(self.pipeline_task) or {}

    def prefix(self, params: Seq2SeqParameters) -> str:
        """The text the pipeline puts before each input: its task's prefix, else the model's."""
        task_params = self.task_params(params)
        if "prefix" in task_params:
            return str(task_params["prefix"] or "")
        return str(self.model_config.get("prefix") or "")

    def _base_settings(self, task_params: Mapping[str, Any]) -> GenerationSettings:
        config = pipeline_generation_config(self.model_config, self.generation_config, task_params)
        settings = settings_from_config(config, self.model_config.get("max_position_embeddings"))
        if settings.max_length - 1 > self.max_new_tokens_limit:
            settings = settings.with_overrides(max_length=self.max_new_tokens_limit + 1)
        return settings.with_overrides(num_beams=min(settings.num_beams, self.max_beams))

    def generation_settings(self, params: Seq2SeqParameters | None = None) -> GenerationSettings:
        """The settings a request runs with: the pipeline's resolved generation config, updated
        by the request's `generate` options as `generate(**kwargs)` updates it."""
        params = params or self.parameters()
        options = params.search_options()
        task_params = self.task_params(params)
        if not options:
            return self._base_settings(task_params)
        config = pipeline_generation_config(self.model_config, self.generation_config, task_params)
        config.update(options)
        settings = settings_from_config(config, self.model_config.get("max_position_embeddings"))
        where = "parameters.generate_parameters." if params.generate_parameters else "parameters."
        if settings.max_length - 1 > self.max_new_tokens_limit:
            if "max_new_tokens" not in options and "max_length" not in options:
                settings = settings.with_overrides(max_length=self.max_new_tokens_limit + 1)
            else:
                key = "max_new_tokens" if "max_new_tokens" in options else "max_length"
                field = ("parameters." if getattr(params, key, None) is not None else where) + key
                raise InvalidInput(
                    f"{key} must be at most {self.max_new_tokens_limit} new tokens", field
                )
        if settings.num_beams > self.max_beams:
            if "num_beams" not in options:
                settings = settings.with_overrides(num_beams=self.max_beams)
            else:
                field = (
                    "parameters.num_beams" if params.num_beams is not None else where + "num_beams"
                )
                raise InvalidInput(f"num_beams must be between 1 and {self.max_beams}", field)
        return settings

    # --- encode / generate / decode --------------------------------------------------------------
    def _encode(self, texts: list[str], prefix: str, truncate: bool) -> list[list[int]]:
        tokenizer = self.tokenizer.tokenizer
        encoded = [e.ids for e in self.tokenizer.encode_batch([prefix + t for t in texts])]
        limit = self.max_input_tokens
        for i, ids in enumerate(encoded):
            if len(ids) <= limit:
                continue
            if not truncate:
                raise InvalidInput(
                    f"input {i} has {len(ids)} tokens; this model takes at most {limit} "
                    "(set parameters.truncate to cut it)",
                    "inputs",
                )
            # What a fast tokenizer does with truncation=True: cut the text, keep the specials.
            encoding = tokenizer.encode(prefix + texts[i], add_special_tokens=False)
            encoding.truncate(limit - tokenizer.num_special_tokens_to_add(False))
            encoded[i] = tokenizer.post_process(encoding).ids
        return encoded

    def generate_ids(
        self,
        texts: list[str],
        params: Seq2SeqParameters | None = None,
        *,
        settings: GenerationSettings | None = None,
    ) -> list[list[int]]:
        """Generated ids per text, as `generate` returns them for that text alone.

        Each list starts with the decoder start token and ends with eos unless the length limit
        came first. `settings` replaces the resolved generation settings (tests use it to reach
        every search option)."""
        params = params or self.parameters()
        settings = settings or self.generation_settings(params)
        if not texts:
            return []
        encoded = self._encode(texts, self.prefix(params), params.cuts)
        return self.generate_encoded(encoded, settings)

    def generate_encoded(
        self, encoded: list[list[int]], settings: GenerationSettings
    ) -> list[list[int]]:
        """Generated ids per tokenized input (`generate_ids` after tokenization)."""
        width = max(len(ids) for ids in encoded)
        pad = self.tokenizer.pad_id if self.tokenizer.pad_id is not None else settings.pad_token_id
        input_ids = np.full((len(encoded), width), pad, dtype=np.int64)
        attention_mask = np.zeros((len(encoded), width), dtype=np.int64)
        for row, ids in enumerate(encoded):
            input_ids[row, : len(ids)] = ids
            attention_mask[row, : len(ids)] = 1
        hidden = self.graphs.encode(input_ids, attention_mask)
        search = beam_search if settings.num_beams > 1 else greedy_search
        return search(self.graphs, hidden, attention_mask, settings)

    def generate_texts(
        self, texts: list[str], params: Seq2SeqParameters | None = None
    ) -> list[str]:
        """Outputs in input order, decoded as the pipelines do."""
        params = params or self.parameters()
        return [self.decode(ids, params) for ids in self.generate_ids(texts, params)]

    def decode(self, ids: list[int], params: Seq2SeqParameters) -> str:
        """Generated ids as text, as the pipelines decode them (specials skipped; spaces cleaned
        up only when asked, their default)."""
        clean = params.clean_up_tokenization_spaces
        return self.target_tokenizer.decode(
            ids, skip_special_tokens=True, clean_up_tokenization_spaces=clean
        )

    def prepare(self, item: Seq2SeqItem) -> EncodedText:
        """The text's ids (prefix included) and the generation settings it asks for."""
        text, params = item
        settings = self.generation_settings(params)
        (ids,) = self._encode([text], self.prefix(params), params.cuts)
        return EncodedText(item=item, rows=[ids], settings=settings)

    def run_prepared(self, batch: Sequence[EncodedText]) -> list[str]:
        """Independent requests batched together; items with equal parameters share one
        generation (beams need one setting)."""
        results: list[str | None] = [None] * len(batch)
        groups: dict[str, list[int]] = {}
        for i, prepared in enumerate(batch):
            groups.setdefault(prepared.item[1].model_dump_json(), []).append(i)
        for indices in groups.values():
            first = batch[indices[0]]
            outputs = self.generate_encoded([batch[i].rows[0] for i in indices], first.settings)
            for i, ids in zip(indices, outputs, strict=True):
                results[i] = self.decode(ids, first.item[1])
        return results  # type: ignore[return-value]

    def close(self) -> None:
        """Nothing to release: the sessions go with the object."""


def seq2seq_loader(cls: type[Seq2SeqGenerator]) -> Loader:
    """Load a generator with the deployment's thread count and request limits, plus what the
    class takes from the settings (`load_options`)."""

    def load(path: Path, settings: Settings) -> Seq2SeqGenerator:
        return cls.load(
            path,
            threads=threads(settings),
            max_new_tokens_limit=settings.limits.max_new_tokens,
            max_beams=settings.limits.max_num_beams,
            **cls.load_options(settings),
        )

    return load
