"""Translation speed: the served path vs PyTorch, Optimum and CTranslate2, at batch 1 and 8.

    python -m loadtests.bench.translation_suite            # t5-small and opus-mt shapes, 48 tokens
    python -m loadtests.bench.translation_suite --quick    # tiny T5 and Marian, < 1 minute

Two architectures, seeded random weights and the project's small trained tokenizers: speed
depends on shapes, not on what the weights learnt.
- `t5`: the t5-small architecture (`T5Config()` defaults: 6+6 layers, d_model 512, vocab 32,128).
- `marian`: the shape of the opus-mt models (Helsinki-NLP/opus-mt-en-de: 6+6 layers, d_model
  512, 8 heads, FFN 2,048, swish, vocab 58,101; the tokenizer's vocab is padded with unused
  tokens to that size).
Random weights may emit eos at any step, so eos (and Marian's pad) is made unreachable: T5's
output row is zeroed (a score of 0 never beats 32,127 random ones), Marian's final logits bias
is -10,000 there. Every contender generates exactly 48 tokens per sentence, greedy (the same
beam width, 1, everywhere). Contenders, interleaved round after round, every engine on all
cores: ours through the in-process `DataPlane` (`run_batched`: the batcher, tokenization, our
numpy decode loop, detokenization), fp32 and, in the full run, the same graphs dynamically
int8-quantized (what `quantize: int8` serves); PyTorch `generate` on all cores and on one thread
(the faster is the baseline); Optimum `ORTModelForSeq2SeqLM.generate` on the same export;
CTranslate2 fp32 and int8 (`ct2_contender.py`) on the same checkpoint. Ours and CTranslate2 fp32
must decode identical tokens: the suite counts the sentences where they do. Goals: ≥ 2.6×
PyTorch sentences/s at batch 1, ≥ 1.9× at batch 8 (issue #9); ≥ CTranslate2 fp32 at both
(issue #21).
"""

from __future__ import annotations

import asyncio
import itertools
import json
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
GOALS = {"batch_1": 2.6, "batch_8": 1.9}
QUICK_GOALS = {"batch_1": 1.0, "batch_8": 1.0}
CT2_GOAL = 1.0  # ours fp32 / CTranslate2 fp32, sentences/s, each batch size
ARCHS = ("t5", "marian")
# Source prefix the checkpoint's task_specific_params give (ours adds it itself; the others are
# fed the prefixed text).
PREFIXES = {"t5": "translate English to French: ", "marian": ""}
OPUS_MT_VOCAB = 58101


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


def _marian_checkpoint(folder: Path, quick: bool) -> None:
    """Tiny Marian (quick) or opus-mt's shape, random weights, eos and pad unreachable; pad is
    the vocab's last token as in every opus-mt checkpoint (CTranslate2's converter drops that
    row: its decoder starts from a zero embedding instead)."""
    import torch
    from transformers import MarianConfig, MarianMTModel, MarianTokenizer

    from models.tiny import build_checkpoint

    build_checkpoint("marian", folder)  # SentencePiece files, vocab.json, generation config
    tiny = MarianMTModel.from_pretrained(folder)
    vocab_file, config_file = folder / "vocab.json", folder / "tokenizer_config.json"
    vocab = json.loads(vocab_file.read_text(encoding="utf-8"))
    size = len(vocab) + 1 if quick else OPUS_MT_VOCAB  # + 1: pad gets a new last id
    old_pad = vocab.pop("<pad>")
    vocab[f"<bench-unused-{old_pad}>"] = old_pad
    vocab.update({f"<bench-unused-{i}>": i for i in range(len(vocab), size - 1)})
    vocab["<pad>"] = pad = size - 1
    vocab_file.write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    tokenizer_config = json.loads(config_file.read_text(encoding="utf-8"))
    added = tokenizer_config["added_tokens_decoder"]
    added[str(pad)] = added.pop(str(old_pad))
    config_file.write_text(json.dumps(tokenizer_config, indent=2), encoding="utf-8")
    tokenizer = MarianTokenizer.from_pretrained(folder)
    assert (len(tokenizer), tokenizer.pad_token_id) == (size, pad)
    shape = (
        {"d_model": 64, "layers": 2, "heads": 4, "ffn": 128, "activation": "gelu"}
        if quick
        else {"d_model": 512, "layers": 6, "heads": 8, "ffn": 2048, "activation": "swish"}
    )
    config = MarianConfig(
        vocab_size=size,
        d_model=shape["d_model"],
        encoder_layers=shape["layers"],
        decoder_layers=shape["layers"],
        encoder_attention_heads=shape["heads"],
        decoder_attention_heads=shape["heads"],
        encoder_ffn_dim=shape["ffn"],
        decoder_ffn_dim=shape["ffn"],
        activation_function=shape["activation"],
        max_position_embeddings=512,
        scale_embedding=True,
        share_encoder_decoder_embeddings=True,
        pad_token_id=pad,
        eos_token_id=tiny.config.eos_token_id,
        decoder_start_token_id=pad,
        forced_eos_token_id=tiny.config.eos_token_id,
    )
    torch.manual_seed(0)
    model = MarianMTModel(config).eval()
    generation = tiny.generation_config
    generation.pad_token_id = generation.decoder_start_token_id = pad
    generation.bad_words_ids = [[pad]]
    model.generation_config = generation
    with torch.no_grad():
        for token in (config.eos_token_id, pad):
            model.final_logits_bias[0, token] = -1e4
    model.save_pretrained(folder)


