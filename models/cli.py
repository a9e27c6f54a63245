"""`python -m models`: build the catalog's models, export one checkpoint, list the model store.

    python -m models build [--profile NAME] [MODEL ...]
    python -m models export --task TASK --source HF_ID_OR_DIR --name NAME [--optimize O2]
                            [--quantize int8|int4] [--graph optimum|genai]
    python -m models list [--json]

The store is BentoML's (`BENTOML_HOME`, by default ~/bentoml; the Makefile points it at the
project's `.bentoml/`).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import traceback
import warnings
from collections.abc import Callable
from pathlib import Path

from models.catalog import SCHEMES, CatalogError, ModelSpec, load_catalog
from models.layout import TASKS

EXPORT_PROFILE = "custom"  # the profile recorded for one-off `export`s (no catalog entry)
NOISY_LOGGERS = (
    "transformers",
    "optimum",
    "onnxruntime",
    "torch",
    "sentence_transformers",
    "huggingface_hub",
    "bentoml",
)


# The export side (torch, transformers, Optimum) is locked for this Python only
# (requirements/export.txt, whose torch is the 3.11 CPU wheel); serving runs on 3.11-3.13.
EXPORT_PYTHON = (3, 11)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    os.environ.setdefault("BENTOML_DO_NOT_TRACK", "True")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if not getattr(args, "verbose", False):
        _quiet()
    if args.command in ("build", "export") and not _export_side_ready():
        return 2
    return COMMANDS[args.command](args)


def _export_side_ready() -> bool:
    """Say plainly when the export side is missing or on a Python it is not locked for."""
    import importlib.util

    missing = [
        name
        for name in ("torch", "transformers", "optimum")
        if importlib.util.find_spec(name) is None
    ]
    here = f"{sys.version_info.major}.{sys.version_info.minor}"
    locked = ".".join(map(str, EXPORT_PYTHON))
    if missing:
        print(
            f"error: exporting needs the export side ({', '.join(missing)} not installed): "
            f"on Python {locked}, `make install` (requirements/dev.txt) or "
            "`pip install --require-hashes --no-deps -r requirements/export.txt`",
            file=sys.stderr,
        )
        return False
    if sys.version_info[:2] != EXPORT_PYTHON:
        print(
            f"warning: the export side is locked and tested on Python {locked} only; this is "
            f"Python {here} (serving is tested on 3.11, 3.12 and 3.13)",
            file=sys.stderr,
        )
    return True


def build(args: argparse.Namespace) -> int:
    """Export every model of a profile (or the named ones)."""
    try:
        profile = load_catalog().profile(args.profile)
        specs = [profile.get(name) for name in args.models] if args.models else list(profile)
    except CatalogError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"building {len(specs)} model(s) of profile {profile.name!r}", flush=True)
    failures = _build_all(specs, profile.name, args.verbose)
    if failures:
        print(f"{len(failures)} of {len(specs)} failed: {', '.join(failures)}", file=sys.stderr)
        return 1
    return 0


def export(args: argparse.Namespace) -> int:
    """Export one checkpoint (hub id or folder) under a name of the caller's choosing."""
    try:
        spec = ModelSpec(
            name=args.name,
            task=args.task,
            source=source_uri(args.source),
            revision=args.revision,
            optimize=args.optimize,
            quantize=args.quantize,
            graph=args.graph,
            description=f"exported with `python -m models export --source {args.source}`",
        ).validate()
    except CatalogError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 1 if _build_all([spec], EXPORT_PROFILE, args.verbose) else 0


def list_command(args: argparse.Namespace) -> int:
    """Show the models in the store (`--json`: the full metadata as a JSON list)."""
    from models.store import list_models

    models = list_models()
    if args.json:
        print(json.dumps(models, indent=2, sort_keys=True))
        return 0
    rows = [("TAG", "TASK", "PROFILE", "GRAPH", "OPT", "QUANT", "SIZE", "CREATED", "SOURCE")]
    for m in models:
        size = f"{m.get('size_bytes', 0) / 1e6:.1f} MB"
        rows.append(
            (
                m["tag"],
                m["task"],
                str(m.get("profile")),
                m.get("graph") or "optimum",
                m.get("optimization") or "-",
                m.get("quantization") or "-",
                size,
                m.get("created", "")[:19],
                m.get("source", ""),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False))
            + "  "
            + row[-1]
        )
    if not models:
        print("(no models yet: python -m models build)")
    return 0


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "build": build,
    "export": export,
    "list": list_command,
}


