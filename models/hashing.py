"""Content hashes: of files (the manifest the runtime verifies) and of plain data (versions).

Model versions are derived from what went into a build, so building the same thing twice lands on
the same `NAME:VERSION` and can be skipped.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

CHUNK = 1 << 20


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while block := stream.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


def folder_hashes(folder: Path, exclude: tuple[str, ...] = ()) -> dict[str, str]:
    """sha256 of every file under `folder`, keyed by POSIX path relative to it, sorted.

    Hidden entries (`.git`, `.cache`) are skipped: they are tooling state, not model content.
    """
    folder = Path(folder)
    hashes = {}
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder)
        if not path.is_file() or rel.as_posix() in exclude:
            continue
        if any(part.startswith(".") for part in rel.parts):
            continue
        hashes[rel.as_posix()] = file_sha256(path)
    return hashes


def data_digest(value: object, length: int = 16) -> str:
    """A short, stable hex digest of JSON-serializable data (key order does not matter)."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:length]
