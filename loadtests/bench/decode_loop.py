"""Time per generated token: our numpy decode loop vs Optimum's ORTModel*.generate vs PyTorch.

Why it exists: the runtime carries its own decode loops (service/runtime/tasks/generation.py and
translation.py) instead of Optimum's generation wrappers; this measures that choice. The three
contenders run interleaved, round after round, on the same exported tiny model, greedy, the same
number of new tokens, and the medians are reported (the machine is shared and noisy).

    python -m loadtests.bench.decode_loop [--rounds 15] [--new-tokens 32] [--threads 1]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _time(fn: Callable[[], int]) -> float:
    """Seconds per generated token for one call of `fn` (which returns the tokens it made)."""
    start = time.perf_counter()
    tokens = fn()
    return (time.perf_counter() - start) / max(1, tokens)


def contenders_gpt2(root: Path, new_tokens: int, threads: int) -> dict[str, Callable[[], int]]:
    import torch
    from optimum.onnxruntime import ORTModelForCausalLM
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from models.export import export_onnx
    from models.tiny import build_checkpoint
    from service.runtime.tasks.generation import GenerationParameters, TextGenerator

    ckpt = build_checkpoint("gpt2", root / "gpt2")
    onnx_dir = export_onnx(ckpt, root / "gpt2-onnx", "text-generation")
    prompt = "The film was a quiet surprise, and the audience"
    ours = TextGenerator.load(onnx_dir, threads=threads)
    params = GenerationParameters(max_new_tokens=new_tokens)
    tok = AutoTokenizer.from_pretrained(ckpt)
    inputs = tok(prompt, return_tensors="pt")
    torch_model = AutoModelForCausalLM.from_pretrained(ckpt).eval()
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    ort_model = ORTModelForCausalLM.from_pretrained(onnx_dir, session_options=options)
    kwargs = {
        "max_new_tokens": new_tokens,
        "min_new_tokens": new_tokens,
        "do_sample": False,
        "pad_token_id": tok.eos_token_id,
    }

    def run_ours() -> int:
        return ours.generate([prompt], params)[0].generated_tokens

    def run_ort() -> int:
        out = ort_model.generate(**inputs, **kwargs)
        return out.shape[1] - inputs["input_ids"].shape[1]

    def run_torch() -> int:
        with torch.inference_mode():
            out = torch_model.generate(**inputs, **kwargs)
        return out.shape[1] - inputs["input_ids"].shape[1]

    return {
        "ours (numpy loop)": run_ours,
        "Optimum ORTModelForCausalLM.generate": run_ort,
        "PyTorch generate": run_torch,
    }


def contenders_t5(root: Path, new_tokens: int, threads: int) -> dict[str, Callable[[], int]]:
    import onnxruntime as ort
    import torch
    from optimum.onnxruntime import ORTModelForSeq2SeqLM
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    from models.export import export_onnx
    from models.layout import prune_unserved_graphs
    from models.tiny import build_checkpoint
    from service.runtime.tasks.translation import TranslationParameters, Translator

    ckpt = build_checkpoint("t5", root / "t5")
    onnx_dir = export_onnx(ckpt, root / "t5-onnx", "translation")
    served_dir = root / "t5-served"
    import shutil

    shutil.copytree(onnx_dir, served_dir)
    prune_unserved_graphs(served_dir, "translation")
    text = "The film was a quiet surprise, and the audience loved every minute of it."
    ours = Translator.load(served_dir, threads=threads)
    params = TranslationParameters(max_new_tokens=new_tokens, num_beams=1)
    tok = AutoTokenizer.from_pretrained(ckpt)
    inputs = tok("translate English to French: " + text, return_tensors="pt")
    torch_model = AutoModelForSeq2SeqLM.from_pretrained(ckpt).eval()
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    ort_model = ORTModelForSeq2SeqLM.from_pretrained(onnx_dir, session_options=options)
    # min_new_tokens keeps every contender generating the same number of tokens.
    kwargs = {
        "max_new_tokens": new_tokens,
        "min_new_tokens": new_tokens,
        "do_sample": False,
        "num_beams": 1,
    }

    def run_ours() -> int:
        return len(ours.translate_ids([text], params)[0]) - 1  # minus the start token

    def run_ort() -> int:
        return ort_model.generate(**inputs, **kwargs).shape[1] - 1

    def run_torch() -> int:
        with torch.inference_mode():
            return torch_model.generate(**inputs, **kwargs).shape[1] - 1

    return {
        "ours (numpy loop)": run_ours,
        "Optimum ORTModelForSeq2SeqLM.generate": run_ort,
        "PyTorch generate": run_torch,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        for model, build in (("tiny GPT-2", contenders_gpt2), ("tiny T5", contenders_t5)):
            contenders = build(Path(tmp), args.new_tokens, args.threads)
            samples: dict[str, list[float]] = {name: [] for name in contenders}
            for fn in contenders.values():  # warm-up round, not counted
                fn()
            for _ in range(args.rounds):
                for name, fn in contenders.items():
                    samples[name].append(_time(fn))
            ours = statistics.median(samples["ours (numpy loop)"])
            print(
                f"\n{model}: {args.new_tokens} new tokens, greedy, {args.threads} thread(s), "
                f"median of {args.rounds} interleaved rounds"
            )
            print("| contender | ms / token | × ours |")
            print("|---|---|---|")
            for name, values in samples.items():
                median = statistics.median(values)
                print(f"| {name} | {median * 1000:.2f} | {median / ours:.1f} |")


if __name__ == "__main__":
    main()
