"""Structured generation: which tokens a grammar allows next, for one decoding sequence.

A request's grammar (a JSON schema, a regular expression or a Lark grammar) becomes an llguidance
matcher. Before each decode step it answers which tokens may come next; the decode loop sets the
others' logits to -inf in that sequence's row only (constrained and free requests share every
batch) and then tells the matcher which token was chosen.

Why llguidance rather than outlines-core: it needs no torch, reads our `tokenizer.json` directly,
and compiles lazily. On SmolLM2's 49,152-token vocabulary a 10-field schema compiled in about
1 ms with masks of 19-25 µs per token; outlines-core took 614-737 ms to compile the same schema
(loadtests/results/grammar-engines-2026-12-07). Its lexer and parser run on "fuel" budgets, so a
pathological regex or schema ends in an error, never in a hang: the budgets are settings.

Compiled grammars stay in a small LRU per model; each request works on a copy of the compiled
matcher, which costs microseconds.
"""

from __future__ import annotations

import json
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any, Literal

import llguidance
import numpy as np
from pydantic import BaseModel, ConfigDict, PrivateAttr, model_validator

from service.config import GrammarSettings
from service.runtime.errors import InvalidInput

# JSON as Python's json.dumps writes it: what small models have seen most. Whitespace is not
# flexible, so a small model cannot spend its token budget on newlines (a schema's own
# "x-guidance" options still override this).
JSON_OPTIONS: llguidance.JsonCompileOptions = {
    "whitespace_flexible": False,
    "item_separator": ", ",
    "key_separator": ": ",
}
# A grammar that allows every token: the same tokens as no grammar at all (tests hold us to it).
ANY_TOKENS = "start: <[*]>*"

# Called after each lookup: (cache hit, seconds spent compiling; 0 for a hit).
CompileObserver = Callable[[bool, float], None]


class Grammar(BaseModel):
    """A request's grammar, in TGI's shape: `{"type": "json", "value": <JSON schema>}` or
    `{"type": "regex", "value": "<pattern>"}`; `lark` takes llguidance's Lark dialect.

    A JSON schema may come as an object or as its JSON text (tritonclient's parameters are
    scalars). `field` (not part of the payload) is the request field errors name.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["json", "regex", "lark"]
    value: Any
    _field: str = PrivateAttr(default="parameters.grammar")

    @model_validator(mode="before")
    @classmethod
    def _from_text(cls, data: Any) -> Any:
        if isinstance(data, str):
            try:
                return json.loads(data)
            except ValueError:
                raise ValueError("grammar: expected a JSON object {type, value}") from None
        return data

    @model_validator(mode="after")
    def _value_type(self) -> Grammar:
        if self.type == "json":
            value = self.value
            if isinstance(value, str):
                try:
                    value = json.loads(value)
                except ValueError as exc:
                    raise ValueError(f"value: not a JSON schema ({exc})") from None
                object.__setattr__(self, "value", value)
            if not isinstance(value, dict | bool):
                raise ValueError("value: a JSON schema is an object")
        elif not isinstance(self.value, str) or not self.value:
            raise ValueError(f"value: a {self.type} grammar is a non-empty string")
        return self

    @classmethod
    def json_schema(cls, schema: Any, field: str) -> Grammar:
        return cls(type="json", value=schema).named(field)

    def named(self, field: str) -> Grammar:
        """This grammar, with errors naming `field` (e.g. `response_format`)."""
        copy = self.model_copy()
        copy._field = field
        return copy

    @property
    def field(self) -> str:
        return self._field

    @property
    def source(self) -> str:
        """The grammar as text: the cache key, and what the size limit counts."""
        if self.type == "json":
            return json.dumps(self.value, sort_keys=True, separators=(",", ":"))
        return str(self.value)


def nesting_depth(value: Any) -> int:
    """How deeply JSON containers nest in `value` (a scalar is 0), without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children: Iterable[Any] = ()
        if isinstance(item, dict):
            children = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        deepest = max(deepest, depth)
        stack.extend((child, depth + 1) for child in children)
    return deepest


