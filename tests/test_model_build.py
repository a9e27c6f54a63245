"""The model-building pipeline (`python -m models`): catalog, export, parity, model store.

The CLI runs in subprocesses with `BENTOML_HOME` pointing at a temporary store: BentoML fixes its
store location when first imported, and the contract is the command line anyway.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from models.catalog import CatalogError, load_catalog
from models.sources import SourceError, resolve_source

# Exports checkpoints with the real CLI (torch, transformers, Optimum).
pytestmark = pytest.mark.export_side

REPO = Path(__file__).resolve().parent.parent
REQUIRED_FIELDS = (
    "name",
    "tag",
    "task",
    "profile",
    "source",
    "path",
    "optimization",
    "quantization",
)
TINY_NAMES = [spec.name for spec in load_catalog().profile("tiny")]


@pytest.fixture(scope="module")
def store_env(tmp_path_factory) -> dict[str, str]:
    """Environment for CLI subprocesses: an empty model store, no hub, no HF cache."""
    root = tmp_path_factory.mktemp("model-store")
    env = dict(os.environ)
    env.update(
        BENTOML_HOME=str(root / "bentoml"),
        HF_HOME=str(root / "hf"),
        HF_HUB_OFFLINE="1",
        BENTOML_DO_NOT_TRACK="True",
        PYTHONPATH=str(REPO),
    )
    return env


def run_models(env: dict, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "models", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def run_python(env: dict, code: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def listed(env: dict) -> dict[str, dict]:
    proc = run_models(env, "list", "--json")
    assert proc.returncode == 0, proc.stderr
    return {entry["name"]: entry for entry in json.loads(proc.stdout)}


def progress_lines(stdout: str) -> list[str]:
    return [line for line in stdout.splitlines() if line.startswith("[")]


@pytest.fixture(scope="module")
def tiny_build(store_env) -> subprocess.CompletedProcess:
    started = time.perf_counter()
    proc = run_models(store_env, "build", "--profile", "tiny")
    proc.seconds = time.perf_counter() - started
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def test_build_tiny_profile_stores_every_catalog_model(tiny_build, store_env):
    lines = progress_lines(tiny_build.stdout)
    assert len(lines) == len(TINY_NAMES)
    assert all(
        ("parity max|Δ|=" in line or "parity int4 max|Δ|=" in line) and ", saved " in line
        for line in lines
    ), lines
    models = listed(store_env)
    assert sorted(models) == sorted(TINY_NAMES)
    store_root = Path(store_env["BENTOML_HOME"])
    for name, entry in models.items():
        for field in REQUIRED_FIELDS:
            assert field in entry, (name, field)
        assert entry["profile"] == "tiny" and entry["source"].startswith("tiny:")
        assert Path(entry["path"]).is_relative_to(store_root)  # honours BENTOML_HOME
        assert isinstance(entry["opset"], int) and entry["opset"] >= 14
        assert entry["architecture"] and entry["max_input_tokens"]
        assert {"transformers", "optimum", "onnxruntime", "torch"} <= set(entry["exporter"])
        if entry["quantization"] == "int4":  # no fp32 graph: bounded by perplexity
            figures = entry["parity"]["int4"]["outputs"]["logits"]
            assert (
                figures["perplexity_ratio"]
                <= entry["parity"]["int4"]["tolerance"]["max_perplexity_ratio"]
            )
        else:
            assert entry["parity"]["fp32"]["max_abs_diff"] < 0.05
        folder = Path(entry["path"])
        for graph in entry["graphs"]:
            assert graph in entry["files"]
        for rel, digest in entry["files"].items():
            assert hashlib.sha256((folder / rel).read_bytes()).hexdigest() == digest
        assert json.loads((folder / "manifest.json").read_text())["tag"] == entry["tag"]


def test_build_keeps_only_the_unmerged_decoders_for_seq2seq(tiny_build, store_env):
    folder = Path(listed(store_env)["tiny-t5"]["path"])
    assert (folder / "encoder_model.onnx").exists()
    assert (folder / "decoder_model.onnx").exists()
    assert (folder / "decoder_with_past_model.onnx").exists()
    assert not (folder / "decoder_model_merged.onnx").exists()


def test_catalog_variant_is_optimized_and_quantized(tiny_build, store_env):
    entry = listed(store_env)["tiny-distilbert-classifier-o2-int8"]
    assert (entry["optimization"], entry["quantization"]) == ("O2", "int8")
    assert entry["quantization_config"]["mode"] == "dynamic"
    final = entry["parity"]["O2+int8"]
    logits, tolerance = final["outputs"]["logits"], final["tolerance"]
    assert final["samples"] == 128 and logits["rows"] == 129
    assert logits["confident_rows"] >= tolerance["min_confident"] * logits["rows"]
    assert logits["confident_agreement"] >= tolerance["min_confident_agreement"]
    assert final["cpu"] == entry["built_on"] and final["cpu"]["int8_flags"]


def test_second_build_is_a_no_op(tiny_build, store_env):
    before = {name: entry["tag"] for name, entry in listed(store_env).items()}
    started = time.perf_counter()
    proc = run_models(store_env, "build", "--profile", "tiny")
    seconds = time.perf_counter() - started
    assert proc.returncode == 0, proc.stderr
    lines = progress_lines(proc.stdout)
    assert len(lines) == len(TINY_NAMES)
    assert all("already built" in line for line in lines), lines
    assert {name: entry["tag"] for name, entry in listed(store_env).items()} == before
    assert seconds < min(15.0, tiny_build.seconds / 2)


def test_export_one_checkpoint_with_o2_and_int8(store_env, tiny_checkpoint):
    checkpoint = tiny_checkpoint("bert-classifier")
    proc = run_models(
        store_env,
        "export",
        "--task",
        "text-classification",
        "--source",
        str(checkpoint),
        "--name",
        "my-classifier",
        "--optimize",
        "O2",
        "--quantize",
        "int8",
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "saved my-classifier:" in proc.stdout
    entry = listed(store_env)["my-classifier"]
    assert entry["source"] == str(checkpoint.resolve())
    assert (entry["optimization"], entry["quantization"]) == ("O2", "int8")
    assert entry["profile"] == "custom"
    assert set(entry["parity"]) == {"fp32", "O2+int8"}
    config = entry["quantization_config"]
    assert config["per_channel"] is True
    # The same preset on every x86 CPU: 7-bit s8 weights, exact in every u8s8 kernel.
    assert (
        config["target"],
        config["preset"],
        config["reduce_range"],
        config["weights_dtype"],
    ) == ("x86-64", "avx512", True, "s8")
    assert "O2+int8" in proc.stdout and "confident rows" in proc.stdout
    # Which CPU exported and checked it (int8 kernels are picked per CPU).
    cpu = entry["parity"]["O2+int8"]["cpu"]
    assert cpu["model"] and cpu["machine"] and isinstance(cpu["int8_flags"], list)
    assert entry["built_on"] == cpu


def test_broken_int8_graph_is_refused_and_stores_nothing(store_env, tiny_checkpoint):
    """A quantizer that gets one layer wrong: the int8 weights of the first transformer layer
    are all set to their zero point (that layer's matrices multiply by zero)."""
    checkpoint = tiny_checkpoint("bert-classifier")
    proc = run_python(
        store_env,
        f"""
        import shutil
        import sys
        import tempfile
        from pathlib import Path
        import models.optimize
        from models.cli import main
        from models.int8_portability import break_int8_graph

        real_quantize = models.optimize.quantize_graphs

        def broken(folder, task, **kwargs):
            config = real_quantize(folder, task, **kwargs)
            with tempfile.TemporaryDirectory() as tmp:
                copy = break_int8_graph(folder, Path(tmp) / "broken", "zero-first-layer")
                shutil.copy(copy / "model.onnx", folder / "model.onnx")
            return config

        models.optimize.quantize_graphs = broken
        sys.exit(main(["export", "--task", "text-classification", "--source",
                       {str(checkpoint)!r}, "--name", "broken-int8", "--optimize", "O2",
                       "--quantize", "int8"]))
    """,
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "broken-int8: FAILED: parity failed (O2+int8): output 'logits'" in proc.stderr
    assert "moves decisions by a median" in proc.stderr
    assert "broken-int8" not in listed(store_env)


def test_broken_parity_fails_clearly_and_stores_nothing(store_env, tiny_checkpoint):
    checkpoint = tiny_checkpoint("bert-classifier")
    # An exporter that gets one weight wrong: the classifier bias moves every logit by 0.5.
    proc = run_python(
        store_env,
        f"""
        import sys
        import onnx
        from onnx import numpy_helper
        import models.export
        from models.cli import main

        real_export = models.export.export_onnx

        def tampered(checkpoint, out, task):
            real_export(checkpoint, out, task)
            model = onnx.load(out / "model.onnx")
            bias = next(i for i in model.graph.initializer if i.name == "classifier.bias")
            bias.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(bias) + 0.5, bias.name))
            onnx.save(model, out / "model.onnx")

        models.export.export_onnx = tampered
        sys.exit(main(["export", "--task", "text-classification", "--source",
                       {str(checkpoint)!r}, "--name", "tampered-classifier"]))
    """,
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    message = proc.stderr
    assert "tampered-classifier: FAILED: parity failed (fp32): output 'logits'" in message
    assert "max|Δ|=0.5" in message and "exceeds the tolerance" in message
    assert "tampered-classifier" not in listed(store_env)


def test_hub_source_fails_offline_with_a_clear_message(store_env):
    proc = run_models(
        store_env,
        "export",
        "--task",
        "text-classification",
        "--source",
        "distilbert-base-uncased-finetuned-sst-2-english",
        "--name",
        "sst2",
    )
    assert proc.returncode == 1
    assert "cannot fetch hub:distilbert-base-uncased-finetuned-sst-2-english" in proc.stderr
    assert "HF_HUB_OFFLINE=1" in proc.stderr
    assert "sst2" not in listed(store_env)


def test_missing_package_source_names_the_pip_install():
    with pytest.raises(SourceError, match="pip install not-an-installed-model-pkg"):
        resolve_source("package:not_an_installed_model_pkg/model").identity()


def test_store_and_catalog_are_torch_free(tiny_build, store_env):
    proc = run_python(
        store_env,
        """
        import json, sys
        for blocked in ("torch", "transformers", "optimum"):
            sys.modules[blocked] = None  # any import of them now raises ImportError
        from models.catalog import load_catalog
        from models.store import list_models, resolve, served_models, verify_files

        served = served_models("tiny")
        tag, path, metadata = resolve("tiny-gpt2")
        verify_files(path)
        print(json.dumps({"served": served, "listed": len(list_models()), "tag": tag}))
    """,
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    served = result["served"]
    assert [entry["name"] for entry in served] == TINY_NAMES
    defaults = {entry["task"]: entry["name"] for entry in served if entry["default"]}
    assert defaults == {
        spec.task: spec.name for spec in load_catalog().profile("tiny") if spec.default
    }
    assert result["tag"].startswith("tiny-gpt2:")


def test_served_models_names_what_is_not_built(store_env):
    proc = run_python(
        store_env,
        """
        from models.store import ModelNotFound, served_models
        try:
            served_models("hub")
        except ModelNotFound as err:
            print(err)
    """,
    )
    assert "not built yet: distilbert-sst2" in proc.stdout
    assert "python -m models build --profile hub" in proc.stdout


def test_catalog_profiles_cover_every_task_with_one_default():
    catalog = load_catalog()
    assert set(catalog.profiles) >= {"tiny", "hub", "local"}
    assert catalog.default_profile == "local"
    from service.runtime.registry import TASKS

    # tiny and hub serve every registered task; local only what real offline weights (or the
    # flagged untrained stand-ins of the first five tasks) support.
    for name in ("tiny", "hub"):
        assert set(catalog.profile(name).defaults()) == set(TASKS), name
    assert set(catalog.profile("local").defaults()) == {
        "text-classification",
        "question-answering",
        "text-generation",
        "translation",
        "feature-extraction",
    }
    assert catalog.profile("tiny").defaults()["text-generation"].name == "tiny-llama-chat"
    assert all(spec.revision for spec in catalog.profile("hub"))
    assert catalog.profile("local").get("all-minilm-l6-v2").scheme == "package"
    assert catalog.profile("local").get("smollm2-135m-instruct").scheme == "gguf"


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        (
            "{name: a, task: translation, source: 'tiny:t5', optimize: O9, default: true}",
            "optimize must be",
        ),
        ("{name: a, task: summarize, source: 'tiny:t5', default: true}", "unknown task"),
        ("{name: a, task: translation, source: 'ftp:x', default: true}", "source"),
        ("{name: a, task: translation, source: 'tiny:t5'}", "exactly one default"),
        (
            "{name: a, task: translation, source: 'tiny:t5', default: true, colour: red}",
            "unknown fields",
        ),
        (
            "{name: a, task: translation, source: 'tiny:t5', default: true, graph: genai}",
            "decoders only",
        ),
        (
            "{name: a, task: text-generation, source: 'tiny:gpt2', default: true, quantize: int4}",
            "int4 needs graph genai",
        ),
        (
            "{name: a, task: text-generation, source: 'tiny:gpt2', default: true, graph: genai, "
            "optimize: O2}",
            "optimized by its builder",
        ),
        (
            "{name: a, task: text-generation, source: 'tiny:gpt2', default: true, graph: tf}",
            "graph must be",
        ),
    ],
)
def test_catalog_rejects_invalid_entries(tmp_path, entry, message):
    path = tmp_path / "catalog.yaml"
    path.write_text(f"default_profile: p\nprofiles:\n  p:\n    models:\n      - {entry}\n")
    with pytest.raises(CatalogError, match=message):
        load_catalog(path)
