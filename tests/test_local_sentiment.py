"""The sentiment classifier the project trains (`local` profile): right on held-out sentences, its
int8 export close to fp32, its model card honest, and our runtime equal to the `transformers`
pipeline on the same weights.

The three entries are built by the real CLI into a fresh model store. Training runs once per
identity and is cached where `make serve` caches it (`$BENTOML_HOME/cache/trained`, the
project's `.bentoml/` under make), so only the first run on a machine trains (a few minutes).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from models.sentiment import LABELS, held_out_sample
from models.sources import resolve_source
from service.runtime.tasks.classification import ClassificationParameters, TextClassifier

# The first run on a machine trains (minutes; far more on a busy machine), inside a fixture.
# Training the classifier takes minutes on 2 cores the first time: `make test-slow` runs it.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(2400)]
BUILD_TIMEOUT_S = 2300

ROOT = Path(__file__).resolve().parents[1]
SOURCE = "trained:sentiment-minilm"
ENTRIES = ("minilm-sentiment", "minilm-sentiment-o2", "minilm-sentiment-int8")
SAMPLE_SIZE = 200
SCORE_TOLERANCE = 1e-4
PIPELINE_TEXTS = [
    "A gorgeous, witty, seductive movie.",
    "The plot is a mess and the acting is worse.",
    "i love this camera, the pictures are amazing!!!",
    "Worst customer service ever. Never again :(",
    "It was fine, I guess.",
    "not bad at all",
    "The senator's plan would cut taxes for the wealthy while slashing school budgets.",
    "",
]


def _trained_cache() -> Path:
    explicit = os.environ.get("TRAINED_MODELS_CACHE")
    if explicit:
        return Path(explicit)
    home = os.environ.get("BENTOML_HOME") or ROOT / ".bentoml"
    return Path(home) / "cache" / "trained"


@pytest.fixture(scope="session")
def sentiment_env(tmp_path_factory) -> dict[str, str]:
    home = tmp_path_factory.mktemp("bentoml_sentiment")
    return {
        **os.environ,
        "BENTOML_HOME": str(home),
        "HF_HUB_OFFLINE": "1",
        "TRAINED_MODELS_CACHE": str(_trained_cache()),
    }


@pytest.fixture(scope="session")
def built(sentiment_env) -> dict[str, dict]:
    """Name -> store listing (with its metadata) of the three sentiment entries."""
    subprocess.run(
        [sys.executable, "-m", "models", "build", "--profile", "local", *ENTRIES],
        cwd=ROOT,
        env=sentiment_env,
        check=True,
        timeout=BUILD_TIMEOUT_S,
    )
    listed = subprocess.run(
        [sys.executable, "-m", "models", "list", "--json"],
        cwd=ROOT,
        env=sentiment_env,
        check=True,
        capture_output=True,
        text=True,
    )
    return {m["name"]: m for m in json.loads(listed.stdout)}


@pytest.fixture(scope="session")
def classifiers(built) -> dict[str, TextClassifier]:
    return {name: TextClassifier.load(Path(built[name]["path"]), threads=2) for name in ENTRIES}


@pytest.fixture(scope="session")
def sample_accuracy(classifiers) -> dict[str, float]:
    sample = held_out_sample(SAMPLE_SIZE)
    params = ClassificationParameters()
    accuracy = {}
    for name, classifier in classifiers.items():
        labels = [r[0]["label"] for r in classifier.classify([(s.text, params) for s in sample])]
        accuracy[name] = sum(
            lab == LABELS[s.label] for lab, s in zip(labels, sample, strict=True)
        ) / len(sample)
    return accuracy


def test_held_out_sample_is_fixed_and_balanced():
    sample = held_out_sample(SAMPLE_SIZE)
    assert sample == held_out_sample(SAMPLE_SIZE)
    assert len({s.text for s in sample}) == SAMPLE_SIZE
    assert all(s.held_out and s.label is not None for s in sample)
    positives = sum(s.label for s in sample)
    assert 0.35 < positives / SAMPLE_SIZE < 0.65
    assert len({s.domain for s in sample}) == 4


def test_fp32_export_is_accurate_on_held_out_sentences(sample_accuracy):
    assert sample_accuracy["minilm-sentiment"] >= 0.8


@pytest.mark.parametrize("name", ["minilm-sentiment-o2", "minilm-sentiment-int8"])
def test_optimized_exports_stay_within_two_points_of_fp32(sample_accuracy, name):
    assert abs(sample_accuracy[name] - sample_accuracy["minilm-sentiment"]) <= 0.02


@pytest.mark.parametrize("name", ["minilm-sentiment", "minilm-sentiment-o2"])
def test_runtime_matches_transformers_pipeline(built, classifiers, name):
    from transformers import pipeline

    reference = pipeline("text-classification", model=str(_trained_checkpoint()), device="cpu")
    params = ClassificationParameters(top_k=2)
    ours = classifiers[name].classify([(t, params) for t in PIPELINE_TEXTS])
    theirs = reference(PIPELINE_TEXTS, top_k=2)
    for mine, expected in zip(ours, theirs, strict=True):
        assert [r["label"] for r in mine] == [r["label"] for r in expected]
        for a, b in zip(mine, expected, strict=True):
            assert a["score"] == pytest.approx(b["score"], abs=SCORE_TOLERANCE)


def test_three_exports_share_one_training_run(built):
    identities = {json.dumps(built[name]["identity"]["source"], sort_keys=True) for name in ENTRIES}
    assert len(identities) == 1
    assert json.loads(identities.pop()) == resolve_source(SOURCE).identity()
    report = json.loads((_trained_checkpoint() / "training.json").read_text())
    assert report["held_out_sentences"] >= 1000 and report["steps"] > 0


def test_model_card_records_provenance_licences_and_accuracy(built):
    cards = {name: built[name]["card"] for name in ENTRIES}
    for name, card in cards.items():
        assert "all-MiniLM-L6-v2" in card["weights"] and card["weights_licence"] == "Apache-2.0"
        assert "VADER" in card["data"] and card["data_licence"] == "MIT"
        assert card["untrained"] is False and "held-out accuracy" in card["quality"]
        assert card["held_out_sentences"] >= 1000
        assert built[name]["source_uri"] == SOURCE
    # The goal on the whole held-out split (measured: models/results/sentiment-quality.md).
    assert cards["minilm-sentiment"]["held_out_accuracy"] >= 0.85
    fp32 = cards["minilm-sentiment"]["held_out_accuracy"]
    assert abs(cards["minilm-sentiment-int8"]["held_out_accuracy"] - fp32) <= 0.01


def test_building_again_reuses_the_stored_models(sentiment_env, built):
    again = subprocess.run(
        [sys.executable, "-m", "models", "build", "--profile", "local", *ENTRIES],
        cwd=ROOT,
        env=sentiment_env,
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert again.stdout.count("already built") == len(ENTRIES), again.stdout


def _trained_checkpoint() -> Path:
    return resolve_source(SOURCE).cache_folder(_trained_cache())
