"""CTranslate2, the decoding engine a user would reach for instead of ours: the generation and
translation suites' contender, fp32 and int8, on the same checkpoint and the same tokens.

CTranslate2 converts a Hugging Face checkpoint into its own format (`TransformersConverter`,
built once and cached beside the checkpoint) and decodes in C++ with its own KV cache, so it
is the bar a hand-written numpy loop over ONNX Runtime has to clear. Both sides are fed the
token ids the checkpoint's tokenizer makes, greedy, and every engine gets the same threads.

CTranslate2 runs in a process of its own (spawned: no torch in it). In the suites' process,
once PyTorch had run a parallel op, CTranslate2 decoded 30 % slower for good (t5-small, batch 1:
2.75 → 1.91 sentences/s, its CPU per wall second 2.0 → 1.57; two OpenMP runtimes, torch's and
the libgomp CTranslate2 bundles, in one process; AMD EPYC, 2026-12-07). Its own process is the
setting a user would run it in. Only the decode call is timed, in that process, as PyTorch's
`generate` is timed without its tokenizer.
"""

from __future__ import annotations

import json
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from loadtests.bench.interleave import Sample, build_once

# CTranslate2's compute type for each precision the suites name.
COMPUTE_TYPES = {"fp32": "float32", "int8": "int8"}


def converted(checkpoint: Path, precision: str) -> Path:
    """The checkpoint in CTranslate2's format at `precision` (weights stored as computed)."""
    from ctranslate2.converters import TransformersConverter

    def convert(partial: Path) -> None:
        quantization = None if precision == "fp32" else COMPUTE_TYPES[precision]
        TransformersConverter(str(checkpoint)).convert(str(partial), quantization=quantization)

    return build_once(
        checkpoint.with_name(f"{checkpoint.name}-ct2-{precision}"), convert, marker="model.bin"
    )


# --- in the CTranslate2 process -------------------------------------------------------------------

_ENGINES: dict[str, Any] = {}


def _open(kind: str, folder: str, precision: str, threads: int) -> None:
    import ctranslate2

    engine = ctranslate2.Translator if kind == "translator" else ctranslate2.Generator
    _ENGINES[folder] = engine(
        folder,
        device="cpu",
        compute_type=COMPUTE_TYPES[precision],
        intra_threads=threads,
        inter_threads=1,
    )


def _translate(folder: str, sources: list[list[str]], tokens: int) -> tuple[list, float]:
    started = time.perf_counter()
    results = _ENGINES[folder].translate_batch(
        sources, beam_size=1, max_decoding_length=tokens, min_decoding_length=tokens
    )
    seconds = time.perf_counter() - started
    return [r.hypotheses[0] for r in results], seconds


def _generate(
    folder: str, prompts: list[list[str]], tokens: int, forced: bool
) -> tuple[list, float]:
    started = time.perf_counter()
    results = _ENGINES[folder].generate_batch(
        prompts,
        max_length=tokens,
        min_length=tokens if forced else 0,
        sampling_topk=1,
        include_prompt_in_result=False,
    )
    seconds = time.perf_counter() - started
    return [list(r.sequences_ids[0]) for r in results], seconds


# --- in the suite's process -----------------------------------------------------------------------


class _Ct2Process:
    """One CTranslate2 model in a spawned process of its own; calls go over a pipe."""

    def __init__(self, kind: str, folder: Path, precision: str, threads: int) -> None:
        self.folder = str(folder)
        self.pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))
        self.call(_open, kind, self.folder, precision, threads)

    def call(self, function: Any, *args: Any) -> Any:
        return self.pool.submit(function, *args).result()

    def close(self) -> None:
        self.pool.shutdown()


def _vocabulary(folder: Path) -> dict[str, int]:
    """token → id in the converted model's target vocabulary (for comparing token ids)."""
    for name in ("shared_vocabulary.json", "target_vocabulary.json", "vocabulary.json"):
        if (folder / name).exists():
            tokens = json.loads((folder / name).read_text(encoding="utf-8"))
            return {token: i for i, token in enumerate(tokens)}
    raise FileNotFoundError(f"no vocabulary file in {folder}")


class Ct2Translator:
    """A CTranslate2 `Translator`: greedy, exactly `new_tokens` target tokens per sentence."""

    def __init__(self, checkpoint: Path, precision: str, threads: int, new_tokens: int) -> None:
        from transformers import AutoTokenizer

        folder = converted(checkpoint, precision)
        self.process = _Ct2Process("translator", folder, precision, threads)
        self.tokenizer = AutoTokenizer.from_pretrained(checkpoint)
        self.ids = _vocabulary(folder)
        self.new_tokens = new_tokens

    def _translate(self, texts: list[str]) -> tuple[list[list[str]], float]:
        sources = [self.tokenizer.convert_ids_to_tokens(self.tokenizer.encode(t)) for t in texts]
        return self.process.call(_translate, self.process.folder, sources, self.new_tokens)

    def translate(self, texts: list[str]) -> Sample:
        hypotheses, seconds = self._translate(texts)
        return {"sent/s": len(texts) / seconds, "tokens": sum(map(len, hypotheses)) / len(texts)}

    def token_ids(self, text: str) -> list[int]:
        """The target ids CTranslate2 decodes for `text` (no start token)."""
        return [self.ids[token] for token in self._translate([text])[0][0]]

    def close(self) -> None:
        self.process.close()


class Ct2Generator:
    """A CTranslate2 `Generator`: greedy, the prompt forwarded at once, `new_tokens` tokens."""

    def __init__(self, checkpoint: Path, precision: str, threads: int, new_tokens: int) -> None:
        from transformers import AutoTokenizer

        self.process = _Ct2Process(
            "generator", converted(checkpoint, precision), precision, threads
        )
        self.tokenizer = AutoTokenizer.from_pretrained(checkpoint)
        self.new_tokens = new_tokens

    def _run(self, prompts: list[str], forced: bool) -> tuple[list[list[int]], float]:
        tokenize = self.tokenizer.convert_ids_to_tokens
        tokens = [tokenize(self.tokenizer(p).input_ids) for p in prompts]
        return self.process.call(_generate, self.process.folder, tokens, self.new_tokens, forced)

    def generate(self, prompts: list[str]) -> Sample:
        """Exactly `new_tokens` per prompt (eos not allowed before), as PyTorch is forced."""
        ids, seconds = self._run(prompts, forced=True)
        tokens = sum(map(len, ids))
        return {"tok/s": tokens / seconds, "tokens": tokens}

    def token_ids(self, prompt: str) -> list[int]:
        """What it decodes for `prompt`, stopping at eos (left out) like a request."""
        return self._run([prompt], forced=False)[0][0]

    def close(self) -> None:
        self.process.close()


def starts_alike(ours: list[int], theirs: list[int]) -> int:
    """How many leading tokens two decodes share (identical greedy runs share all)."""
    same = 0
    for a, b in zip(ours, theirs, strict=False):
        if a != b:
            break
        same += 1
    return same


def agreement(pairs: list[tuple[list[int], list[int]]]) -> dict[str, Any]:
    """How far ours and CTranslate2 agree on a set of sentences: identical sequences, and the
    mean share of leading tokens in common (a near-tie flipped by float order shows as a
    prefix, not a different model)."""
    identical = sum(a == b for a, b in pairs)
    prefix = [starts_alike(a, b) / max(len(a), len(b), 1) for a, b in pairs]
    return {
        "identical": identical,
        "sentences": len(pairs),
        "mean_common_prefix": round(sum(prefix) / len(prefix), 3) if prefix else float("nan"),
    }
