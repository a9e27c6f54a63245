"""The one model code every peer server runs: ONNX Runtime + `tokenizers`, no torch.

Written as a user of each framework would write it: a default `InferenceSession` (ORT's own
thread count and spinning), the tokenizer padding each batch to its longest member, softmax and
the best label, answered in our `/classify` shape: `[{"label", "score"}]` per input. Standalone
(no project imports): it runs in each peer's own venv, next to the peer's module.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer


class OrtClassifier:
    def __init__(self, model_dir: str | Path, max_length: int = 512):
        model_dir = Path(model_dir)
        self.session = ort.InferenceSession(
            str(model_dir / "model.onnx"), providers=["CPUExecutionProvider"]
        )
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        self.tokenizer.enable_truncation(max_length)
        self.tokenizer.enable_padding()  # to the longest input of the batch
        config = json.loads((model_dir / "config.json").read_text())
        labels = config["id2label"]
        self.labels = [labels[str(i)] for i in range(len(labels))]

    def predict(self, texts: list[str]) -> list[list[dict[str, Any]]]:
        """The best label of each text, as `[{"label", "score"}]`."""
        encodings = self.tokenizer.encode_batch(texts)
        arrays = {
            "input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
            "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
            "token_type_ids": np.array([e.type_ids for e in encodings], dtype=np.int64),
        }
        (logits,) = self.session.run(None, {name: arrays[name] for name in self.input_names})[:1]
        exp = np.exp(logits - logits.max(axis=-1, keepdims=True))
        scores = exp / exp.sum(axis=-1, keepdims=True)
        best = scores.argmax(axis=-1)
        return [
            [{"label": self.labels[int(b)], "score": float(row[b])}]
            for b, row in zip(best, scores, strict=True)
        ]


def as_list(inputs: str | list[str]) -> list[str]:
    """A request's `inputs`: one text or a list of them."""
    return [inputs] if isinstance(inputs, str) else list(inputs)
