"""FastAPI + ONNX Runtime, no batching: the server that does nothing but call ORT.

A plain `def` handler (FastAPI runs it in its thread pool), one ORT call per request.

    python fastapi_ort.py --model DIR --port 8000
"""

from __future__ import annotations

import argparse

import uvicorn
from fastapi import FastAPI
from ort_classifier import OrtClassifier, as_list


def create_app(model_dir: str) -> FastAPI:
    model = OrtClassifier(model_dir)
    app = FastAPI()

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/classify")
    def classify(body: dict) -> list:
        return model.predict(as_list(body["inputs"]))

    return app


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()
    uvicorn.run(
        create_app(args.model),
        host="127.0.0.1",
        port=args.port,
        log_level="warning",
        access_log=False,
    )
