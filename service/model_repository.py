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
from service.runtime.errors import ModelLoadError


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
    def version(self) -> str:
        return self.tag.split(":", 1)[1] if ":" in self.tag else ""


def load_records(settings: Settings) -> list[ModelRecord]:
    """The latest stored version of every model the settings ask for, hashes verified."""
    from models import store

    wanted = set(settings.models.serve)
    records = []
    # A partly built profile may still serve the models named in `models.serve`.
    try:
        entries = store.served_models(settings.models.profile, strict=not wanted)
    except (store.ModelNotFound, LookupError) as err:
        raise ModelLoadError(str(err)) from None
    for entry in entries:
        if wanted and entry["name"] not in wanted:
            continue
        records.append(ModelRecord(
            name=entry["name"], tag=entry["tag"], task=entry["task"], path=Path(entry["path"]),
            source=entry.get("source", ""), optimization=entry.get("optimization"),
            quantization=entry.get("quantization"), default=bool(entry.get("default")),
            metadata=entry,
        ))
    missing = wanted - {r.name for r in records}
    if missing:
        raise ModelLoadError(
            f"models {sorted(missing)} are not in the store for profile "
            f"{settings.models.profile!r}; run `python -m models build --profile "
            f"{settings.models.profile}`")
    if not records:
        raise ModelLoadError(
            f"no built models for profile {settings.models.profile!r}; run "
            f"`python -m models build --profile {settings.models.profile}`")
    if settings.models.verify_hashes:
        for record in records:
            try:
                store.verify_files(record.path)
            except store.ManifestError as err:
                raise ModelLoadError(f"model {record.tag}: {err}") from None
    return records