class GrammarCompiler:
    """One model's grammars: its llguidance tokenizer (built on first use), the limits, and an
    LRU of compiled matchers that no request has advanced yet."""

    def __init__(
        self,
        tokenizer_json: str,
        eos_ids: Iterable[int],
        vocab_size: int,
        settings: GrammarSettings,
    ) -> None:
        self._tokenizer_json = tokenizer_json
        self._eos_ids = sorted(eos_ids)
        self.vocab_size = vocab_size
        self.settings = settings
        self._tokenizer: llguidance.LLTokenizer | None = None
        self._cache: OrderedDict[tuple[str, str], llguidance.LLMatcher] = OrderedDict()
        self._lock = threading.Lock()
        self.observe: CompileObserver | None = None
        self._limits = llguidance.LLParserLimits(
            initial_lexer_fuel=settings.compile_fuel,
            step_lexer_fuel=settings.step_fuel,
            verbose_errors=False,
        )

    @property
    def tokenizer(self) -> llguidance.LLTokenizer:
        with self._lock:
            if self._tokenizer is None:
                # About 0.2 s for a 49k vocabulary: paid at warm-up, not by the first request.
                self._tokenizer = llguidance.LLTokenizer(
                    self._tokenizer_json, n_vocab=self.vocab_size, eos_token=self._eos_ids
                )
            return self._tokenizer

    def check(self, grammar: Grammar) -> None:
        """Refuse a grammar beyond this deployment's size and nesting limits."""
        size = len(grammar.source.encode("utf-8"))
        if size > self.settings.max_bytes:
            raise InvalidInput(
                f"{grammar.field}: the grammar is {size} bytes; at most "
                f"{self.settings.max_bytes} (grammar.max_bytes)",
                field=grammar.field,
            )
        if grammar.type == "json":
            depth = nesting_depth(grammar.value)
            if depth > self.settings.max_depth:
                raise InvalidInput(
                    f"{grammar.field}: the schema nests {depth} levels deep; at most "
                    f"{self.settings.max_depth} (grammar.max_depth)",
                    field=grammar.field,
                )

    def constraint(self, grammar: Grammar) -> TokenConstraint:
        """A fresh matcher for one sequence (InvalidInput naming the grammar's field when the
        grammar is invalid, unsupported or too large)."""
        key = (grammar.type, grammar.source)
        with self._lock:
            compiled = self._cache.get(key)
            if compiled is not None:
                self._cache.move_to_end(key)
        seconds, hit = 0.0, compiled is not None
        if compiled is None:
            self.check(grammar)
            started = time.perf_counter()
            compiled = self._compile(grammar)
            seconds = time.perf_counter() - started
            with self._lock:
                self._cache[key] = compiled
                while len(self._cache) > self.settings.cache_size:
                    self._cache.popitem(last=False)
        if self.observe is not None:
            self.observe(hit, seconds)
        return TokenConstraint(compiled.deep_copy(), self.vocab_size, grammar.field)

    def _compile(self, grammar: Grammar) -> llguidance.LLMatcher:
        try:
            if grammar.type == "json":
                text = llguidance.LLMatcher.grammar_from_json_schema(
                    grammar.value, defaults=JSON_OPTIONS
                )
            elif grammar.type == "regex":
                text = llguidance.LLMatcher.grammar_from_regex(grammar.value)
            else:
                text = llguidance.LLMatcher.grammar_from_lark(grammar.value)
        except ValueError as exc:
            raise InvalidInput(f"{grammar.field}: {exc}", field=grammar.field) from None
        matcher = llguidance.LLMatcher(self.tokenizer, text, log_level=0, limits=self._limits)
        if matcher.is_error():
            raise InvalidInput(
                f"{grammar.field}: {_summary(matcher.get_error())}", field=grammar.field
            )
        return matcher

    def cached(self) -> int:
        return len(self._cache)


class TokenConstraint:
    """One sequence's matcher: masks a row of logits, then follows the token chosen."""

    def __init__(self, matcher: llguidance.LLMatcher, vocab_size: int, field: str) -> None:
        self._matcher = matcher
        self._bits = np.zeros((vocab_size + 31) // 32, np.int32)
        self.field = field

    def allowed(self, width: int) -> np.ndarray:
        """A boolean mask over `width` logits: the tokens the grammar allows next."""
        bits = self._bits
        self._matcher.unsafe_compute_mask_ptr(bits.ctypes.data, bits.nbytes)
        self._raise_on_error()
        allowed = np.unpackbits(bits.view(np.uint8), bitorder="little").view(np.bool_)
        if allowed.shape[0] < width:  # logits past the tokenizer's vocabulary: never allowed
            allowed = np.concatenate([allowed, np.zeros(width - allowed.shape[0], np.bool_)])
        return allowed[:width]

    def mask(self, logits: np.ndarray) -> np.ndarray:
        """`logits` with every token the grammar forbids at -inf (a new array)."""
        return np.where(self.allowed(logits.shape[-1]), logits, -np.inf).astype(logits.dtype)

    def consume(self, token_id: int) -> None:
        self._matcher.consume_token(token_id)
        self._raise_on_error()

    @property
    def finished(self) -> bool:
        """The grammar is complete and allows nothing more (its only next token is EOS)."""
        return self._matcher.is_stopped()

    def _raise_on_error(self) -> None:
        if self._matcher.is_error():
            raise InvalidInput(
                f"{self.field}: {_summary(self._matcher.get_error())}", field=self.field
            )


def _summary(error: str) -> str:
    """llguidance's error on one line: its first line and the parser's own `error:` line (the
    rest draws carets under the grammar's source)."""
    lines = [line.strip() for line in error.strip().splitlines() if line.strip()]
    if not lines:
        return "the grammar was refused"
    detail = [line.removeprefix("error: ") for line in lines[1:] if line.startswith("error:")]
    return "; ".join([lines[0].rstrip(":"), *detail])
