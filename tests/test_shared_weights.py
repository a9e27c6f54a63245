"""An encoder's sessions share one copy of the weights (service/runtime/prepared_graph.py)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from service.config import load_settings
from service.runtime import onnx_session
from service.runtime.encoder_batches import EncoderModel
from service.runtime.onnx_session import configure_sessions, create_session
from service.runtime.prepared_graph import DATA, GRAPH, prepared_graph, shareable

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def classifier_dir(tiny_store) -> Path:
    folder = tiny_store / "models" / "tiny-bert-classifier"
    return folder / (folder / "latest").read_text().strip()


@pytest.fixture
def prepared_cache(tmp_path):
    """Sessions configured as the data plane does, with a cache of their own."""
    saved = (onnx_session.DEFAULTS.threads, onnx_session.DEFAULTS.allow_spinning)
    configure_sessions(0, None, tmp_path / "prepared")
    yield tmp_path / "prepared"
    configure_sessions(*saved, None)


def test_encoder_sessions_load_one_prepared_graph_and_answer_as_the_original(
    classifier_dir, prepared_cache
):
    model = EncoderModel.load(classifier_dir)
    model.use_runners(2)
    (folder,) = [p for p in prepared_cache.iterdir() if not p.name.startswith(".")]
    assert (folder / GRAPH).is_file() and (folder / DATA).is_file()
    assert model.session._model_path == model.narrow._model_path == str(folder / GRAPH)
    plain = create_session(classifier_dir / "model.onnx", shared=False)
    texts = ["a short one", "and a somewhat longer sentence to classify here"] * 3
    encodings = model.encode(texts, [False] * len(texts))
    feed = model._feed(encodings)
    expected = plain.run(None, feed)[0]
    for session in (model.session, model.narrow):
        np.testing.assert_allclose(session.run(None, feed)[0], expected, rtol=1e-5, atol=1e-5)
    rows = model.run(encodings, model.output_names)
    np.testing.assert_allclose(np.stack([r[0] for r in rows]), expected, rtol=1e-5, atol=1e-5)
    model.close()


def test_prepared_graph_is_built_once_and_reused(classifier_dir, tmp_path):
    first = prepared_graph(classifier_dir / "model.onnx", tmp_path)
    stamp = first.stat().st_mtime_ns
    assert prepared_graph(classifier_dir / "model.onnx", tmp_path) == first
    assert first.stat().st_mtime_ns == stamp
    assert [p.name for p in tmp_path.iterdir()] == [first.parent.name]  # no build leftovers


def test_saved_graphs_of_sources_that_are_gone_are_pruned(classifier_dir, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(classifier_dir, copy)
    gone = prepared_graph(copy / "model.onnx", tmp_path / "cache").parent
    shutil.rmtree(copy)
    kept = prepared_graph(classifier_dir / "model.onnx", tmp_path / "cache").parent
    assert not gone.exists() and kept.exists()


def test_without_a_usable_cache_the_graph_loads_as_it_is(classifier_dir, tmp_path):
    source = classifier_dir / "model.onnx"
    assert shareable(source, None) == source
    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder")
    assert shareable(source, blocked / "cache") == source


def test_share_weights_setting_names_the_cache(tmp_path):
    models = load_settings(tmp_path / "none.yaml", {"BENTOML_HOME": str(tmp_path)}).models
    assert models.share_weights
    off = load_settings(tmp_path / "none.yaml", {"NLP_MODELS_SHARE_WEIGHTS": "0"}).models
    assert off.prepared_cache() is None
    there = load_settings(
        tmp_path / "none.yaml", {"NLP_MODELS_PREPARED_GRAPHS_DIR": str(tmp_path / "x")}
    ).models
    assert there.prepared_cache() == tmp_path / "x"


# A graph big enough to measure (two fp32 MatMuls, 32 MB of weights), built with `onnx`; the
# child reports the proportional set size each of two sessions added (PSS counts a page mapped
# twice once, RSS twice).
MEASURE = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path
    import numpy as np
    from service.heap import release_freed_memory
    from service.runtime.onnx_session import configure_sessions, create_session
    from service.runtime.prepared_graph import shareable

    def pss_mb():
        for line in open("/proc/self/smaps_rollup"):
            if line.startswith("Pss:"):
                return int(line.split()[1]) / 1024

    graph, cache = Path(sys.argv[1]), sys.argv[2]
    configure_sessions(0, None, Path(cache) if cache else None)
    if cache:
        shareable(graph, Path(cache))  # built before measuring
    release_freed_memory()
    before = pss_mb()
    first = create_session(graph, 2, shared=True)
    release_freed_memory()
    middle = pss_mb()
    second = create_session(graph, 1, shared=True)
    release_freed_memory()
    after = pss_mb()
    x = np.ones((4, 1024), np.float32)
    same = bool(np.array_equal(first.run(None, {"x": x})[0], second.run(None, {"x": x})[0]))
    print(json.dumps({"first": middle - before, "second": after - middle, "same": same}))
    """
)


