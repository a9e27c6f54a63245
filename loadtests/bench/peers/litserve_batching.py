"""LitServe with batching: one inference worker, batches of up to 32 requests.

LitServe's batching example as written (`LitAPI(max_batch_size=..., batch_timeout=...)`, its
default `batch`/`unbatch`: a list of decoded requests in, a list of answers out), max batch 32 as
ours. `batch_timeout` 10 ms: LitServe's default of 0 makes its inference loop poll the queue
without sleeping, a core spent while idle; 10 ms is Ray Serve's default wait.

    python litserve_batching.py --model DIR --port 8000
"""

from __future__ import annotations

import argparse
import os

import litserve as ls
from ort_classifier import OrtClassifier


class ClassifierAPI(ls.LitAPI):
    def setup(self, device: str) -> None:
        self.model = OrtClassifier(os.environ["PEER_MODEL_DIR"])

    def decode_request(self, request: dict) -> str:
        return request["inputs"]

    def predict(self, texts: list[str]) -> list:
        return self.model.predict(texts)

    def encode_response(self, output: list) -> list:
        return [output]  # one text per request: our `[[{"label", "score"}]]`


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()
    os.environ["PEER_MODEL_DIR"] = args.model
    api = ClassifierAPI(max_batch_size=32, batch_timeout=0.01, api_path="/classify")
    server = ls.LitServer(api, accelerator="cpu", workers_per_device=1)
    server.run(host="127.0.0.1", port=args.port, log_level="warning", generate_client_file=False)
