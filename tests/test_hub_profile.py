"""The `hub` profile built offline: the same code a user with network runs, minus the download.

A temporary Hugging Face cache (`HF_HOME`) is pre-filled, in huggingface_hub's own layout at
each entry's pinned revision (tests/hub_cache.py), with the files `save_pretrained` writes for a
tiny stand-in of the entry's architecture (models/tiny.py: Marian's SentencePiece files, the
sentence-transformers folder, BART's vocab.json/merges.txt...), kept to what a real download
with HubSource's `allow_patterns` would have fetched. `python -m models build
--profile hub` then runs as a subprocess with `HF_HUB_OFFLINE=1`: `HubSource.fetch` calls
`snapshot_download` as it does online and finds every snapshot in the cache. The real server
then serves the store, and each task answers one real request.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from loadtests.server_process import ROOT, start_server
from models.catalog import load_catalog
from models.sources import HUB_FALLBACK_WEIGHTS, HUB_FILES
from tests.hub_cache import (
    HUB_STAND_INS,
    MissingStandIn,
    as_pytorch_bin,
    bin_weights,
    repo_folder,
    stand_in,
    write_snapshot,
)

# Builds with the real CLI (torch, transformers, Optimum, onnxruntime-genai's builder).
pytestmark = pytest.mark.export_side

ENTRIES = list(load_catalog().profile("hub"))
MISSING_REVISION = "0123456789abcdef0123456789abcdef01234567"


def _env(hf_home: Path, bentoml_home: Path) -> dict[str, str]:
    env = {**os.environ, "HF_HOME": str(hf_home), "BENTOML_HOME": str(bentoml_home)}
    env["HF_HUB_OFFLINE"] = "1"
    for name in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "TRANSFORMERS_CACHE"):
        env.pop(name, None)  # HF_HOME alone decides where the cache is
    return env


def _build(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "models", "build", "--profile", "hub", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )


def test_every_hub_entry_has_a_stand_in():
    """A new `hub` entry needs a row in HUB_STAND_INS (and a tiny builder of its architecture);
    without one this fails, naming the entry, instead of leaving it untested."""
    from models.tiny import BUILDERS

    missing = []
    for spec in ENTRIES:
        assert spec.revision, f"hub entry {spec.name!r} pins no revision"
        try:
            assert stand_in(spec.target, spec.name) in BUILDERS
        except MissingStandIn as err:
            missing.append(str(err))
    assert not missing, "\n".join(missing)
    unused = set(HUB_STAND_INS) - {spec.target for spec in ENTRIES}
    assert not unused, f"HUB_STAND_INS rows for no hub entry: {sorted(unused)}"


def test_prefilled_cache_is_huggingface_hubs_layout(tmp_path):
    """huggingface_hub itself recognises the hand-written cache: scan, per-file look-up and an
    offline `snapshot_download` at the pinned revision (what HubSource.fetch calls)."""
    files = tmp_path / "files"
    (files / "1_Pooling").mkdir(parents=True)
    (files / "2_Normalize").mkdir()
    (files / "config.json").write_text('{"model_type": "bert"}')
    (files / "1_Pooling" / "config.json").write_text('{"pooling_mode_mean_tokens": true}')
    (files / "model.safetensors").write_bytes(b"\0" * 64)
    repo, revision = "org/some-model", "a" * 40
    snapshot = write_snapshot(tmp_path / "hf", repo, revision, files)
    script = f"""
