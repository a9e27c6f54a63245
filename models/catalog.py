"""The model catalog (`models/catalog.yaml`): which checkpoints each profile exports and serves.

Loaded and validated into frozen dataclasses so a typo in the YAML fails at start-up with the
entry's name, not halfway through a build. Torch-free: the service reads it at start-up.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, fields
from pathlib import Path

import yaml

from models.layout import TASKS

CATALOG_PATH = Path(__file__).with_name("catalog.yaml")

OPTIMIZATIONS = (None, "O1", "O2", "O3")
QUANTIZATIONS = (None, "int8", "int4")
# Who writes the ONNX graph: Optimum's exporter (every task), or ONNX Runtime GenAI's model
# builder (decoders only: fused attention, see models/genai_export.py).
GRAPHS = ("optimum", "genai")
SCHEMES = ("tiny", "hub", "dir", "package", "gguf", "trained")
# BentoML tag names: lowercase alphanumerics, '-', '_' and '.', starting and ending alphanumeric.
NAME_PATTERN = re.compile(r"^[a-z0-9](?:[a-z0-9._-]{0,61}[a-z0-9])?$")


class CatalogError(ValueError):
    """The catalog (or a model given on the command line) is not valid."""


@dataclass(frozen=True)
class ModelSpec:
    """One exportable model: where its checkpoint comes from and how it is exported."""

    name: str
    task: str
    source: str
    revision: str | None = None
    optimize: str | None = None
    quantize: str | None = None
    graph: str = "optimum"
    default: bool = False
    description: str = ""
    licence: str = ""

    @property
    def scheme(self) -> str:
        return parse_source(self.source)[0]

    @property
    def target(self) -> str:
        return parse_source(self.source)[1]

    def validate(self) -> ModelSpec:
        """Return self, or raise CatalogError naming the entry and the bad field."""
        where = f"model {self.name!r}"
        if not NAME_PATTERN.match(self.name):
            raise CatalogError(
                f"{where}: name must be lowercase letters, digits, '-', '_' or '.' (a BentoML tag)"
            )
        if self.task not in TASKS:
            raise CatalogError(f"{where}: unknown task {self.task!r}; known: {', '.join(TASKS)}")
        if self.optimize not in OPTIMIZATIONS:
            raise CatalogError(f"{where}: optimize must be one of null, O1, O2, O3")
        if self.quantize not in QUANTIZATIONS:
            raise CatalogError(f"{where}: quantize must be null, int8 or int4")
        if self.graph not in GRAPHS:
            raise CatalogError(f"{where}: graph must be one of {', '.join(GRAPHS)}")
        if self.graph == "genai":
            if self.task != "text-generation":
                raise CatalogError(f"{where}: graph genai writes decoders only (text-generation)")
            if self.optimize or self.quantize == "int8":
                raise CatalogError(
                    f"{where}: graph genai is optimized by its builder; "
                    "optimize must be null and quantize null or int4"
                )
        elif self.quantize == "int4":
            raise CatalogError(
                f"{where}: quantize int4 needs graph genai (the builder's blockwise 4-bit weights)"
            )
        try:
            parse_source(self.source)
        except CatalogError as err:
            raise CatalogError(f"{where}: {err}") from None
        return self


@dataclass(frozen=True)
class Profile:
    """A named set of models, at most one default per task."""

    name: str
    description: str
    models: tuple[ModelSpec, ...]

    def __iter__(self) -> Iterator[ModelSpec]:
        return iter(self.models)

    def get(self, name: str) -> ModelSpec:
        for spec in self.models:
            if spec.name == name:
                return spec
        known = ", ".join(spec.name for spec in self.models)
        raise CatalogError(f"profile {self.name!r} has no model {name!r}; it has: {known}")

    def defaults(self) -> dict[str, ModelSpec]:
        """Task -> the model that serves it when a request names none."""
        return {spec.task: spec for spec in self.models if spec.default}


@dataclass(frozen=True)
class Catalog:
    profiles: dict[str, Profile]
    default_profile: str

    def profile(self, name: str | None = None) -> Profile:
        name = name or self.default_profile
        if name not in self.profiles:
            known = ", ".join(self.profiles)
            raise CatalogError(f"unknown profile {name!r}; known: {known}")
        return self.profiles[name]


def parse_source(source: str) -> tuple[str, str]:
    """Split `scheme:target` (e.g. `hub:t5-small`) and check the scheme."""
    scheme, sep, target = str(source).partition(":")
    if not sep or scheme not in SCHEMES or not target:
        raise CatalogError(
            f"source {source!r} must be one of tiny:<kind>, hub:<hf id>, dir:<path>, "
            "package:<module>/<subpath>, gguf:<module>/<file>, trained:<recipe>"
        )
    return scheme, target


_SPEC_FIELDS = {f.name for f in fields(ModelSpec)}


def _spec(raw: dict, profile: str) -> ModelSpec:
    if not isinstance(raw, dict) or "name" not in raw:
        raise CatalogError(f"profile {profile!r}: every model needs at least a name, task, source")
    unknown = set(raw) - _SPEC_FIELDS
    if unknown:
        raise CatalogError(f"model {raw['name']!r}: unknown fields {sorted(unknown)}")
    missing = {"task", "source"} - set(raw)
    if missing:
        raise CatalogError(f"model {raw['name']!r}: missing {sorted(missing)}")
    values = {key: raw[key] for key in raw}
    if values.get("revision") is not None:
        values["revision"] = str(values["revision"])
    values["default"] = bool(values.get("default", False))
    return ModelSpec(**values).validate()


def _profile(name: str, raw: dict) -> Profile:
    models = tuple(_spec(entry, name) for entry in raw.get("models") or ())
    names = [spec.name for spec in models]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise CatalogError(f"profile {name!r}: duplicate model names {duplicates}")
    for task in {spec.task for spec in models}:
        defaults = [spec.name for spec in models if spec.task == task and spec.default]
        if len(defaults) != 1:
            raise CatalogError(
                f"profile {name!r}: task {task!r} needs exactly one default model, has {defaults}"
            )
    return Profile(name=name, description=str(raw.get("description", "")).strip(), models=models)


def load_catalog(path: Path = CATALOG_PATH) -> Catalog:
    """Read and validate the catalog."""
    raw = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    bodies = raw.get("profiles") or {}
    profiles = {name: _profile(name, body or {}) for name, body in bodies.items()}
    default = raw.get("default_profile", "local")
    if default not in profiles:
        raise CatalogError(f"default_profile {default!r} is not a profile of {path}")
    return Catalog(profiles=profiles, default_profile=default)
