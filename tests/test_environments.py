"""Installed environments: one lock for every one (exact versions with hashes, the locks agree)
and the export side saying where it is not locked.

`make lock` writes requirements/dev.txt (dev/test/export, Python 3.11, Linux x86-64), then
requirements/serving.txt and requirements/serving-tests.txt (every supported Python) constrained
by it; `make install` and `make test-serving` install them with `--require-hashes --no-deps`.
"""

from __future__ import annotations

import tomllib
from importlib.metadata import PackageNotFoundError, version

import pytest
from packaging.requirements import Requirement

from tests.locks import (
    DEV_LOCK,
    EXPORT_LOCK,
    ROOT,
    SERVING_LOCK,
    SERVING_TESTS_LOCK,
    canonical,
    pins,
    read_lock,
)

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
# The environment the dev lock is for (Makefile `lock`: --python-version 3.11, Linux x86-64).
DEV_ENVIRONMENT = {
    "python_version": "3.11",
    "python_full_version": "3.11.7",
    "sys_platform": "linux",
    "platform_system": "Linux",
    "platform_machine": "x86_64",
    "os_name": "posix",
    "implementation_name": "cpython",
    "platform_python_implementation": "CPython",
}
SUPPORTED_PYTHONS = ("3.11", "3.12", "3.13")


@pytest.mark.parametrize(
    "lock", [DEV_LOCK, EXPORT_LOCK, SERVING_LOCK, SERVING_TESTS_LOCK], ids=lambda p: p.name
)
def test_every_locked_package_is_pinned_exactly_with_hashes(lock):
    entries = read_lock(lock)
    assert entries
    for entry in entries:
        (spec,) = entry.requirement.specifier
        assert spec.operator == "==", entry.requirement
        assert entry.hashes and all(h.startswith("sha256:") for h in entry.hashes), entry.name


def test_every_lock_holds_the_dev_locks_versions_on_python_3_11():
    dev = pins(DEV_LOCK, DEV_ENVIRONMENT)
    for lock in (EXPORT_LOCK, SERVING_LOCK, SERVING_TESTS_LOCK):
        locked = pins(lock, DEV_ENVIRONMENT)
        assert locked.items() <= dev.items(), {
            n: (v, dev.get(n)) for n, v in locked.items() if dev.get(n) != v
        }


@pytest.mark.parametrize("python", SUPPORTED_PYTHONS)
def test_serving_lock_is_a_subset_of_the_serving_tests_lock(python):
    environment = {
        **DEV_ENVIRONMENT,
        "python_version": python,
        "python_full_version": f"{python}.0",
    }
    assert pins(SERVING_LOCK, environment).items() <= pins(SERVING_TESTS_LOCK, environment).items()


def _declared(*groups: str) -> list[Requirement]:
    out = [Requirement(r) for r in PYPROJECT["project"]["dependencies"]]
    for group in groups:
        out += [Requirement(r) for r in PYPROJECT["project"]["optional-dependencies"][group]]
    return out


@pytest.mark.parametrize(
    ("lock", "groups"),
    [
        (SERVING_LOCK, ()),
        (SERVING_TESTS_LOCK, ("dev",)),
        (EXPORT_LOCK, ("export", "local")),
        (DEV_LOCK, ("export", "dev", "local")),
    ],
    ids=["serving", "serving-tests", "export", "dev"],
)
def test_locks_satisfy_what_pyproject_declares(lock, groups):
    locked = pins(lock, DEV_ENVIRONMENT)
    for requirement in _declared(*groups):
        name = canonical(requirement.name)
        assert name in locked, f"{name} is declared in pyproject.toml but not in {lock.name}"
        assert requirement.specifier.contains(locked[name], prereleases=True), (
            name,
            locked[name],
            str(requirement.specifier),
        )


def test_serving_lock_holds_no_export_side_package():
    export_side = {
        "torch",
        "transformers",
        "optimum",
        "optimum-onnx",
        "onnx",
        "sentence-transformers",
        "onnxruntime-genai",
        "accelerate",
        "gguf",
    }
    for lock in (SERVING_LOCK, SERVING_TESTS_LOCK):
        assert not {e.name for e in read_lock(lock)} & export_side, lock.name


def test_this_environment_is_exactly_its_lock(request):
    """What `make install` (or `make test-serving`) installed is the lock, version for version:
    a fresh resolve of any package would show here."""
    lock = SERVING_TESTS_LOCK if request.config.getoption("--serving-only") else DEV_LOCK
    wrong = {}
    for name, locked in pins(lock).items():
        try:
            installed = version(name)
        except PackageNotFoundError:
            installed = None
        if installed != locked:
            wrong[name] = (locked, installed)
    assert not wrong, f"installed differs from {lock.name} (locked, installed): {wrong}"


def test_models_cli_says_when_the_export_side_is_missing(monkeypatch, capsys):
    import importlib.util

    from models import cli

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "torch" else real(name, *a)
    )
    assert cli.main(["build", "--profile", "tiny"]) == 2
    error = capsys.readouterr().err
    assert "torch" in error.split("not installed")[0] and "requirements/export.txt" in error


def test_models_cli_warns_on_a_python_the_export_side_is_not_locked_for(monkeypatch, capsys):
    from models import cli

    monkeypatch.setattr(cli, "EXPORT_PYTHON", (3, 10))
    if not cli._export_side_ready():  # the serving environment: no export side to warn about
        assert "not installed" in capsys.readouterr().err
        return
    assert "locked and tested on Python 3.10 only" in capsys.readouterr().err