from huggingface_hub import scan_cache_dir, snapshot_download, try_to_load_from_cache
info = scan_cache_dir()
assert not info.warnings, info.warnings
(entry,) = info.repos
assert entry.repo_id == {repo!r}
(rev,) = entry.revisions
assert rev.commit_hash == {revision!r} and rev.refs == {{"main"}}
names = sorted(f.file_name for f in rev.files)
assert names == [".gitattributes", "README.md", "config.json", "config.json", "model.safetensors"]
print(snapshot_download({repo!r}, revision={revision!r}, allow_patterns=["*.json"]))
print(snapshot_download({repo!r}))
print(try_to_load_from_cache({repo!r}, "1_Pooling/config.json", revision={revision!r}))
"""
    result = subprocess.run(
        [sys.executable, "-c", script],
        env=_env(tmp_path / "hf", tmp_path / "bentoml"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.split()
    assert lines == [str(snapshot), str(snapshot), str(snapshot / "1_Pooling" / "config.json")]
    blob = (snapshot / "model.safetensors").resolve()
    assert blob.parent.name == "blobs" and len(blob.name) == 64  # LFS: named by sha256
    assert len((snapshot / "config.json").resolve().name) == 40  # git blob sha1
    assert not (snapshot / "2_Normalize").exists()  # git keeps no empty folders


@pytest.fixture(scope="module")
def hf_home(tmp_path_factory, tiny_checkpoint) -> Path:
    """A Hugging Face cache holding every `hub` entry's stand-in at its pinned revision."""
    home = tmp_path_factory.mktemp("hf_home")
    for spec in ENTRIES:
        files = tiny_checkpoint(stand_in(spec.target, spec.name))  # fails naming the entry
        if bin_weights(spec.target):
            files = as_pytorch_bin(files, home.parent / f"{home.name}-bin" / spec.name)
        # What a real `snapshot_download` of HubSource's patterns leaves: its files only, and
        # no branch ref (it was asked for a commit).
        patterns = HUB_FILES + (HUB_FALLBACK_WEIGHTS if bin_weights(spec.target) else [])
        write_snapshot(home, spec.target, spec.revision, files, None, patterns)
    return home


def test_pytorch_bin_snapshots_build_through_the_fallback(hf_home, hub_store):
    """Repositories without safetensors (HUB_STAND_INS ':bin' rows) are in the profile, and
    their snapshots hold `pytorch_model.bin` only: the weights HubSource falls back to."""
    with_bin = [spec for spec in ENTRIES if bin_weights(spec.target)]
    assert with_bin, "no hub entry exercises the pytorch_model.bin fallback any more"
    for spec in with_bin:
        snapshot = repo_folder(hf_home, spec.target) / "snapshots" / spec.revision
        assert (snapshot / "pytorch_model.bin").is_file()
        assert not list(snapshot.glob("*.safetensors"))


@pytest.fixture(scope="module")
def hub_store(hf_home, tmp_path_factory) -> Path:
    home = tmp_path_factory.mktemp("hub_bentoml_home")
    started = time.perf_counter()
    result = _build(_env(hf_home, home))
    assert result.returncode == 0, result.stdout + result.stderr
    print(f"\nhub profile build: {time.perf_counter() - started:.0f}s\n{result.stdout}")
    return home


def test_build_stores_every_hub_entry_from_the_cache(hub_store, hf_home):
    """Every entry was exported from its snapshot and recorded with its hub id and revision."""
    from tests.tiny_records import tiny_record

    for spec in ENTRIES:
        record = tiny_record(hub_store, spec.name)
        meta = record.metadata
        assert record.task == spec.task
        assert (meta["source"], meta["source_uri"]) == (spec.target, spec.source), spec.name
        assert meta["revision"] == spec.revision
        assert meta["identity"]["source"] == {
            "scheme": "hub",
            "id": spec.target,
            "revision": spec.revision,
        }
        assert meta["graph"] == spec.graph
        # Parity (ONNX vs PyTorch on the snapshot's weights) raises when it fails: it ran.
        assert meta["parity"], spec.name


@pytest.fixture(scope="module")
def server(hub_store, tmp_path_factory):
    server = start_server(
        hub_store,
        tmp_path_factory.mktemp("hub_logs") / "server.log",
        extra_env={"PROFILE": "hub"},
        timeout=300,
    )
    yield server
    server.stop()


def _post(server, path: str, body: dict):
    response = requests.post(f"{server.url}{path}", json=body, timeout=120)
    assert response.status_code == 200, (path, body.get("model"), response.text)
    return response.json()


def test_every_hub_model_serves(server):
    models = {m["name"]: m for m in requests.get(f"{server.url}/models", timeout=30).json()}
    assert set(models) == {spec.name for spec in ENTRIES}
    for spec in ENTRIES:
        assert models[spec.name]["task"] == spec.task
        assert models[spec.name]["default"] is spec.default
        assert models[spec.name]["untrained"] is False  # hub weights are taken as real


