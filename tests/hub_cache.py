"""A Hugging Face hub cache written by hand, in huggingface_hub's own layout, so that the `hub:`
sources build offline from tiny stand-ins (tests/test_hub_profile.py).

    $HF_HOME/hub/models--{org}--{name}/
        blobs/{etag}                       the files' contents, named as huggingface_hub names
                                           them: sha256 for LFS files (weights, SentencePiece
                                           models), the git blob sha1 for the rest
        snapshots/{revision}/{path}        relative symlinks to ../../blobs/{etag}
        refs/main                          the revision

`HUB_STAND_INS` says which tiny checkpoint (`models/tiny.py`) stands in for each hub id of the
catalog: one row per hub id. A `hub` entry without a row fails `stand_in` with a message saying
what to add, so a new entry cannot be silently left untested.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

# Hub id -> the tiny builder (models/tiny.py BUILDERS) of the same architecture and file layout,
# with ":bin" where the repository at the pinned revision has PyTorch weights only
# (`pytorch_model.bin`, no safetensors: HubSource.fetch's fallback download).
HUB_STAND_INS: dict[str, str] = {
    "distilbert/distilbert-base-uncased-finetuned-sst-2-english": "distilbert-classifier",
    "distilbert/distilbert-base-cased-distilled-squad": "distilbert-qa",
    "distilbert/distilbert-base-uncased": "distilbert-fill-mask",
    "cross-encoder/ms-marco-MiniLM-L6-v2": "bert-cross-encoder",
    "facebook/bart-large-mnli": "bart-nli",
    "dslim/bert-base-NER": "bert-ner",
    "HuggingFaceTB/SmolLM2-135M-Instruct": "llama-chat",
    "Helsinki-NLP/opus-mt-en-fr": "marian:bin",
    "google-t5/t5-small": "t5",
    "sentence-transformers/all-MiniLM-L6-v2": "bert-embedder",
}

# Stored with Git LFS on the hub (the hub's default .gitattributes), so etag = sha256.
LFS_SUFFIXES = (".safetensors", ".bin", ".model", ".spm", ".onnx", ".h5", ".msgpack", ".ot")
LFS_MIN_BYTES = 10 * 1024 * 1024  # the hub stores larger files with LFS whatever their type
GITATTRIBUTES = "".join(
    f"*{suffix} filter=lfs diff=lfs merge=lfs -text\n" for suffix in LFS_SUFFIXES
)


class MissingStandIn(LookupError):
    """A catalog `hub` entry has no tiny stand-in in `HUB_STAND_INS`."""


def stand_in(repo_id: str, entry: str = "") -> str:
    """The tiny checkpoint kind that stands in for `repo_id`, or MissingStandIn saying so."""
    try:
        return HUB_STAND_INS[repo_id].partition(":")[0]
    except KeyError:
        from models.tiny import BUILDERS

        raise MissingStandIn(
            f"hub entry {entry or repo_id!r} ({repo_id}) has no offline stand-in: add a row "
            f"'{repo_id}': '<kind>' to HUB_STAND_INS in tests/hub_cache.py, with a tiny builder "
            f"of its architecture (models/tiny.py; known kinds: {', '.join(sorted(BUILDERS))})"
        ) from None


def bin_weights(repo_id: str) -> bool:
    """Whether the stand-in of `repo_id` carries `pytorch_model.bin` instead of safetensors."""
    return HUB_STAND_INS.get(repo_id, "").partition(":")[2] == "bin"


def as_pytorch_bin(checkpoint: Path, out: Path) -> Path:
    """A copy of `checkpoint` whose weights are `pytorch_model.bin`, as `save_pretrained` writes
    them with `safe_serialization=False` (older hub repositories have no safetensors)."""
    import transformers

    if (out / "pytorch_model.bin").is_file():
        return out
    config = transformers.AutoConfig.from_pretrained(checkpoint)
    model_class = getattr(transformers, config.architectures[0])
    shutil.copytree(checkpoint, out, ignore=shutil.ignore_patterns("*.safetensors"))
    model_class.from_pretrained(checkpoint).save_pretrained(out, safe_serialization=False)
    return out


def hub_cache_dir(hf_home: Path) -> Path:
    """Where huggingface_hub keeps repositories under `HF_HOME` (`HF_HUB_CACHE`'s default)."""
    return Path(hf_home) / "hub"


def repo_folder(hf_home: Path, repo_id: str) -> Path:
    return hub_cache_dir(hf_home) / ("models--" + repo_id.replace("/", "--"))


def etag(path: Path) -> str:
    """The name huggingface_hub gives the blob of `path`: the LFS sha256 or the git blob sha1."""
    data = path.read_bytes()
    if path.suffix in LFS_SUFFIXES or len(data) >= LFS_MIN_BYTES:
        return hashlib.sha256(data).hexdigest()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def write_snapshot(
    hf_home: Path,
    repo_id: str,
    revision: str,
    files: Path,
    branch: str | None = "main",
    allow_patterns: list[str] | None = None,
) -> Path:
    """Cache the files under `files` (a checkpoint folder) as `repo_id` at commit `revision`;
    `branch` (if any) points at it. Returns the snapshot folder. Empty folders are left out, as
    git has none; a README.md and .gitattributes are added as every hub repository has them.
    `allow_patterns`: keep only what `snapshot_download(allow_patterns=...)` would have
    downloaded (huggingface_hub's own filter), as the cache holds after a real download."""
    from huggingface_hub.utils import filter_repo_objects

    repo = repo_folder(hf_home, repo_id)
    snapshot = repo / "snapshots" / revision
    staged = {
        path.relative_to(files).as_posix(): path
        for path in sorted(Path(files).rglob("*"))
        if path.is_file()
    }
    extra = repo / "staging"
    extra.mkdir(parents=True, exist_ok=True)
    (extra / "README.md").write_text(
        f"# {repo_id} (offline test stand-in)\n\nTiny random weights written by the tests.\n"
    )
    (extra / ".gitattributes").write_text(GITATTRIBUTES)
    staged.setdefault("README.md", extra / "README.md")
    staged.setdefault(".gitattributes", extra / ".gitattributes")
    if allow_patterns is not None:
        kept = set(filter_repo_objects(staged, allow_patterns=allow_patterns))
        staged = {name: path for name, path in staged.items() if name in kept}
    for relative, source in staged.items():
        blob = repo / "blobs" / etag(source)
        blob.parent.mkdir(parents=True, exist_ok=True)
        if not blob.exists():
            shutil.copyfile(source, blob)
        link = snapshot / relative
        link.parent.mkdir(parents=True, exist_ok=True)
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(os.path.relpath(blob, link.parent))
    shutil.rmtree(extra)
    if branch:
        (repo / "refs").mkdir(parents=True, exist_ok=True)
        (repo / "refs" / branch).write_text(revision)
    return snapshot
