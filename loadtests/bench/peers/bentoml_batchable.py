"""A minimal BentoML service with a batchable API (BentoML's adaptive batching).

One service, one worker, `@bentoml.api(batchable=True, max_batch_size=32)`: BentoML's
dispatcher gathers concurrent requests' `inputs` lists into one call. Our body sends one text as
a string (`{"inputs": "..."}`), so the parameter accepts a string as a list of one. Health:
BentoML's own `GET /readyz`.

    python bentoml_batchable.py --model DIR --port 8000   # runs `bentoml serve` on this file
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import bentoml
from ort_classifier import OrtClassifier, as_list
from pydantic import BeforeValidator

Texts = Annotated[list[str], BeforeValidator(as_list)]


@bentoml.service(workers=1)
class Classifier:
    def __init__(self) -> None:
        self.model = OrtClassifier(os.environ["PEER_MODEL_DIR"])

    @bentoml.api(batchable=True, max_batch_size=32, route="/classify")
    def classify(self, inputs: Texts) -> list[list[dict[str, Any]]]:
        return self.model.predict(inputs)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()
    here = Path(__file__).resolve().parent
    os.environ["PEER_MODEL_DIR"] = args.model
    command = [sys.executable, "-m", "bentoml", "serve", "bentoml_batchable:Classifier"]
    command += ["--working-dir", str(here), "--host", "127.0.0.1", "--port", str(args.port)]
    os.execv(sys.executable, command)
