"""Exported serving folders in the BentoML model store, as `NAME:VERSION`.

Writing (`save`) is used by the build; reading (`list_models`, `resolve`, `served_models`,
`verify_files`) is what the service calls at start-up, so this module imports neither torch nor
transformers nor optimum. BentoML itself is imported inside the functions: it fixes the store
location (`BENTOML_HOME`) when first imported, and callers may set that late.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from models.catalog import Catalog, load_catalog
from models.hashing import data_digest, file_sha256, folder_hashes

MANIFEST = "manifest.json"
# Marks the store entries this project built (the store may hold other BentoML models).
LABEL = ("built-by", "python-m-models")
# Metadata every listed model has, whatever the profile (docs/api.md,
# `python -m models list --json`).
LISTED_FIELDS = ("name", "tag", "task", "profile", "source", "path", "optimization", "quantization")


class ModelNotFound(LookupError):
    """No stored model matches; the message says how to build it."""


class ManifestError(RuntimeError):
    """A stored serving folder does not match its manifest (a file changed or went missing)."""


def model_version(identity: dict) -> str:
    """The store version for a build: a digest of everything that determines its files."""
    return data_digest(identity, length=16)


def find(name: str, version: str) -> dict | None:
    """The listing of `name:version` when it is stored, else None."""
    import bentoml
    from bentoml.exceptions import NotFound

    try:
        model = bentoml.models.get(f"{name}:{version}")
    except NotFound:
        return None
    return _listing(model) if model.tag.version == version else None


def save(name: str, version: str, folder: Path, metadata: dict) -> dict:
    """Store the serving folder as `name:version` with `metadata`, which also lands in the
    folder as `manifest.json` together with the sha256 of every file (the runtime checks them)."""
    import bentoml

    folder = Path(folder)
    files = folder_hashes(folder, exclude=(MANIFEST,))
    metadata = {
        **metadata,
        "name": name,
        "version": version,
        "tag": f"{name}:{version}",
        "files": files,
        "size_bytes": sum((folder / rel).stat().st_size for rel in files),
    }
    (folder / MANIFEST).write_text(json.dumps(metadata, indent=2, sort_keys=True) + "\n")
    labels = {
        LABEL[0]: LABEL[1],
        "task": metadata["task"],
        "profile": str(metadata.get("profile")),
        "optimization": str(metadata.get("optimization")),
        "quantization": str(metadata.get("quantization")),
    }
    stored = _without_none(metadata)  # BentoML metadata refuses None; the manifest keeps it
    with bentoml.models.create(f"{name}:{version}", labels=labels, metadata=stored) as model:
        shutil.copytree(folder, model.path, dirs_exist_ok=True)
    return _listing(bentoml.models.get(f"{name}:{version}"))


def list_models() -> list[dict]:
    """Every model this project built, by name then newest first."""
    import bentoml

    models = [m for m in bentoml.models.list() if m.info.labels.get(LABEL[0]) == LABEL[1]]
    models.sort(key=lambda m: m.info.creation_time, reverse=True)
    models.sort(key=lambda m: m.tag.name)
    return [_listing(m) for m in models]


def resolve(name_or_tag: str) -> tuple[str, Path, dict]:
    """(tag, folder, metadata) of `NAME:VERSION` (a version prefix will do), or of the latest
    version of `NAME`."""
    import bentoml
    from bentoml.exceptions import BentoMLException, NotFound

    try:
        model = bentoml.models.get(name_or_tag)
    except NotFound:
        raise ModelNotFound(
            f"no model {name_or_tag!r} in the model store; build it with "
            "`python -m models build [--profile NAME] [MODEL ...]` (`python -m models list` "
            "shows what is there)"
        ) from None
    except (BentoMLException, ValueError) as err:  # an ambiguous version prefix, a bad tag
        raise ModelNotFound(str(err)) from None
    if model.info.labels.get(LABEL[0]) != LABEL[1]:
        raise ModelNotFound(f"{model.tag} was not built by `python -m models`")
    listing = _listing(model)
    return listing["tag"], Path(listing["path"]), listing


def served_models(
    profile: str | None = None, catalog: Catalog | None = None, strict: bool = True
) -> list[dict]:
    """The latest stored build of every catalog entry of `profile`, in catalog order, each with
    the catalog's `default` flag. A build counts only if it was made from the entry as the
    catalog now states it (profile, source, revision, graph, optimization, quantization; builds
    from before `graph` existed are Optimum's). Missing builds
    raise ModelNotFound naming them, unless `strict` is false (then they are left out)."""
    catalog = catalog or load_catalog()
    chosen = catalog.profile(profile)
    stored: dict[str, list[dict]] = {}
    for listing in list_models():
        stored.setdefault(listing["name"], []).append(listing)
    served, missing = [], []
    for spec in chosen:
        builds = [
            listing
            for listing in stored.get(spec.name, [])
            if listing.get("profile") == chosen.name
            and listing.get("source_uri") == spec.source
            and listing.get("revision") == spec.revision
            and listing.get("optimization") == spec.optimize
            and listing.get("quantization") == spec.quantize
            and (listing.get("graph") or "optimum") == spec.graph
        ]
        if not builds:
            missing.append(spec.name)
            continue
        served.append({**builds[0], "default": spec.default})
    if missing and strict:
        raise ModelNotFound(
            f"profile {chosen.name!r}: not built yet: {', '.join(missing)}; run "
            f"`python -m models build --profile {chosen.name}`"
        )
    return served


def verify_files(folder: Path) -> dict:
    """Check every file the folder's manifest lists against its sha256; return the manifest."""
    folder = Path(folder)
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError) as err:
        raise ManifestError(f"{folder}: no readable {MANIFEST} ({err})") from None
    rebuild = "rebuild it with `python -m models build`"
    for rel, expected in manifest.get("files", {}).items():
        path = folder / rel
        if not path.is_file():
            raise ManifestError(
                f"file {rel} is missing from {folder} ({MANIFEST} lists it); {rebuild}"
            )
        actual = file_sha256(path)
        if actual != expected:
            raise ManifestError(
                f"file {rel} in {folder} does not match {MANIFEST} (sha256 {actual[:12]}…, "
                f"expected {expected[:12]}…; {path.stat().st_size} bytes): it was truncated or "
                f"changed after export; {rebuild}"
            )
    return manifest


def _without_none(value):
    if isinstance(value, dict):
        return {k: _without_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list | tuple):
        return [_without_none(v) for v in value if v is not None]
    return value


def _listing(model) -> dict:
    """A stored model as `list --json` shows it: its manifest (BentoML's copy of the metadata
    lacks the null fields), plus where it is."""
    try:
        metadata = json.loads((Path(model.path) / MANIFEST).read_text())
    except (OSError, ValueError):
        metadata = dict(model.info.metadata)
    return {
        **metadata,
        "name": model.tag.name,
        "version": model.tag.version,
        "tag": str(model.tag),
        "path": str(model.path),
        # When it was stored (Unix seconds): OpenAI's `created` of the model.
        "created": int(model.info.creation_time.timestamp()),
    }
