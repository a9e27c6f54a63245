"""Settings: one typed place; a wrong type or an unknown key stops start-up naming it."""

from __future__ import annotations

import subprocess
import sys

import pytest

from loadtests.server_process import ROOT
from service.config import DEFAULT_CONFIG, Settings, SettingsError, load_settings


def test_the_shipped_yaml_states_the_typed_defaults():
    shipped = load_settings(DEFAULT_CONFIG, environ={})
    assert shipped == Settings()


def test_environment_beats_the_file_and_aliases_reach_their_setting(tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text("batching:\n  max_batch_size: 8\nmodels:\n  threads: 3\n")
    settings = load_settings(
        config,
        environ={
            "NLP_BATCHING_MAX_BATCH_SIZE": "16",
            "ORT_INTRA_OP_THREADS": "1",
            "ORT_ALLOW_SPINNING": "0",
            "ENCODER_CALL_OVERHEAD_TOKENS": "1000000",
            "NLP_LOG_LEVEL": "debug",
            "MALLOC_ARENA_MAX": "4",
            "PORT": "4000",
            "NLP_MODELS_SERVE": "a, b",
            "NLP_MODELS_DEFAULTS": "text-classification=a",
        },
    )
    assert settings.batching.max_batch_size == 16
    assert settings.models.threads == 1 and settings.models.allow_spinning is False
    assert settings.batching.call_overhead_tokens == 1_000_000
    assert settings.server.log_level == "DEBUG" and settings.server.malloc_arena_max == 4
    assert settings.server.port == 4000
    assert settings.models.serve == ["a", "b"]
    assert settings.models.defaults == {"text-classification": "a"}


def test_the_long_name_beats_the_alias():
    settings = load_settings(
        DEFAULT_CONFIG, environ={"NLP_MODELS_THREADS": "2", "ORT_INTRA_OP_THREADS": "1"}
    )
    assert settings.models.threads == 2


@pytest.mark.parametrize(
    ("environ", "named"),
    [
        (
            {"NLP_BATCHING_MAX_BATCH_SIZE": "many"},
            "batching.max_batch_size (NLP_BATCHING_MAX_BATCH_SIZE)",
        ),
        ({"PORT": "70000"}, "server.port (PORT)"),
        ({"NLP_SERVER_LOG_LEVEL": "chatty"}, "server.log_level (NLP_SERVER_LOG_LEVEL)"),
        ({"ORT_ALLOW_SPINNING": "sometimes"}, "models.allow_spinning (ORT_ALLOW_SPINNING)"),
        ({"NLP_MODELS_DEFAULTS": "no-pairs-here"}, "models.defaults (NLP_MODELS_DEFAULTS)"),
        ({"NLP_BATCHING_MAX_BATCHSIZE": "3"}, "NLP_BATCHING_MAX_BATCHSIZE: unknown setting"),
    ],
)
def test_a_bad_environment_value_names_the_setting_and_the_variable(environ, named):
    with pytest.raises(SettingsError) as caught:
        load_settings(DEFAULT_CONFIG, environ=environ)
    assert named in str(caught.value)


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("batching:\n  max_batch_size: -1\n", "batching.max_batch_size"),
        ("batching:\n  max_bach_size: 4\n", "batching.max_bach_size"),
        ("batchin:\n  max_batch_size: 4\n", "batchin"),
        ("limits: 3\n", "limits"),
        ("- a list\n", "expected sections"),
    ],
)
def test_a_bad_file_names_the_setting_and_the_file(tmp_path, text, named):
    config = tmp_path / "config.yaml"
    config.write_text(text)
    with pytest.raises(SettingsError) as caught:
        load_settings(config, environ={})
    assert named in str(caught.value)


def test_the_service_refuses_to_start_with_a_bad_setting():
    env = {"NLP_BATCHING_MAX_QUEUE": "lots", "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, "-c", "import service.service"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode != 0
    assert "nlp-serving cannot start: invalid settings: batching.max_queue" in done.stderr
    assert "Traceback" not in done.stderr
