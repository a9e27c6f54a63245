"""Decoder graphs built for decoding, by ONNX Runtime GenAI's model builder.

Why a second exporter beside Optimum: Optimum's export of a Llama-style decoder traces the
PyTorch code, so every step runs ≈ 3,150 nodes for SmolLM2-135M, two thirds of them shape
arithmetic for masks and rotary positions (`loadtests/bench/levers.md`). `onnxruntime_genai`'s
builder writes the same model from its weights as ≈ 340 nodes: fused `GroupQueryAttention`
(rotary inside, positions from the attention mask), `SkipSimplifiedLayerNormalization`, and for
`int4` blockwise `MatMulNBits` weights. Its graph takes the inputs our decode loop already feeds
(`input_ids`, `attention_mask`, `past_key_values.*`) but expects right-padded caches; the builder
leaves a `genai_config.json`, which is how `service.runtime.tasks.generation` knows.

The builder (PyPI `onnxruntime-genai`, export side only: it imports transformers) runs as a
subprocess: it is chatty and edits `sys.path`.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

PRECISIONS = ("fp32", "int4")
# int4: asymmetric 4-bit blocks of 32 (uint4 with zero points, like the Q4_1 blocks SmolLM2 ships
# in) and the LM head at int8. Measured on SmolLM2-135M (loadtests/bench/levers.md), perplexity
# on 200 corpus sentences: fp32 146.5; this 178.3 at 64.4 tok/s; the builder's defaults
# (symmetric, int4 LM head) 197.1 at 67.1 tok/s; blocks of 16 173.7 at 53.8 tok/s (fp32 24.3).
_EXTRA_OPTIONS = {"int4": ["int4_is_symmetric=false", "int4_algo_config=rtn_last"]}
# Files of the checkpoint the serving folder needs beside the builder's own (model, tokenizer).
_CHECKPOINT_FILES = ("config.json", "generation_config.json")


class GenaiExportError(RuntimeError):
    """The builder failed; the message carries the end of its output."""


def build_decoder(
    checkpoint: Path,
    out_dir: Path,
    precision: str = "fp32",
    cache_dir: Path | None = None,
    options: list[str] | None = None,
) -> Path:
    """Write a CPU decoder graph of `checkpoint` (a Hugging Face folder) into `out_dir`.
    `options`: the builder's `--extra_options` (KEY=VALUE), instead of the precision's preset."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, not {precision!r}")
    checkpoint, out_dir = Path(checkpoint), Path(out_dir)
    cache_dir = Path(cache_dir or out_dir.with_name(out_dir.name + ".builder-cache"))
    command = [
        sys.executable,
        "-m",
        "onnxruntime_genai.models.builder",
        "-i",
        str(checkpoint),
        "-o",
        str(out_dir),
        "-p",
        precision,
        "-e",
        "cpu",
        "-c",
        str(cache_dir),
    ]
    options = _EXTRA_OPTIONS.get(precision, []) if options is None else options
    if options:
        command += ["--extra_options", *options]
    result = subprocess.run(command, capture_output=True, text=True)
    shutil.rmtree(cache_dir, ignore_errors=True)
    if result.returncode != 0 or not (out_dir / "model.onnx").exists():
        raise GenaiExportError(
            f"onnxruntime_genai's builder failed on {checkpoint} "
            f"({precision}):\n{(result.stdout + result.stderr)[-3000:]}"
        )
    for name in _CHECKPOINT_FILES:
        if (checkpoint / name).exists():
            shutil.copy2(checkpoint / name, out_dir / name)
    return out_dir
