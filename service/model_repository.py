"""Which stored models this process serves, and proof that their files are the exported ones.

Reads the BentoML model store through `models.store` (torch-free) and the catalog profile the
settings name. File hashes recorded at export time are checked before a model is loaded, so a
truncated or tampered file stops start-up with a message naming the model and the file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from service.config import Settings
from service.runtime.errors import ModelLoadError, ModelNotFound


@dataclass(frozen=True)
class ModelRecord:
    name: str
    tag: str
    task: str
    path: Path
    source: str = ""
    optimization: str | None = None
    quantization: str | None = None
    default: bool = False
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def graph(self) -> str:
        """Who wrote the ONNX graph: `optimum` (also builds from before the field) or `genai`."""
        return str(self.metadata.get("graph") or "optimum")

    @property
    def version(self) -> str:
        return self.tag.split(":", 1)[1] if ":" in self.tag else ""

    @property
    def created(self) -> int:
        """When the build was stored (Unix seconds; 0 if the store did not say)."""
        return int(self.metadata.get("created") or 0)

    @property
    def public_source(self) -> str:
        """Where the weights came from, as a caller may see it: the catalog source (`hub:id@rev`,
        `package:...`, `tiny:...`), a local folder by its name only (`dir:NAME`). Answers never
        show a path of the server's file system."""
        uri = str(self.metadata.get("source_uri") or "")
        scheme, _, target = uri.partition(":")
        if not target:
            return Path(self.source).name if self.source.startswith("/") else self.source
        if scheme == "dir" or target.startswith("/"):
            return f"{scheme}:{Path(target).name}"
        return uri

    @property
    def untrained(self) -> bool:
        """Random weights (a `tiny:` source): its outputs are noise, and every protocol says so
        (`untrained` in the model lists and v2 metadata, a `Warning` header on HTTP answers)."""
        return str(self.metadata.get("source_uri", "")).startswith("tiny:")


def _record(entry: dict[str, Any]) -> ModelRecord:
    return ModelRecord(
        name=entry["name"],
        tag=entry["tag"],
        task=entry["task"],
        path=Path(entry["path"]),
        source=entry.get("source", ""),
        optimization=entry.get("optimization"),
        quantization=entry.get("quantization"),
        default=bool(entry.get("default")),
        metadata=entry,
    )


def portability_warnings(records: list[ModelRecord], flags: set[str] | None = None) -> list[str]:
    """One line per model whose int8 graph may compute other numbers on this CPU than it did at
    its parity check (full-range s8 weights where u8s8 kernels saturate; models/cpu.py). New
    builds use 7-bit weights and never warn; builds from before may."""
    from models.cpu import cpu_flags, saturation_hazard

    flags = cpu_flags() if flags is None else flags
    warnings = []
    for record in records:
        hazard = saturation_hazard(record.metadata.get("quantization_config"), flags)
        if hazard:
            warnings.append(f"{record.tag}: {hazard}")
    return warnings


def load_records(settings: Settings) -> list[ModelRecord]:
    """The latest stored version of every model the settings ask for, hashes verified."""
    from models import store

    wanted = list(dict.fromkeys(settings.models.serve))
    # A partly built profile may still serve the models named in `models.serve`.
    try:
        entries = store.served_models(settings.models.profile, strict=not wanted)
    except (store.ModelNotFound, LookupError) as err:
        raise ModelLoadError(str(err)) from None
    if wanted:
        by_name = {entry["name"]: entry for entry in entries}
        entries = []
        for name in wanted:
            if name in by_name:
                entries.append(by_name[name])
                continue
            # Not in the profile: a model exported by hand (`python -m models export`).
            try:
                entries.append(store.resolve(name)[2])
            except (store.ModelNotFound, LookupError) as err:
                raise ModelLoadError(f"model {name!r} cannot be served: {err}") from None
    records = [_record(entry) for entry in entries]
    if not records:
        raise ModelLoadError(
            f"no built models for profile {settings.models.profile!r}; run "
            f"`python -m models build --profile {settings.models.profile}`"
        )
    if settings.models.verify_hashes:
        for record in records:
            try:
                store.verify_files(record.path)
            except store.ManifestError as err:
                raise ModelLoadError(
                    f"model {record.name} ({record.tag}) failed verification: {err}"
                ) from None
    return records


def stored_record(name_or_tag: str, verify: bool = True) -> ModelRecord:
    """One stored model by name (its latest version) or `NAME:VERSION`, hashes verified: what
    the repository extension loads. Raises ModelNotFound for a name the store lacks (requests
    name models, never paths: a name with a `/` is no stored model either)."""
    from models import store

    if "/" in name_or_tag or "\\" in name_or_tag:
        raise ModelNotFound(f"no model {name_or_tag!r} in the model store")
    try:
        record = _record(store.resolve(name_or_tag)[2])
    except (store.ModelNotFound, LookupError) as err:
        raise ModelNotFound(str(err)) from None
    if verify:
        try:
            store.verify_files(record.path)
        except store.ManifestError as err:
            # An answer to a caller: the store's folder is named by the model's tag, not its path.
            reason = (
                str(err).replace(f" in {record.path}", "").replace(str(record.path), record.tag)
            )
            raise ModelLoadError(
                f"model {record.name} ({record.tag}) failed verification: {reason}"
            ) from None
    return record


def stored_index() -> list[dict[str, Any]]:
    """Every model this project built, its latest version only: name, version, task."""
    from models import store

    latest: dict[str, dict[str, Any]] = {}
    for listing in store.list_models():  # by name, newest first
        latest.setdefault(listing["name"], listing)
    return [
        {"name": name, "version": entry["version"], "task": entry.get("task", "")}
        for name, entry in latest.items()
    ]