CHECKPOINTS = {"t5": _t5_checkpoint, "marian": _marian_checkpoint}
NAMES = {
    ("t5", True): "tiny-t5-no-eos",
    ("t5", False): "t5-small-random",
    ("marian", True): "tiny-marian-no-eos",
    ("marian", False): "opus-mt-shape-random",
}
LABELS = {
    ("t5", True): "tiny T5 (2+2 layers, d_model 64)",
    ("t5", False): "t5-small architecture (random weights, seed 0; 60M parameters)",
    ("marian", True): "tiny Marian (2+2 layers, d_model 64)",
    ("marian", False): "opus-mt shape (Marian, random weights, seed 0; 74M parameters)",
}


def model_folders(quick: bool, arch: str = "t5", cache: Path = CACHE) -> dict[str, Path]:
    """checkpoint, export (all graphs, for Optimum), served fp32 and (full run) served int8."""
    from models.export import export_onnx
    from models.layout import prune_unserved_graphs

    name = NAMES[arch, quick]
    folders = {
        "checkpoint": cache / name,
        "export": cache / f"{name}-onnx",
        "fp32": cache / f"{name}-served",
    }
    if not quick:
        folders["int8"] = cache / f"{name}-served-int8"
    build_once(
        folders["checkpoint"],
        lambda partial: CHECKPOINTS[arch](partial, quick),
        marker="config.json",
    )
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

    def token_ids(self, text: str) -> list[int]:
        """The ids ours decodes for `text` (no start token)."""
        runtime = self.plane.models[self.name].runtime
        return [int(i) for i in runtime.translate_ids([text], self.params)[0][1:]]

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


BATCHES = ("batch 1", f"batch {BATCH}")