@pytest.mark.export_side  # builds its graph with `onnx`, which the serving side does not install
def test_second_session_of_a_graph_costs_under_a_tenth_of_the_first(tmp_path):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    weights = [
        rng.standard_normal(shape, dtype=np.float32) for shape in ((1024, 4096), (4096, 1024))
    ]
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "w0"], ["h"]),
            helper.make_node("MatMul", ["h", "w1"], ["y"]),
        ],
        "big",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 1024])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 1024])],
        [numpy_helper.from_array(w, f"w{i}") for i, w in enumerate(weights)],
    )
    path = tmp_path / "big" / "model.onnx"
    path.parent.mkdir()
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)

    def measure(cache: str) -> dict:
        done = subprocess.run(
            [sys.executable, "-c", MEASURE, str(path), cache],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
            env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
        )
        return json.loads(done.stdout)

    alone = measure("")
    shared = measure(str(tmp_path / "prepared"))
    assert alone["same"] and shared["same"]
    assert alone["second"] > 0.8 * 32  # each session holds the weights (pre-packed) again
    assert shared["second"] < 0.1 * max(shared["first"], alone["first"])


def _model_dir(store: Path, name: str) -> Path:
    folder = store / "models" / name
    return folder / (folder / "latest").read_text().strip()


def _loaded_with_cache(load, cache: Path | None):
    """`load()` with the sessions' prepared-graph cache set to `cache` for its duration."""
    saved = onnx_session.DEFAULTS.prepared_cache
    onnx_session.DEFAULTS.prepared_cache = cache
    try:
        return load()
    finally:
        onnx_session.DEFAULTS.prepared_cache = saved


def _as_is_and_shared(load):
    """One model loaded as it is (no cache), then through the configured prepared cache."""
    return _loaded_with_cache(load, None), load()


def _in_cache(session, cache: Path) -> bool:
    return Path(session._model_path).parent.parent == cache


@pytest.mark.parametrize("name", ["tiny-gpt2", "tiny-llama-chat-genai", "tiny-llama-chat-int4"])
def test_decoder_loads_its_prepared_graph_and_generates_the_same_tokens(
    tiny_store, prepared_cache, name
):
    from service.runtime.tasks.generation import GenerationParameters, TextGenerator

    folder = _model_dir(tiny_store, name)
    plain, shared = _as_is_and_shared(lambda: TextGenerator.load(folder))
    assert _in_cache(shared.session, prepared_cache)
    assert not _in_cache(plain.session, prepared_cache)
    prompts = ["Hello there", "A longer prompt about the weather today"]
    params = GenerationParameters(max_new_tokens=12)
    got = [[t.id for t in r.tokens] for r in shared.generate(prompts, params)]
    assert got == [[t.id for t in r.tokens] for r in plain.generate(prompts, params)]
    assert all(got)


@pytest.mark.parametrize("name", ["tiny-t5", "tiny-marian", "tiny-bart-summarizer"])
def test_encoder_decoder_loads_its_prepared_graphs_and_generates_the_same_ids(
    tiny_store, prepared_cache, name
):
    from service.runtime.seq2seq import Seq2SeqGenerator

    folder = _model_dir(tiny_store, name)
    plain, shared = _as_is_and_shared(lambda: Seq2SeqGenerator.load(folder))
    graphs = (shared.graphs.encoder, shared.graphs.first, shared.graphs.with_past)
    assert all(_in_cache(session, prepared_cache) for session in graphs)
    assert not _in_cache(plain.graphs.encoder, prepared_cache)
    texts = ["The house is wonderful.", "A second, somewhat longer sentence to translate."]
    got = shared.generate_ids(texts)
    assert got == plain.generate_ids(texts) and all(len(ids) > 1 for ids in got)
