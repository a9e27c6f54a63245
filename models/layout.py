"""The serving folder's ONNX layout per task (from the task registry): what export,
optimization, parity and the store agree on.

The torch-free runtime loads exactly these graphs: `model.onnx` for single-graph tasks, and for
seq2seq the encoder plus Optimum's two unmerged decoders (first step; steps with KV cache). The
merged decoder Optimum also writes (one graph, both branches behind an `If` on
`use_cache_branch`) is pruned: on tiny T5 the unmerged pair decoded faster (greedy 11.4 vs
16.9 ms, 4 beams 26.6 vs 32.9 ms per sentence), ONNX Runtime's optimizer cannot walk the `If`
node at all, and the quantizer cannot type the fused operators inside it. The price is disk:
the decoder weights are stored twice.
"""

from __future__ import annotations

from pathlib import Path

from service.runtime.registry import TASKS as _REGISTERED

# Each task declares its graphs where it is implemented (`ExportFacts` in its module).
GRAPHS: dict[str, tuple[str, ...]] = {
    name: spec.export.graphs for name, spec in _REGISTERED.items()
}
TASKS = tuple(GRAPHS)


def graph_files(task: str) -> tuple[str, ...]:
    """The ONNX files the runtime loads for `task`."""
    if task not in GRAPHS:
        raise KeyError(f"unknown task {task!r}; known: {', '.join(TASKS)}")
    return GRAPHS[task]


def with_external_data(folder: Path, name: str) -> list[Path]:
    """A graph file and its external-data file (graphs over 2 GB keep weights beside them:
    Optimum writes `model.onnx_data`, ONNX Runtime GenAI's builder `model.onnx.data`)."""
    candidates = (folder / name, folder / f"{name}_data", folder / f"{name}.data")
    return [p for p in candidates if p.exists()]


def prune_unserved_graphs(folder: Path, task: str) -> list[str]:
    """Delete the ONNX graphs an export leaves that the runtime does not load for `task`."""
    keep = set(graph_files(task))
    removed = []
    for path in sorted(Path(folder).glob("*.onnx")):
        if path.name not in keep:
            for file in with_external_data(folder, path.name):
                file.unlink()
                removed.append(file.name)
    return removed