def arch_contenders(
    arch: str, quick: bool, threads: int, sentences: list[str]
) -> tuple[dict[str, Any], list[Any], dict[str, Any]]:
    """One architecture's timed runs (named "<arch>: <contender>, <batch>"), what to close
    afterwards (ours, CTranslate2's processes), and its facts: tokens made, and how often ours
    and CTranslate2 fp32 agree."""
    import onnxruntime as ort
    import torch
    from optimum.onnxruntime import ORTModelForSeq2SeqLM
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    from loadtests.bench.ct2_contender import Ct2Translator, agreement

    folders = model_folders(quick, arch)
    prefix = PREFIXES[arch]
    singles = itertools.cycle(sentences)
    batches = itertools.cycle([sentences[i : i + BATCH] for i in range(0, len(sentences), BATCH)])
    served = {
        kind: ServedTranslation(folders[kind], threads, f"bench-{arch}-{kind}")
        for kind in ("fp32", "int8")
        if kind in folders
    }
    ct2 = {
        kind: Ct2Translator(folders["checkpoint"], kind, threads, NEW_TOKENS)
        for kind in ("fp32", "int8")
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
        inputs = tokenizer([prefix + t for t in texts], return_tensors="pt", padding=True)
        torch.set_num_threads(torch_threads)
        started = time.perf_counter()
        with torch.inference_mode():
            out = model.generate(**inputs, **kwargs)
        seconds = time.perf_counter() - started
        torch.set_num_threads(threads)
        assert out.shape[1] - 1 == NEW_TOKENS
        return {"sent/s": len(texts) / seconds}

    runs: dict[str, Any] = {}
    picks = (lambda: [next(singles)], lambda: next(batches))
    for batch_name, pick in zip(BATCHES, picks, strict=True):
        for kind, ours in served.items():
            runs[f"{arch}: ours {kind}, {batch_name}"] = lambda ours=ours, pick=pick: (
                ours.translate(pick())
            )
        for kind, theirs in ct2.items():
            runs[f"{arch}: CTranslate2 {kind}, {batch_name}"] = lambda t=theirs, pick=pick: (
                t.translate([prefix + s for s in pick()])
            )
        runs[f"{arch}: PyTorch generate, {batch_name}"] = lambda pick=pick: timed(
            torch_model, pick()
        )
        runs[f"{arch}: PyTorch generate 1 thread, {batch_name}"] = lambda pick=pick: timed(
            torch_model, pick(), 1
        )
        runs[f"{arch}: Optimum ORTModelForSeq2SeqLM.generate, {batch_name}"] = lambda pick=pick: (
            timed(optimum_model, pick())
        )
    # Marian's generation config forces eos at the last step (ours and PyTorch; CTranslate2
    # does not), so the tokens are compared before it.
    same = NEW_TOKENS - 1
    pairs = [
        (served["fp32"].token_ids(s)[:same], ct2["fp32"].token_ids(prefix + s)[:same])
        for s in sentences
    ]
    facts = {
        "label": LABELS[arch, quick],
        "tokens": {kind: len(ours.token_ids(sentences[0])) for kind, ours in served.items()},
        "ours_vs_ct2_fp32_tokens": agreement(pairs),
    }
    return runs, [*served.values(), *ct2.values()], facts


def run(
    quick: bool, out_dir: Path, rounds: int | None = None, threads: int | None = None
) -> dict[str, Any]:
    """Measure, write `translation.json` under `out_dir`, return the BENCHMARKS.md section and
    the goal checks {name: (value, goal, met)}."""
    import torch

    threads = threads or len(os.sched_getaffinity(0))
    rounds = rounds or (2 if quick else 3)
    load_before = load_average()
    torch.set_num_threads(threads)
    sentences = bench_sentences(BATCH * 4)
    runs: dict[str, Any] = {}
    served: list[Any] = []
    facts: dict[str, dict[str, Any]] = {}
    try:
        for arch in ARCHS:
            arch_runs, arch_served, facts[arch] = arch_contenders(arch, quick, threads, sentences)
            runs.update(arch_runs)
            served += arch_served
        samples = interleaved(runs, rounds)
    finally:
        for contender in served:
            contender.close()
    rate = {name: median(values, "sent/s") for name, values in samples.items()}
    goals = QUICK_GOALS if quick else GOALS
    checks: dict[str, Any] = {}
    lines = []
    rows = []
    for arch in ARCHS:
        # The baseline at its best thread count (a generous baseline keeps the ratio honest).
        baseline = {
            batch_name: max(
                rate[f"{arch}: PyTorch generate, {batch_name}"],
                rate[f"{arch}: PyTorch generate 1 thread, {batch_name}"],
            )
            for batch_name in BATCHES
        }
        for batch_name, key in zip(BATCHES, ("batch_1", "batch_8"), strict=True):
            torch_rate = baseline[batch_name]
            ct2_rate = rate[f"{arch}: CTranslate2 fp32, {batch_name}"]
            for kind in facts[arch]["tokens"]:
                ours = rate[f"{arch}: ours {kind}, {batch_name}"]
                suffix = "" if kind == "fp32" else f"_{kind}"
                # The t5 checks keep the names of earlier runs' records.
                name = f"translation_{key}" if arch == "t5" else f"translation_{arch}_{key}"
                checks[f"{name}_vs_pytorch{suffix}"] = check(ours / torch_rate, goals[key])
                lines.append(
                    f"- {arch}, {batch_name}, ours {kind}: **{ours / torch_rate:.2f}× PyTorch** "
                    f"(goal ≥ {goals[key]}×), **{ours / ct2_rate:.2f}× CTranslate2 fp32**"
                    + (f" (goal ≥ {CT2_GOAL}×)" if kind == "fp32" else "")
                )
                if kind == "fp32":
                    checks[f"{name}_vs_ctranslate2"] = check(ours / ct2_rate, CT2_GOAL)
        for name in samples:
            if name.startswith(f"{arch}: "):
                batch_name = name.rsplit(", ", 1)[1]
                rows.append(
                    [name, f"{rate[name]:.2f}", f"{rate[name] / baseline[batch_name]:.2f}×"]
                )
    models = "; ".join(
        f"{arch}: {f['label']}, ours made "
        + ", ".join(f"{v} tokens ({k})" for k, v in f["tokens"].items())
        for arch, f in facts.items()
    )
    same = "; ".join(
        f"{arch}: {a['identical']} of {a['sentences']} sentences identical, "
        f"{a['mean_common_prefix']:.0%} of tokens in the common prefix on average"
        for arch, a in ((arch, f["ours_vs_ct2_fp32_tokens"]) for arch, f in facts.items())
    )
    command = "python -m loadtests.bench.translation_suite" + (" --quick" if quick else "")
    markdown = "\n".join(
        [
            f"Models: {models}. Greedy (num_beams=1 everywhere), exactly {NEW_TOKENS} new tokens "
            f"per sentence, {threads} threads for every engine, median of {rounds} interleaved "
            f"rounds; machine load (1/5/15 min) {load_before} before, {load_average()} after.",
            "",
            table(["contender", "sentences/s", "× PyTorch (best thread count, same batch)"], rows),
            "",
            *lines,
            "",
            f"Ours fp32 and CTranslate2 fp32, the first {NEW_TOKENS - 1} tokens of each of the "
            f"{len(sentences)} sentences: {same}.",
            "",
            f"Command: `{command}`",
        ]
    )
    save_record(
        out_dir,
        "translation.json",
        models={arch: f["label"] for arch, f in facts.items()},
        threads=threads,
        rounds=rounds,
        samples=samples,
        checks=checks,
        agreement={arch: f["ours_vs_ct2_fp32_tokens"] for arch, f in facts.items()},
    )
    return {"markdown": markdown, "checks": checks}


def main(argv: list[str] | None = None) -> int:
    return suite_main(run, __doc__.splitlines()[0], argv)


if __name__ == "__main__":
    sys.exit(main())
