"""Served-model records read straight from a tiny BentoML store folder, for in-process tests.

Reading the folder (`models/<name>/latest`, `model.yaml`) instead of going through `bentoml`
keeps these tests independent of where an earlier import pointed BentoML's model store.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from service.model_repository import ModelRecord


def tiny_record(store_home: Path, name: str) -> ModelRecord:
    folder = Path(store_home) / "models" / name
    version = (folder / "latest").read_text().strip()
    path = folder / version
    info = yaml.safe_load((path / "model.yaml").read_text())
    return ModelRecord(
        name=name,
        tag=f"{name}:{version}",
        task=info["metadata"]["task"],
        path=path,
        source=info["metadata"].get("source", ""),
        metadata=info["metadata"],
    )
