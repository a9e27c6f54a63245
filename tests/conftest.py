"""Shared fixtures: tiny checkpoints and their ONNX exports, built once per test session."""

from __future__ import annotations

import ast
import os
import shutil
from functools import cache
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
    "bert-fill-mask": "fill-mask",
    "distilbert-fill-mask": "fill-mask",
    "bert-cross-encoder": "text-ranking",
    "bert-nli": "zero-shot-classification",
    "bart-nli": "zero-shot-classification",
    "bert-ner": "token-classification",
    "distilbert-ner": "token-classification",
    "bert-embedder": "feature-extraction",
    "gpt2": "text-generation",
    "llama-chat": "text-generation",
    "t5": "translation",
    "marian": "translation",
    "bart": "summarization",
}


ROOT = Path(__file__).resolve().parent.parent
# The export side: what the serving environment (requirements/serving-tests.txt, any supported
# Python) does not install. `--serving-only` runs every test that needs none of it.
EXPORT_PACKAGES = frozenset(
    {
        "torch",
        "transformers",
        "optimum",
        "sentence_transformers",
        "onnx",
        "sentencepiece",
        "ctranslate2",
    }
)
# Fixtures that build or load PyTorch checkpoints.
EXPORT_FIXTURES = frozenset({"tiny_checkpoint", "tiny_exported"})


def pytest_addoption(parser):
    parser.addoption(
        "--serving-only",
        action="store_true",
        help="run only the tests that need no export side (no torch, transformers, optimum); "
        "the tiny model store comes from NLP_TEST_STORE (`make test-serving`)",
    )


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "export_side: needs torch/transformers/optimum (left out by --serving-only)"
    )


@cache
def _imports_export_side(path: Path) -> bool:
    """Whether a module imports the export side at import time, directly or through one of
    the project's own modules (its top-level imports, read with `ast`, not executed)."""
    try:
        tree = ast.parse(path.read_text())
    except (OSError, SyntaxError):
        return False
    for node in tree.body:
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names = [node.module]
        else:
            continue
        for name in names:
            if name.split(".")[0] in EXPORT_PACKAGES:
                return True
            own = ROOT / (name.replace(".", "/") + ".py")
            if own.is_file() and own != path and _imports_export_side(own):
                return True
    return False


def pytest_ignore_collect(collection_path, config):
    if config.getoption("--serving-only") and collection_path.suffix == ".py":
        return _imports_export_side(Path(collection_path)) or None
    return None


def pytest_collection_modifyitems(config, items):
    """`--serving-only` deselects (never skips) what needs the export side, so the run's
    summary says how many tests it left out."""
    if not config.getoption("--serving-only"):
        return
    kept, left_out = [], []
    for item in items:
        needs_export = bool(EXPORT_FIXTURES & set(getattr(item, "fixturenames", ())))
        needs_export = needs_export or item.get_closest_marker("export_side") is not None
        (left_out if needs_export else kept).append(item)
    if left_out:
        config.hook.pytest_deselected(items=left_out)
        items[:] = kept


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


@pytest.fixture(scope="session", autouse=True)
def _prepared_graphs_in_tmp(tmp_path_factory):
    """Data planes built in process without BENTOML_HOME keep the graphs they prepare for shared
    weights (service/runtime/prepared_graph.py) in the session's tmp, not in ~/bentoml."""
    from service import config

    folder = tmp_path_factory.mktemp("ort-prepared")
    with pytest.MonkeyPatch.context() as patch:
        if not os.environ.get("BENTOML_HOME"):
            patch.setattr(config, "default_prepared_graphs_dir", lambda: folder)
        yield


@pytest.fixture
def session_defaults_put_back():
    """For tests that build a DataPlane in this process: it sets ORT's per-worker session
    defaults (`configure_sessions`: threads, spinning, prepared-graph cache) for the rest of
    the process, and later tests expect the defaults they found."""
    import dataclasses

    from service.runtime import onnx_session

    saved = dataclasses.replace(onnx_session.DEFAULTS)
    yield
    onnx_session.DEFAULTS.__dict__.update(saved.__dict__)


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
    """A BentoML model store holding the whole tiny profile, built by the real CLI (or, where
    the export side is not installed, a copy of the store NLP_TEST_STORE names)."""
    from loadtests.server_process import build_store

    home = tmp_path_factory.mktemp("bentoml_home")
    prebuilt = os.environ.get("NLP_TEST_STORE")
    if prebuilt:
        # Only each model's latest version, as a fresh build holds (earlier builds into the same
        # store keep theirs).
        for model in (Path(prebuilt) / "models").iterdir():
            if not (model / "latest").is_file():
                continue
            latest = (model / "latest").read_text().strip()
            shutil.copytree(model / latest, home / "models" / model.name / latest)
            shutil.copy2(model / "latest", home / "models" / model.name / "latest")
    else:
        build_store(home, "tiny")
    return home


@pytest.fixture(scope="session")
def live_server(tiny_store, tmp_path_factory):
    """The real service (`bentoml serve`) on free ports, serving the tiny profile."""
    from loadtests.server_process import start_server

    server = start_server(tiny_store, tmp_path_factory.mktemp("logs") / "server.log")
    yield server
    server.stop()
