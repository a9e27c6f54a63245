"""Which decoder graph and precision for one SmolLM2-135M stream: speed against quality.

    python -m loadtests.bench.decoder_precision --rounds 3 --profile

One generation stream is the goal issue #9 misses most (BENCHMARKS.md): 64 greedy tokens from
SmolLM2-135M-Instruct at ≈ 24 tok/s, 1.1–1.2× PyTorch `generate`, goal 2.3×. Contenders, all
through our own decode loop (`TextGenerator`, 2 threads), interleaved round after round:
- Optimum's export, fp32 (what is served), dynamic int8 (`models.optimize.quantize_graphs`) and
  int4 weights (ONNX Runtime's `MatMulNBitsQuantizer`, blocks of 32, asymmetric; the tied LM head
  stays fp32: its weight is a transpose of the embedding, which the quantizer skips);
- the same checkpoint as ONNX Runtime GenAI's builder writes it (`models/genai_export.py`: fused
  attention), fp32, int4 with the builder's defaults (symmetric, int4 LM head), int4 as
  `build_decoder` makes it (asymmetric, int8 LM head) and the same with blocks of 16.
Printed: tokens/s, the ratio to the served fp32, where each graph's greedy tokens first leave the
fp32 ones (three prompts), and perplexity on 200 corpus sentences (teacher-forced): the weights
are real, so quality can be measured. `--profile` adds ORT's per-operator time of the fp32 export.
"""

from __future__ import annotations

import argparse
import collections
import json
import shutil
import statistics
import time
from pathlib import Path

from loadtests.bench.generation_suite import (
    NEW_TOKENS,
    bench_prompts,
    fused_folder,
    held_out_sentences,
    model_folders,
    perplexity,
)
from loadtests.bench.interleave import build_once


def int8_copy(fp32: Path) -> Path:
    from models.optimize import quantize_graphs

    def make(partial: Path) -> None:
        shutil.copytree(fp32, partial)
        quantize_graphs(partial, "text-generation")

    return build_once(fp32.with_name(fp32.name + "-int8"), make)


def int4_copy(fp32: Path) -> Path:
    import onnx
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    def make(partial: Path) -> None:
        shutil.copytree(fp32, partial, ignore=shutil.ignore_patterns("model.onnx*"))
        quantizer = MatMulNBitsQuantizer(
            onnx.load(str(fp32 / "model.onnx")), block_size=32, is_symmetric=False, accuracy_level=4
        )
        quantizer.process()
        quantizer.model.save_model_to_file(str(partial / "model.onnx"))

    return build_once(fp32.with_name(fp32.name + "-int4"), make)


def operator_profile(folder: Path, prompt: str, tokens: int = 32) -> list[tuple[str, float, int]]:
    """(operator, ms per run, nodes per run), slowest first, over a prefill and `tokens` steps."""
    import onnxruntime as ort

    from service.runtime.tasks.generation import GenerationParameters, TextGenerator

    original = ort.InferenceSession

    class Profiled(original):  # type: ignore[misc, valid-type]
        def __init__(self, path, options, providers=None):
            options.enable_profiling = True
            super().__init__(path, options, providers=providers)

    ort.InferenceSession = Profiled
    try:
        generator = TextGenerator.load(folder, threads=2)
    finally:
        ort.InferenceSession = original
    generator.generate([prompt], GenerationParameters(max_new_tokens=tokens))
    trace = Path(generator.session.end_profiling())
    events = json.loads(trace.read_text())
    trace.unlink()
    runs = sum(1 for e in events if e.get("cat") == "Session" and e["name"] == "model_run")
    time_us: collections.Counter[str] = collections.Counter()
    nodes: collections.Counter[str] = collections.Counter()
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            op = event["args"].get("op_name", "?")
            time_us[op] += event["dur"]
            nodes[op] += 1
    return [(op, us / 1000 / runs, nodes[op] // runs) for op, us in time_us.most_common()]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args(argv)
    from service.runtime.tasks.generation import GenerationParameters, TextGenerator

    _, checkpoint, fp32 = model_folders(quick=False)
    folders = {
        "Optimum export fp32 (served)": fp32,
        "Optimum export, dynamic int8": int8_copy(fp32),
        "Optimum export, int4 MatMulNBits": int4_copy(fp32),
        "builder fp32": fused_folder(checkpoint, "fp32"),
        "builder int4, builder defaults": fused_folder(checkpoint, "int4", [], "int4-defaults"),
        "builder int4 (build_decoder)": fused_folder(checkpoint, "int4"),
        "builder int4, blocks of 16": fused_folder(
            checkpoint,
            "int4",
            ["int4_is_symmetric=false", "int4_algo_config=rtn_last", "int4_block_size=16"],
            "int4-b16",
        ),
    }
    generators = {name: TextGenerator.load(folder, threads=2) for name, folder in folders.items()}
    prompts = bench_prompts(3)
    params = GenerationParameters(max_new_tokens=NEW_TOKENS)
    rates: dict[str, list[float]] = {name: [] for name in generators}
    for generator in generators.values():
        generator.warmup()
    for _ in range(args.rounds):
        for name, generator in generators.items():
            started = time.perf_counter()
            result = generator.generate(prompts[:1], params)[0]
            rates[name].append(result.generated_tokens / (time.perf_counter() - started))
    tokens = {
        name: [[t.id for t in r.tokens] for r in g.generate(prompts, params)]
        for name, g in generators.items()
    }
    served = "Optimum export fp32 (served)"
    base = statistics.median(rates[served])
    texts = held_out_sentences(200)
    print(
        f"SmolLM2-135M-Instruct, greedy, {NEW_TOKENS} new tokens, 2 threads, median of "
        f"{args.rounds} interleaved rounds; perplexity on {len(texts)} corpus sentences\n"
    )
    print(
        "| graph | size MB | tokens/s | × served fp32 | first token differing from served "
        "fp32 (3 prompts) | perplexity |"
    )
    print("|---|---|---|---|---|---|")
    for name, folder in folders.items():
        size = sum(p.stat().st_size for p in folder.glob("model.onnx*")) / 1e6
        first = [
            next(
                (i for i, (a, b) in enumerate(zip(ours, ref, strict=False)) if a != b),
                min(len(ours), len(ref)),
            )
            for ours, ref in zip(tokens[name], tokens[served], strict=True)
        ]
        rate = statistics.median(rates[name])
        print(
            f"| {name} | {size:.0f} | {rate:.1f} | {rate / base:.2f}× | {first} | "
            f"{perplexity(folder, texts, 2):.2f} |",
            flush=True,
        )
    if args.profile:
        print("\nfp32 graph, ORT per-operator time (profiling on, so slower than above):\n")
        print("| operator | ms per run | nodes per run |\n|---|---|---|")
        for op, ms, count in operator_profile(fp32, prompts[0])[:12]:
            print(f"| {op} | {ms:.2f} | {count} |")


if __name__ == "__main__":
    main()
