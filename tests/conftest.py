"""Shared fixtures: tiny checkpoints and their ONNX exports, built once per test session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# Tiny checkpoint kind -> our task name.
TINY_TASKS = {
    "bert-classifier": "text-classification",
    "distilbert-classifier": "text-classification",
    "distilbert-qa": "question-answering",
    "bert-embedder": "feature-extraction",
    "gpt2": "text-generation",
    "llama-chat": "text-generation",
    "t5": "translation",
    "marian": "translation",
}


@pytest.fixture(scope="session", autouse=True)
def _torch_on_one_thread():
    """The PyTorch references are tiny models: one thread is several times faster than two
    fighting the servers under test (and other jobs) for 2 cores. Servers run in their own
    processes and are not affected."""
    try:
        import torch
    except ImportError:
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("tiny")


@pytest.fixture(scope="session")
def tiny_checkpoint(tiny_root):
    """`tiny_checkpoint(kind)` -> folder of the PyTorch checkpoint (built on first use)."""
    from models.tiny import build_checkpoint

    def get(kind: str) -> Path:
        path = tiny_root / "checkpoints" / kind
        if not (path / "config.json").exists():
            build_checkpoint(kind, path)
        return path

    return get


@pytest.fixture(scope="session")
def tiny_exported(tiny_root, tiny_checkpoint):
    """`tiny_exported(kind)` -> ONNX serving folder exported from the tiny checkpoint."""
    from models.export import export_onnx

    def get(kind: str) -> Path:
        path = tiny_root / "exported" / kind
        if not (path / "config.json").exists():
            export_onnx(tiny_checkpoint(kind), path, TINY_TASKS[kind])
        return path

    return get


@pytest.fixture(scope="session")
def tiny_store(tmp_path_factory) -> Path:
    """A BentoML model store holding the whole tiny profile, built by the real CLI."""
    from loadtests.server_process import build_store

    home = tmp_path_factory.mktemp("bentoml_home")
    build_store(home, "tiny")
    return home


@pytest.fixture(scope="session")
def live_server(tiny_store, tmp_path_factory):
    """The real service (`bentoml serve`) on free ports, serving the tiny profile."""
    from loadtests.server_process import start_server

    server = start_server(tiny_store, tmp_path_factory.mktemp("logs") / "server.log")
    yield server
    server.stop()
