"""The benchmark's one-time builds run side by side: a fresh clone's first `make bench-quick`
exports five models and builds the tiny store, each one busy core, on a 2-core machine."""

from __future__ import annotations

import subprocess
import sys

import pytest

from loadtests.bench.bench_models import run_exports
from loadtests.server_process import start_store_build

# Writes its start and end time to the file it is given, sleeping between; exits with argv[2].
STEP = (
    "import pathlib, sys, time; start = time.time(); time.sleep(0.5); "
    "pathlib.Path(sys.argv[1]).write_text(f'{start} {time.time()}'); sys.exit(int(sys.argv[2]))"
)


def _command(path, code=0):
    return [sys.executable, "-c", STEP, str(path), str(code)]


def _most_at_once(spans):
    edges = sorted([(start, 1) for start, _ in spans] + [(end, -1) for _, end in spans])
    running = most = 0
    for _, step in edges:
        running += step
        most = max(most, running)
    return most


def test_exports_run_two_at_a_time(tmp_path):
    commands = {f"m{i}": _command(tmp_path / f"m{i}") for i in range(4)}
    run_exports(commands, env={}, jobs=2)
    spans = [tuple(map(float, (tmp_path / name).read_text().split())) for name in commands]
    assert _most_at_once(spans) == 2


def test_a_failed_export_is_raised_after_the_others_end(tmp_path):
    commands = {
        "fails": _command(tmp_path / "fails", code=3),
        "ok1": _command(tmp_path / "ok1"),
        "ok2": _command(tmp_path / "ok2"),
    }
    with pytest.raises(subprocess.CalledProcessError) as failed:
        run_exports(commands, env={}, jobs=2)
    assert failed.value.returncode == 3
    assert (tmp_path / "ok1").exists() and (tmp_path / "ok2").exists()


def test_a_background_store_build_that_fails_says_why(tmp_path):
    build = start_store_build(tmp_path / "home", "no-such-profile", tmp_path / "build.log")
    with pytest.raises(RuntimeError, match=r"models build failed \(2\)") as failed:
        build.wait(timeout=120)
    # What the build said (an unknown profile; on the serving side, that it cannot export).
    said = (tmp_path / "build.log").read_text().strip()
    assert said and said in str(failed.value)
