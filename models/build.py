"""Build one model: checkpoint -> ONNX export -> optimize/quantize -> parity -> model store.

Everything happens in a temporary folder; only an export that passed parity reaches the store.
The store version is a digest of what determines the result (source identity, task, options,
the exporting packages and this pipeline's code), so building an unchanged model again finds it
stored and does nothing.
"""

from __future__ import annotations

import json
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata as package_metadata
from pathlib import Path

from models import store
from models.catalog import ModelSpec
from models.hashing import file_sha256
from models.layout import graph_files, prune_unserved_graphs
from models.sources import Source, resolve_source

# Packages whose versions change the exported files (recorded, and part of the version).
EXPORTER_PACKAGES = (
    "optimum",
    "optimum-onnx",
    "transformers",
    "tokenizers",
    "torch",
    "onnx",
    "onnxruntime",
    "sentence-transformers",
    "onnxruntime-genai",
)
# The modules whose code shapes the serving folder (a change to them means a new version).
PIPELINE_MODULES = (
    "export.py",
    "marian_tokenizer.py",
    "optimize.py",
    "layout.py",
    "genai_export.py",
)
PER_CHANNEL = True  # per-channel int8 weights: MiniLM cosine 0.97 vs 0.87 per-tensor (measured)


@dataclass
class BuildResult:
    """What `build_model` did, for the progress line and the caller."""

    name: str
    tag: str
    status: str  # "built" or "already built"
    path: str
    steps: list[tuple[str, float]] = field(default_factory=list)
    parity: dict = field(default_factory=dict)
    seconds: float = 0.0


def exporter_versions() -> dict[str, str]:
    """Versions of the packages that produce the export (read without importing them)."""
    versions = {}
    for package in EXPORTER_PACKAGES:
        try:
            versions[package] = package_metadata.version(package)
        except package_metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return versions


def build_identity(spec: ModelSpec, source: Source) -> dict:
    """Everything that determines the stored files; its digest is the model version."""
    from models.optimize import quantization_target

    here = Path(__file__).parent
    identity = {
        "source": source.identity(),
        "task": spec.task,
        "optimize": spec.optimize,
        "quantize": spec.quantize,
        "graph": spec.graph,
        "exporter": exporter_versions(),
        "pipeline": {
            name: file_sha256(here / name) for name in PIPELINE_MODULES if (here / name).exists()
        },
    }
    if spec.quantize == "int8":
        # One preset per architecture (models/optimize.py): x86 builds agree whatever the CPU.
        identity["quantization_target"] = quantization_target().name
        identity["per_channel"] = PER_CHANNEL
    return identity


def build_model(spec: ModelSpec, profile: str) -> BuildResult:
    """Build `spec` into the model store unless an identical build is already there."""
    started = time.perf_counter()
    source = resolve_source(spec.source, spec.revision)
    identity = build_identity(spec, source)
    version = store.model_version(identity)
    existing = store.find(spec.name, version)
    if existing:
        return BuildResult(
            spec.name,
            existing["tag"],
            "already built",
            existing["path"],
            parity=existing.get("parity", {}),
            seconds=time.perf_counter() - started,
        )

    from models.optimize import optimize_graphs, quantize_graphs
    from models.parity import check_parity, stage_name

    steps: list[tuple[str, float]] = []

    def step(label: str, action, *args, **kwargs):
        begin = time.perf_counter()
        value = action(*args, **kwargs)
        steps.append((label, time.perf_counter() - begin))
        return value

    parity: dict[str, dict] = {}
    quantization_config = None
    with tempfile.TemporaryDirectory(prefix=f"build-{spec.name}-") as work:
        checkpoint = step("checkpoint", source.fetch, Path(work))
        serving = Path(work) / "serving"
        if spec.graph == "genai":
            return _build_genai(
                spec, profile, source, identity, version, checkpoint, serving, step, steps, started
            )
        from models.export import export_onnx

        step("export", export_onnx, checkpoint, serving, spec.task)
        parity["fp32"] = step("parity", check_parity, checkpoint, serving, spec.task)
        if spec.optimize:
            step(spec.optimize, optimize_graphs, serving, spec.task, spec.optimize)
        if spec.quantize:
            quantization_config = step(
                spec.quantize, quantize_graphs, serving, spec.task, per_channel=PER_CHANNEL
            )
        prune_unserved_graphs(serving, spec.task)
        if spec.optimize or spec.quantize:
            stage = stage_name(spec.optimize, spec.quantize)
            parity[stage] = step(
                f"parity {stage}",
                check_parity,
                checkpoint,
                serving,
                spec.task,
                spec.optimize,
                spec.quantize,
            )
        metadata = describe(spec, profile, source, serving, identity, parity, quantization_config)
        listing = step("store", store.save, spec.name, version, serving, metadata)
    return BuildResult(
        spec.name,
        listing["tag"],
        "built",
        listing["path"],
        steps,
        parity,
        time.perf_counter() - started,
    )


