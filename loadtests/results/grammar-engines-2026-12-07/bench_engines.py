"""llguidance vs outlines-core on one of our tokenizers: compile time of a typical 10-field JSON
schema and the per-token mask time along a valid output (issue #19's choice of engine).

Neither engine is in the project's lock yet: run it in a scratch venv (README.md here).

    python bench_engines.py path/to/tokenizer.json
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "age": {"type": "integer", "minimum": 0},
        "email": {"type": "string", "format": "email"},
        "city": {"type": "string"},
        "country": {"type": "string", "enum": ["FR", "DE", "US", "GB"]},
        "score": {"type": "number"},
        "active": {"type": "boolean"},
        "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 5},
        "joined": {"type": "string", "format": "date"},
        "notes": {"type": ["string", "null"]},
    },
    "additionalProperties": False,
}
SCHEMA["required"] = list(SCHEMA["properties"])
VALUE = {
    "name": "Ada Lovelace",
    "age": 36,
    "email": "ada@example.org",
    "city": "London",
    "country": "GB",
    "score": 9.5,
    "active": True,
    "tags": ["math", "engines"],
    "joined": "1843-07-10",
    "notes": None,
}


def summary(seconds: list[float]) -> str:
    ordered = sorted(seconds)
    p95 = ordered[max(0, int(0.95 * len(ordered)) - 1)]
    return f"median {statistics.median(ordered) * 1e3:.3f} ms, p95 {p95 * 1e3:.3f} ms"


def fresh_schema(run: int) -> dict:
    """The schema under another title, so that no engine can answer from a cache."""
    return {**SCHEMA, "title": f"run{run}"}


def timed(call):
    started = time.perf_counter()
    result = call()
    return result, time.perf_counter() - started


def bench_llguidance(path: str, ids: list[int]) -> str:
    import llguidance
    import llguidance.numpy as lln

    tokenizer, setup = timed(lambda: llguidance.LLTokenizer(path))
    compiles = []
    for run in range(5):
        grammar = llguidance.LLMatcher.grammar_from_json_schema(fresh_schema(run))
        matcher, seconds = timed(lambda g=grammar: llguidance.LLMatcher(tokenizer, g))
        compiles.append(seconds)
    assert not matcher.is_error(), matcher.get_error()
    mask = lln.allocate_token_bitmask(1, tokenizer.vocab_size)
    steps = []
    for token in ids:
        _, seconds = timed(lambda: lln.fill_next_token_bitmask(matcher, mask, 0))
        steps.append(seconds)
        assert (mask[0, token // 32] >> (token % 32)) & 1, f"llguidance refused token {token}"
        assert matcher.consume_token(token), matcher.get_error()
    return (
        f"llguidance: tokenizer {setup * 1e3:.0f} ms; compile {summary(compiles)}; "
        f"mask per token {summary(steps)} over {len(ids)} tokens; "
        f"accepting at the end: {matcher.is_accepting()}"
    )


def _byte_level_alphabet() -> dict[str, int]:
    """GPT-2's byte-level BPE alphabet: the printable character standing for each byte."""
    printable = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    chars = {b: b for b in printable}
    extra = 0
    for byte in range(256):
        if byte not in chars:
            chars[byte] = 256 + extra
            extra += 1
    return {chr(char): byte for byte, char in chars.items()}


def bench_outlines(path: str, ids: list[int], eos: int) -> str:
    import outlines_core
    from outlines_core.json_schema import build_regex_from_schema

    spec = json.loads(Path(path).read_text(encoding="utf-8"))
    alphabet = _byte_level_alphabet()
    specials = {added["id"] for added in spec["added_tokens"]}
    pieces: dict[bytes, list[int]] = {}
    for piece, token in spec["model"]["vocab"].items():
        if token not in specials and token != eos:
            pieces.setdefault(bytes(alphabet[c] for c in piece), []).append(token)
    vocabulary, setup = timed(lambda: outlines_core.Vocabulary(eos, pieces))
    compiles = []
    for run in range(3):
        regex = build_regex_from_schema(json.dumps(fresh_schema(run)))
        index, seconds = timed(lambda r=regex: outlines_core.Index(r, vocabulary))
        compiles.append(seconds)
    guide = outlines_core.Guide(index)
    steps = []
    for token in ids:
        allowed, seconds = timed(guide.get_tokens)
        steps.append(seconds)
        assert token in allowed, f"outlines-core refused token {token}"
        guide.advance(token)
    return (
        f"outlines-core: vocabulary {setup * 1e3:.0f} ms; compile {summary(compiles)}; "
        f"allowed tokens per token {summary(steps)} over {len(ids)} tokens"
    )


def main() -> None:
    from tokenizers import Tokenizer

    path = sys.argv[1]
    tokenizer = Tokenizer.from_file(path)
    text = json.dumps(VALUE, separators=(",", ":"))
    ids = tokenizer.encode(text, add_special_tokens=False).ids
    eos = next(
        (i for t in ("<|im_end|>", "<|endoftext|>", "</s>") if (i := tokenizer.token_to_id(t))),
        0,
    )
    print(bench_llguidance(path, ids))
    print(bench_outlines(path, ids, eos))


if __name__ == "__main__":
    main()
