"""The in-process contenders: the hardware limit (plain ONNX Runtime) and the PyTorch pipeline.

The limit is what this CPU can do with the very graph we serve when nothing else is in the way:
`onnxruntime.InferenceSession` fed by `tokenizers.Tokenizer.encode_batch`, the whole sentence set
tokenized, sorted by length and cut into batches padded only to their own longest member. No
post-processing (argmax, spans, pooling cost microseconds), no server, no copies. Batch 1 gives
the latency floor a served request is compared with.

The PyTorch side is what a user writes by hand: `transformers.pipeline` (or SentenceTransformer
for embeddings) on the same checkpoint, one call per sentence.
"""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

_INT_TYPES = {"tensor(int64)": np.int64, "tensor(int32)": np.int32}


class PlainOrt:
    """An exported encoder graph run the plainest way: one ORT session, numpy padding."""

    def __init__(
        self,
        model_dir: Path,
        threads: int | None = None,
        max_length: int = 512,
        spinning: bool = True,
    ):
        import onnxruntime as ort
        from tokenizers import Tokenizer

        from service.runtime.onnx_session import default_threads

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or default_threads()
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        # ORT's default spins idle pool threads: fastest on a quiet machine, wasteful on a
        # shared one; the suite measures both and takes the better as the limit.
        options.add_session_config_entry(
            "session.intra_op.allow_spinning", "1" if spinning else "0"
        )
        self.session = ort.InferenceSession(
            str(Path(model_dir) / "model.onnx"), options, providers=["CPUExecutionProvider"]
        )
        self.inputs = {i.name: _INT_TYPES[i.type] for i in self.session.get_inputs()}
        self.tokenizer = Tokenizer.from_file(str(Path(model_dir) / "tokenizer.json"))
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(max_length)

    def encode(self, items: Sequence[str | tuple[str, str]]) -> list[Any]:
        return self.tokenizer.encode_batch(list(items))

    def run(self, encodings: Sequence[Any]) -> list[np.ndarray]:
        width = max(len(e) for e in encodings)
        ids = np.zeros((len(encodings), width), dtype=np.int64)
        mask = np.zeros_like(ids)
        types = np.zeros_like(ids)
        for row, e in enumerate(encodings):
            ids[row, : len(e)] = e.ids
            mask[row, : len(e)] = 1
            types[row, : len(e)] = e.type_ids
        arrays = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
        feed = {name: arrays[name].astype(dtype, copy=False) for name, dtype in self.inputs.items()}
        return self.session.run(None, feed)

    def sentences_per_second(
        self, items: Sequence[Any], batch_size: int, length_sorted: bool = True
    ) -> float:
        """Tokenize everything, sort by length (or not), run in batches; items per second."""
        return self.measure(items, batch_size, length_sorted)[0]

    def measure(
        self, items: Sequence[Any], batch_size: int, length_sorted: bool = True
    ) -> tuple[float, float]:
        """(items per second, CPU ms per item): CPU time, all threads of this process, is what
        a busy shared machine distorts least, so the served side is compared on it too."""
        started, cpu_started = time.perf_counter(), time.process_time()
        encodings = self.encode(items)
        if length_sorted:
            encodings.sort(key=len)
        for i in range(0, len(encodings), batch_size):
            self.run(encodings[i : i + batch_size])
        cpu_ms = (time.process_time() - cpu_started) * 1000 / len(items)
        return len(items) / (time.perf_counter() - started), cpu_ms

    def measure_side_by_side(
        self, items: Sequence[Any], batch_size: int, runners: int = 2
    ) -> tuple[float, float]:
        """Like `measure`, but the sorted batches are taken by `runners` threads at once (each
        ORT call single-threaded when the session has 1 thread): how the served encoders use
        the cores under load (`EncoderModel.use_runners`), here with nothing else running."""
        started, cpu_started = time.perf_counter(), time.process_time()
        encodings = sorted(self.encode(items), key=len)
        batches = iter(
            [encodings[i : i + batch_size] for i in range(0, len(encodings), batch_size)]
        )
        lock = threading.Lock()

        def drain() -> None:
            while True:
                with lock:
                    batch = next(batches, None)
                if batch is None:
                    return
                self.run(batch)

        others = [threading.Thread(target=drain) for _ in range(runners - 1)]
        for thread in others:
            thread.start()
        drain()
        for thread in others:
            thread.join()
        cpu_ms = (time.process_time() - cpu_started) * 1000 / len(items)
        return len(items) / (time.perf_counter() - started), cpu_ms

    def batch1_latencies_ms(self, items: Sequence[Any]) -> list[float]:
        """Per-item latency of tokenize + run, one at a time (the floor a served request has)."""
        latencies = []
        for item in items:
            started = time.perf_counter()
            self.run(self.encode([item]))
            latencies.append((time.perf_counter() - started) * 1000)
        return latencies


def torch_pipeline(task: str, checkpoint: Path, threads: int | None = None) -> Callable[[Any], Any]:
    """One call per input, exactly as a user writes it with `transformers` (or
    sentence-transformers for embeddings)."""
    import torch

    if threads:
        torch.set_num_threads(threads)
    if task == "feature-extraction":
        from sentence_transformers import SentenceTransformer

        model = SentenceTransformer(str(checkpoint), device="cpu")
        return lambda text: model.encode(text)
    from transformers import pipeline

    pipe = pipeline(task, model=str(checkpoint), device="cpu")
    if task == "question-answering":
        return lambda pair: pipe(question=pair[0], context=pair[1])
    return pipe


def calls_per_second(call: Callable[[Any], Any], items: Sequence[Any]) -> float:
    started = time.perf_counter()
    for item in items:
        call(item)
    return len(items) / (time.perf_counter() - started)


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")
