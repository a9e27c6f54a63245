"""The bench's peers (issue #21) are wired up: every peer has a server module that parses, a
lock with hashes that pins the serving lock's onnxruntime and tokenizers, a contender row, a
place in `make lock`, and the goals read their keys. Nothing is installed or started here."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from loadtests.bench import contenders, peer_servers, suite

ROOT = Path(__file__).resolve().parents[1]


def pins(lock: Path) -> dict[str, str]:
    found = re.findall(r"^([A-Za-z0-9_.\-\[\]]+)==([^\s\\]+)", lock.read_text(), re.M)
    return {name.lower(): version for name, version in found}


def test_every_peer_has_a_module_a_hashed_lock_and_a_contender():
    serving = pins(ROOT / "requirements" / "serving.txt")
    makefile = (ROOT / "Makefile").read_text()
    assert {p.name for p in peer_servers.PEERS} == set(contenders.PEERS)
    for peer in peer_servers.PEERS:
        module = peer_servers.PEERS_DIR / peer.module
        ast.parse(module.read_text(), filename=str(module))
        assert (peer.lock.with_suffix(".in")).exists()
        text = peer.lock.read_text()
        requirements = re.split(r"\n(?=\S)", text.split("\n", 2)[2])
        pinned = [r for r in requirements if re.match(r"^[A-Za-z0-9]", r)]
        assert pinned and all("--hash=sha256:" in r for r in pinned), peer.name
        locked = pins(peer.lock)
        for package in ("onnxruntime", "tokenizers"):
            assert locked[package] == serving[package], (peer.name, package)
        assert f"requirements/peers/{peer.name}" in makefile or re.search(
            rf"PEERS_SERVING_CONSTRAINED :=.*\b{peer.name}\b", makefile
        ), peer.name
        key = contenders.PEERS[peer.name].key(model="m", c=16)
        assert key == f"m/peer-{peer.name}/c16"
    assert contenders.FASTAPI_ORT not in contenders.BATCHING_PEERS
    assert len(contenders.BATCHING_PEERS) == 4


def test_peer_goals_divide_ours_by_the_best_batching_peer_and_fastapi_ort():
    fp32 = suite.CLASSIFIER.name
    samples = suite.Samples()

    def point(key: str, throughput: float, p50: float) -> None:
        samples.add(
            key, {"throughput": throughput, "p50_ms": p50, "server_cpu_s": 1.0, "requests": 10}
        )

    point(contenders.OURS_HTTP.key(model=fp32, c=16), 60.0, 40.0)
    point(contenders.OURS_HTTP.key(model=fp32, c=1), 1.0, 30.5)
    point(contenders.OURS_GRPC.key(model=fp32, c=1), 1.0, 31.5)
    for name, rate in (("bentoml-batchable", 40.0), ("litserve", 36.0), ("ray-serve", 30.0)):
        point(contenders.PEERS[name].key(model=fp32, c=16), rate, 1.0)
    # PyTriton not measured (it did not start): the best is the fastest of those measured.
    point(contenders.FASTAPI_ORT.key(model=fp32, c=16), 50.0, 300.0)
    point(contenders.FASTAPI_ORT.key(model=fp32, c=1), 30.0, 30.0)
    checks = suite.goals(samples, False, [])
    assert checks["classification fp32 http c=16 / best batching peer c=16"] == (1.5, 1.5, True)
    assert checks["classification fp32 http c=16 / FastAPI+ORT (no batching) c=16"] == (
        1.2,
        1.1,
        True,
    )
    assert checks["classification fp32 http c=1 p50 - FastAPI+ORT c=1 p50 (ms)"] == (
        0.5,
        1.0,
        True,
    )
    assert checks["classification fp32 grpc c=1 p50 - FastAPI+ORT c=1 p50 (ms)"] == (
        1.5,
        1.0,
        False,
    )


def test_int8_goal_is_the_served_ratio_over_the_in_process_one():
    fp32, int8 = suite.CLASSIFIER.name, suite.CLASSIFIER_INT8.name
    samples = suite.Samples()
    for name, served, in_process in ((fp32, 50.0, 60.0), (int8, 100.0, 150.0)):
        samples.add(
            contenders.OURS_HTTP.key(model=name, c=16),
            {"throughput": served, "p50_ms": 1.0, "server_cpu_s": 1.0, "requests": 10},
        )
        samples.add(contenders.ORT.key(model=name, batch=32), in_process)
    checks = suite.goals(samples, False, [])
    # served 2.0× fp32 against 2.5× in process: 0.8 of the gain kept, goal 0.9.
    name = "classification int8/fp32 served (http c=16) / int8/fp32 in process (sorted b32)"
    assert checks[name] == (0.8, 0.9, False)
