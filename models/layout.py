"""The serving folder's ONNX layout per task: the one table export, optimization, parity and the
store agree on.

The torch-free runtime loads exactly these graphs: `model.onnx` for single-graph tasks, and for
seq2seq an encoder plus Optimum's merged decoder (one graph with and without KV cache, switched by
`use_cache_branch`). Optimum also writes the two unmerged decoders; they are needed only to
re-optimize and re-merge, so they are pruned before a model is stored (halving its size).
"""

from __future__ import annotations

from pathlib import Path

GRAPHS: dict[str, tuple[str, ...]] = {
    "text-classification": ("model.onnx",),
    "question-answering": ("model.onnx",),
    "text-generation": ("model.onnx",),
    "translation": ("encoder_model.onnx", "decoder_model_merged.onnx"),
    "feature-extraction": ("model.onnx",),
}
TASKS = tuple(GRAPHS)

UNMERGED_DECODERS = ("decoder_model.onnx", "decoder_with_past_model.onnx")


def graph_files(task: str) -> tuple[str, ...]:
    """The ONNX files the runtime loads for `task`."""
    if task not in GRAPHS:
        raise KeyError(f"unknown task {task!r}; known: {', '.join(TASKS)}")
    return GRAPHS[task]


def with_external_data(folder: Path, name: str) -> list[Path]:
    """A graph file and its external-data file (graphs over 2 GB keep weights beside them)."""
    return [p for p in (folder / name, folder / f"{name}_data") if p.exists()]


def prune_unmerged_decoders(folder: Path) -> list[str]:
    """Delete the unmerged decoders a seq2seq export leaves beside the merged one."""
    if not (folder / "decoder_model_merged.onnx").exists():
        return []
    removed = []
    for name in UNMERGED_DECODERS:
        for path in with_external_data(folder, name):
            path.unlink()
            removed.append(path.name)
    return removed