def test_classification(server):
    (scores,) = _post(server, "/classify", {"inputs": "A fine film.", "model": "distilbert-sst2"})
    assert {s["label"] for s in scores} <= {"negative", "neutral", "positive"}
    assert 0.0 <= scores[0]["score"] <= 1.0


def test_question_answering(server):
    context = "The film was shot in Paris in the spring of 1999 by a small crew."
    answer = _post(
        server,
        "/answer",
        {"inputs": {"question": "Where was the film shot?", "context": context}},
    )
    assert answer["answer"] and answer["answer"] == context[answer["start"] : answer["end"]]
    assert 0.0 <= answer["score"] <= 1.0


def test_fill_mask(server):
    filled = _post(server, "/fill-mask", {"inputs": "The film was [MASK]."})
    assert len(filled) == 5 and all(f["token_str"] for f in filled)
    assert all("[MASK]" not in f["sequence"] for f in filled)


def test_rerank(server):
    texts = ["The film was long.", "It rained in Paris.", "A great movie."]
    ranked = _post(server, "/rerank", {"query": "a good film", "texts": texts})
    assert sorted(r["index"] for r in ranked) == [0, 1, 2]
    scores = [r["score"] for r in ranked]
    assert scores == sorted(scores, reverse=True)


def test_zero_shot_with_bart(server):
    labels = ["cinema", "weather", "sports"]
    body = {"inputs": "The film was great.", "parameters": {"candidate_labels": labels}}
    result = _post(server, "/zero-shot", {**body, "model": "bart-large-mnli"})
    assert sorted(result["labels"]) == sorted(labels)
    assert abs(sum(result["scores"]) - 1.0) < 1e-4


def test_generation_with_the_genai_graph(server):
    got = _post(
        server,
        "/generate",
        {"inputs": "The movie was", "parameters": {"max_new_tokens": 8, "details": True}},
    )
    assert isinstance(got["generated_text"], str)
    assert 1 <= len(got["details"]["tokens"]) <= 8


@pytest.mark.parametrize("model", ["opus-mt-en-fr", "t5-small"])
def test_translation(server, model):
    got = _post(
        server,
        "/translate",
        {"inputs": ["The house is small."], "model": model, "parameters": {"max_new_tokens": 8}},
    )
    assert len(got) == 1 and isinstance(got[0]["translation_text"], str)


def test_embeddings(server):
    import numpy as np

    got = np.array(_post(server, "/embed", {"inputs": ["The house is small.", "A film."]}))
    assert got.shape == (2, 64)  # the stand-in's width; normalized, as modules.json says
    np.testing.assert_allclose(np.linalg.norm(got, axis=-1), 1.0, atol=1e-5)


def test_missing_revision_fails_naming_the_model_and_revision(tmp_path, tiny_checkpoint):
    """A catalog pin the cache does not hold (e.g. bumped, never downloaded) fails the build
    offline, saying which model, which revision, and what the cache holds instead."""
    spec = next(spec for spec in ENTRIES if spec.task == "text-classification")
    home = tmp_path / "hf"
    write_snapshot(home, spec.target, MISSING_REVISION, tiny_checkpoint(stand_in(spec.target)))
    result = _build(_env(home, tmp_path / "bentoml"), spec.name)
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"{spec.name}: FAILED: cannot fetch hub:{spec.target}@{spec.revision}" in result.stderr
    assert "HF_HUB_OFFLINE=1" in result.stderr
    assert f"holds {spec.target} only at {MISSING_REVISION} (main)" in result.stderr
    assert f"1 of 1 failed: {spec.name}" in result.stderr


@pytest.mark.parametrize(
    ("path", "model", "key"),
    [
        ("/summarize", "t5-small-summarizer", "summary_text"),
        ("/text2text", "t5-small-text2text", "generated_text"),
    ],
)
def test_summarization_and_text2text(server, path, model, key):
    body = {"inputs": ["summarize: The house is small."], "model": model}
    got = _post(server, path, {**body, "parameters": {"max_new_tokens": 8}})
    assert len(got) == 1 and isinstance(got[0][key], str)