def _build_genai(
    spec: ModelSpec,
    profile: str,
    source: Source,
    identity: dict,
    version: str,
    checkpoint: Path,
    serving: Path,
    step,
    steps: list,
    started: float,
) -> BuildResult:
    """A decoder written by ONNX Runtime GenAI's builder at the spec's precision, checked against
    PyTorch with that precision's tolerance (int4: a perplexity bound, see models/parity.py)."""
    from models.genai_export import build_decoder
    from models.parity import check_parity

    precision = spec.quantize or "fp32"
    step(f"export (genai {precision})", build_decoder, checkpoint, serving, precision)
    label = "parity" if precision == "fp32" else f"parity {precision}"
    parity = {
        precision: step(label, check_parity, checkpoint, serving, spec.task, None, spec.quantize)
    }
    metadata = describe(spec, profile, source, serving, identity, parity, None)
    listing = step("store", store.save, spec.name, version, serving, metadata)
    return BuildResult(
        spec.name,
        listing["tag"],
        "built",
        listing["path"],
        steps,
        parity,
        time.perf_counter() - started,
    )


def describe(
    spec: ModelSpec,
    profile: str,
    source: Source,
    folder: Path,
    identity: dict,
    parity: dict,
    quantization_config: dict | None,
) -> dict:
    """The metadata stored with a model (and written to its manifest). `built_on` is the CPU
    that exported and checked it: int8 outputs are exact only for the integer kernels it ran."""
    from models.cpu import describe_cpu

    config = _json(folder / "config.json")
    return {
        "task": spec.task,
        "profile": profile,
        "source": source.location(),
        "source_uri": spec.source,
        "revision": spec.revision,
        "architecture": config.get("model_type"),
        "architectures": config.get("architectures"),
        "graphs": list(graph_files(spec.task)),
        "opset": onnx_opset(folder / graph_files(spec.task)[0]),
        "optimization": spec.optimize,
        "quantization": spec.quantize,
        "quantization_config": quantization_config,
        "graph": spec.graph,
        "parity": parity,
        "exporter": identity["exporter"],
        "built_on": describe_cpu(),
        "identity": identity,
        "max_input_tokens": max_input_tokens(folder),
        "default": spec.default,
        "description": spec.description,
        "licence": spec.licence,
        "card": source.card(folder) or None,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def onnx_opset(path: Path) -> int | None:
    """The default-domain opset of a graph."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    for entry in model.opset_import:
        if entry.domain in ("", "ai.onnx"):
            return int(entry.version)
    return None


# Where Hugging Face configs state the longest input their positions cover.
POSITION_KEYS = ("max_position_embeddings", "n_positions", "max_sequence_length")
UNSET_MAX_LENGTH = 1_000_000  # transformers writes a huge sentinel when a tokenizer has no limit


def max_input_tokens(folder: Path) -> int | None:
    """The longest input (in tokens) the model takes: the tokenizer's limit and the position
    table's, whichever is smaller (T5 has no position table, GPT-2 no tokenizer limit)."""
    config = _json(folder / "config.json")
    tokenizer = _json(folder / "tokenizer_config.json")
    limits = [config[key] for key in POSITION_KEYS if isinstance(config.get(key), int)]
    tokenizer_limit = tokenizer.get("model_max_length")
    if isinstance(tokenizer_limit, int | float) and tokenizer_limit < UNSET_MAX_LENGTH:
        limits.append(int(tokenizer_limit))
    return min(limits) if limits else None


def _json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
