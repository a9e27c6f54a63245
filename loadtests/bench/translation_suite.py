"""Translation speed: the served path vs PyTorch and Optimum `generate`, at batch 1 and 8.

    python -m loadtests.bench.translation_suite            # t5-small architecture, 48 tokens
    python -m loadtests.bench.translation_suite --quick    # tiny T5, < 1 minute

The model is the t5-small architecture (`T5Config()` defaults: 6+6 layers, d_model 512, vocab
32,128) with seeded random weights and the project's small trained T5 tokenizer: speed depends on
shapes, not on what the weights learnt. Random weights may emit eos at any step, so eos is made
unreachable (its output row is zeroed: a score of 0 never beats 32,127 random ones) and every
contender generates exactly 48 tokens per sentence, greedy (the same beam width, 1, everywhere).
Contenders, interleaved round after round, every engine on all cores: ours through the in-process
`DataPlane` (`run_batched`: the batcher, tokenization, our numpy decode loop, detokenization),
fp32 and, in the full run, the same graphs dynamically int8-quantized (what `quantize: int8`
serves); PyTorch `generate` on all cores and on one thread (the faster is the baseline);
Optimum `ORTModelForSeq2SeqLM.generate` on the same export. Goals
(issue #9): ≥ 2.6× PyTorch sentences/s at batch 1, ≥ 1.9× at batch 8.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import shutil
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
NEW_TOKENS = 48
BATCH = 8
PREFIX = "translate English to French: "
GOALS = {"batch_1": 2.6, "batch_8": 1.9}
QUICK_GOALS = {"batch_1": 1.0, "batch_8": 1.0}


def _t5_checkpoint(folder: Path, quick: bool) -> None:
    """Tiny T5 (quick) or the t5-small architecture with random weights, eos unreachable."""
    import torch
    from transformers import T5Config, T5ForConditionalGeneration

    from models.tiny import build_checkpoint

    build_checkpoint("t5", folder)  # tokenizer, task_specific_params (prefixes)
    tiny = T5Config.from_pretrained(folder)
    config = (
        tiny
        if quick
        else T5Config(
            pad_token_id=0,
            eos_token_id=1,
            decoder_start_token_id=0,
            task_specific_params=tiny.task_specific_params,
        )
    )
    torch.manual_seed(0)
    model = T5ForConditionalGeneration(config).eval()
    with torch.no_grad():
        model.lm_head.weight[config.eos_token_id] = 0.0
        if config.tie_word_embeddings:  # lm_head is the shared embedding: zeroed above
            assert model.lm_head.weight.data_ptr() == model.shared.weight.data_ptr()
    model.save_pretrained(folder)


def model_folders(quick: bool, cache: Path = CACHE) -> dict[str, Path]:
    """checkpoint, export (all graphs, for Optimum), served fp32 and (full run) served int8."""
    from models.export import export_onnx
    from models.layout import prune_unserved_graphs

    name = "tiny-t5-no-eos" if quick else "t5-small-random"
    folders = {
        "checkpoint": cache / name,
        "export": cache / f"{name}-onnx",
        "fp32": cache / f"{name}-served",
    }
    if not quick:
        folders["int8"] = cache / f"{name}-served-int8"
    if not (folders["checkpoint"] / "config.json").exists():
        _t5_checkpoint(folders["checkpoint"], quick)
    build_once(
        folders["export"],
        lambda partial: export_onnx(folders["checkpoint"], partial, "translation"),
        marker="encoder_model.onnx",
    )
    if not (folders["fp32"] / "encoder_model.onnx").exists():
        shutil.copytree(folders["export"], folders["fp32"])
        prune_unserved_graphs(folders["fp32"], "translation")
    if "int8" in folders:
        from models.optimize import quantize_graphs

        def int8(partial: Path) -> None:
            shutil.copytree(folders["fp32"], partial)
            quantize_graphs(partial, "translation")

        build_once(folders["int8"], int8, marker="encoder_model.onnx")
    return folders


def bench_sentences(count: int) -> list[str]:
    """Real English sentences of 10-25 words from the project's corpus."""
    from models.tiny import corpus_sentences

    return [s for s in corpus_sentences() if 10 <= len(s.split()) <= 25][:count]


class ServedTranslation:
    """Our served path in process: a DataPlane holding one translation model."""

    def __init__(self, folder: Path, threads: int, name: str) -> None:
        from service.config import Settings
        from service.dataplane import DataPlane
        from service.model_repository import ModelRecord
        from service.runtime.tasks.translation import TranslationParameters

        settings = Settings()
        settings.models.threads = threads
        self.plane = DataPlane(settings)
        self.name = name
        self.plane.load(
            [
                ModelRecord(
                    name=name, tag=f"{name}:local", task="translation", path=folder, default=True
                )
            ]
        )
        self.params = TranslationParameters(max_new_tokens=NEW_TOKENS, num_beams=1)
        self.loop = asyncio.new_event_loop()

    def generated_tokens(self, text: str) -> int:
        runtime = self.plane.models[self.name].runtime
        return len(runtime.translate_ids([text], self.params)[0]) - 1  # minus the start token

    async def _translate(self, texts: list[str]) -> list[Any]:
        return await self.plane.run_batched(
            "translation", [(t, self.params) for t in texts], self.name, "http"
        )

    def translate(self, texts: list[str]) -> Sample:
        started = time.perf_counter()
        self.loop.run_until_complete(self._translate(texts))
        return {"sent/s": len(texts) / (time.perf_counter() - started)}

    def close(self) -> None:
        self.plane.close()
        self.loop.run_until_complete(asyncio.sleep(0))  # let the batcher's task see its cancel
        self.loop.close()