def source_uri(source: str) -> str:
    """`--source` as a catalog source: kept when it names a scheme, else a folder that exists
    becomes `dir:`, anything else a hub id."""
    scheme = source.partition(":")[0]
    if scheme in SCHEMES:
        return source
    if Path(source).expanduser().exists():
        return f"dir:{Path(source).expanduser().resolve()}"
    return f"hub:{source}"


def _build_all(specs: list[ModelSpec], profile: str, verbose: bool) -> list[str]:
    from models.build import build_model

    failures = []
    for index, spec in enumerate(specs, start=1):
        prefix = f"[{index}/{len(specs)}] {spec.name}:"
        try:
            result = build_model(spec, profile)
        except Exception as err:  # report and go on with the other models
            if verbose:
                traceback.print_exc()
            print(f"{prefix} FAILED: {err}", file=sys.stderr, flush=True)
            failures.append(spec.name)
            continue
        print(f"{prefix} {progress_line(result)}", flush=True)
    return failures


def progress_line(result) -> str:
    """e.g. `export 0.4s, parity max|Δ|=2e-07 0.3s, saved tiny-gpt2:abc123 (1.2s)`."""
    if result.status == "already built":
        return f"already built {result.tag}"
    parts = []
    for label, seconds in result.steps:
        if label == "store":
            continue
        if label.startswith("parity"):
            stage = label.partition(" ")[2] or "fp32"
            label = f"{label} {_parity_summary(result.parity[stage])}"
        parts.append(f"{label} {seconds:.1f}s")
    return f"{', '.join(parts)}, saved {result.tag} ({result.seconds:.1f}s)"


def _parity_summary(report: dict) -> str:
    text = f"max|Δ|={report['max_abs_diff']:.1g}"
    outputs = report["outputs"].values()
    agreements = [f["agreement"] for f in outputs if "agreement" in f]
    cosines = [f["min_cosine"] for f in outputs if "min_cosine" in f]
    ratios = [f["perplexity_ratio"] for f in outputs if "perplexity_ratio" in f]
    if report["stage"] == "int4" and ratios:
        return text + f" perplexity x{max(ratios):.3f}"
    if report["stage"] != "fp32":
        if agreements:
            text += f" argmax-agreement={min(agreements):.2f}"
        confident = [
            (f["confident_agreement"], f["confident_rows"], f["rows"])
            for f in outputs
            if "confident_rows" in f
        ]
        if confident:
            share, count, rows = min(confident)
            text += f" ({share:.2f} on {count}/{rows} confident rows)"
        if cosines:
            text += f" cosine>={min(cosines):.3f}"
    return text


def _quiet() -> None:
    """Keep the progress lines readable: exporter tracing warnings and info logs are noise."""
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    warnings.filterwarnings("ignore")
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m models",
        description="Export Hugging Face checkpoints to ONNX serving folders in the model store.",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    build_parser = commands.add_parser("build", help="export the models of a catalog profile")
    build_parser.add_argument("--profile", help="catalog profile (default: the catalog's)")
    build_parser.add_argument(
        "models", nargs="*", metavar="MODEL", help="only these models of the profile"
    )
    build_parser.add_argument(
        "-v", "--verbose", action="store_true", help="show exporter warnings and tracebacks"
    )

    export_parser = commands.add_parser("export", help="export one checkpoint")
    export_parser.add_argument("--task", required=True, choices=TASKS)
    export_parser.add_argument(
        "--source", required=True, help="hub id, checkpoint folder, or tiny:/hub:/dir:/package: URI"
    )
    export_parser.add_argument("--name", required=True, help="model store name")
    export_parser.add_argument("--revision", help="hub revision (commit) to export")
    export_parser.add_argument("--optimize", choices=("O1", "O2", "O3"))
    export_parser.add_argument("--quantize", choices=("int8", "int4"))
    export_parser.add_argument(
        "--graph",
        choices=("optimum", "genai"),
        default="optimum",
        help="genai: ONNX Runtime GenAI's builder (text-generation only)",
    )
    export_parser.add_argument("-v", "--verbose", action="store_true")

    list_parser = commands.add_parser("list", help="list the models in the store")
    list_parser.add_argument("--json", action="store_true", help="print a JSON list")
    return parser