def contenders(
    quick: bool, threads: int
) -> tuple[dict[str, Any], list[ServedTranslation], dict[str, int]]:
    import onnxruntime as ort
    import torch
    from optimum.onnxruntime import ORTModelForSeq2SeqLM
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    folders = model_folders(quick)
    torch.set_num_threads(threads)
    sentences = bench_sentences(BATCH * 4)
    singles = itertools.cycle(sentences)
    batches = itertools.cycle([sentences[i : i + BATCH] for i in range(0, len(sentences), BATCH)])
    served = {
        kind: ServedTranslation(folders[kind], threads, f"bench-t5-{kind}")
        for kind in ("fp32", "int8")
        if kind in folders
    }
    tokenizer = AutoTokenizer.from_pretrained(folders["checkpoint"])
    torch_model = AutoModelForSeq2SeqLM.from_pretrained(folders["checkpoint"]).eval()
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    optimum_model = ORTModelForSeq2SeqLM.from_pretrained(folders["export"], session_options=options)
    kwargs = {
        "max_new_tokens": NEW_TOKENS,
        "min_new_tokens": NEW_TOKENS,
        "do_sample": False,
        "num_beams": 1,
    }

    def timed(model: Any, texts: list[str], torch_threads: int = threads) -> Sample:
        inputs = tokenizer([PREFIX + t for t in texts], return_tensors="pt", padding=True)
        torch.set_num_threads(torch_threads)
        started = time.perf_counter()
        with torch.inference_mode():
            out = model.generate(**inputs, **kwargs)
        seconds = time.perf_counter() - started
        torch.set_num_threads(threads)
        assert out.shape[1] - 1 == NEW_TOKENS
        return {"sent/s": len(texts) / seconds}

    runs: dict[str, Any] = {}
    for batch_name, pick in (
        ("batch 1", lambda: [next(singles)]),
        (f"batch {BATCH}", lambda: next(batches)),
    ):
        for kind, ours in served.items():
            runs[f"ours {kind}, {batch_name}"] = lambda ours=ours, pick=pick: ours.translate(pick())
        runs[f"PyTorch generate, {batch_name}"] = lambda pick=pick: timed(torch_model, pick())
        runs[f"PyTorch generate 1 thread, {batch_name}"] = lambda pick=pick: timed(
            torch_model, pick(), 1
        )
        runs[f"Optimum ORTModelForSeq2SeqLM.generate, {batch_name}"] = lambda pick=pick: timed(
            optimum_model, pick()
        )
    lengths = {kind: ours.generated_tokens(sentences[0]) for kind, ours in served.items()}
    return runs, list(served.values()), lengths


def run(
    quick: bool, out_dir: Path, rounds: int | None = None, threads: int | None = None
) -> dict[str, Any]:
    """Measure, write `translation.json` under `out_dir`, return the BENCHMARKS.md section and
    the goal checks {name: (value, goal, met)}."""
    threads = threads or len(os.sched_getaffinity(0))
    rounds = rounds or (2 if quick else 3)
    load_before = load_average()
    runs, served, lengths = contenders(quick, threads)
    try:
        samples = interleaved(runs, rounds)
    finally:
        for ours in served:
            ours.close()
    rate = {name: median(values, "sent/s") for name, values in samples.items()}
    goals = QUICK_GOALS if quick else GOALS
    checks: dict[str, Any] = {}
    lines = []
    # The baseline at its best thread count (a generous baseline keeps the ratio honest).
    baseline = {
        batch_name: max(
            rate[f"PyTorch generate, {batch_name}"],
            rate[f"PyTorch generate 1 thread, {batch_name}"],
        )
        for batch_name in ("batch 1", f"batch {BATCH}")
    }
    for batch_name, key in (("batch 1", "batch_1"), (f"batch {BATCH}", "batch_8")):
        torch_rate = baseline[batch_name]
        for kind in lengths:
            ratio = rate[f"ours {kind}, {batch_name}"] / torch_rate
            suffix = "" if kind == "fp32" else f"_{kind}"
            checks[f"translation_{key}_vs_pytorch{suffix}"] = check(ratio, goals[key])
            lines.append(
                f"- {batch_name}, ours {kind}: **{ratio:.2f}× PyTorch** (goal ≥ {goals[key]}×)"
            )
    rows = []
    for name in samples:
        batch_name = name.rsplit(", ", 1)[1]
        rows.append([name, f"{rate[name]:.2f}", f"{rate[name] / baseline[batch_name]:.2f}×"])
    label = (
        "tiny T5 (2+2 layers, d_model 64)"
        if quick
        else "t5-small architecture (random weights, seed 0; 60M parameters)"
    )
    command = "python -m loadtests.bench.translation_suite" + (" --quick" if quick else "")
    markdown = "\n".join(
        [
            f"Model: {label}; greedy (num_beams=1 everywhere), exactly {NEW_TOKENS} new tokens per "
            f"sentence (ours made {', '.join(f'{v} ({k})' for k, v in lengths.items())}), "
            f"{threads} threads for every engine, median of {rounds} interleaved rounds; machine "
            f"load (1/5/15 min) {load_before} before, {load_average()} after.",
            "",
            table(["contender", "sentences/s", "× PyTorch (best thread count, same batch)"], rows),
            "",
            *lines,
            "",
            f"Command: `{command}`",
        ]
    )
    save_record(
        out_dir,
        "translation.json",
        model=label,
        threads=threads,
        rounds=rounds,
        samples=samples,
        checks=checks,
    )
    return {"markdown": markdown, "checks": checks}


def main(argv: list[str] | None = None) -> int:
    return suite_main(run, __doc__.splitlines()[0], argv)


if __name__ == "__main__":
    sys.exit(main())
