"""Smoke load: every Locust user class against the real tiny server with the real SLO gates
(`python -m loadtests run`, a subprocess: Locust cannot be imported into pytest's process), and
proof that a gate fails, naming itself and by how much, when it cannot be met."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SLO = ROOT / "loadtests" / "slo.yaml"
HTTP_NAMES = {
    "/classify",
    "/embed",
    "/answer",
    "/fill-mask",
    "/rerank",
    "/zero-shot",
    "/ner",
    "/generate",
    "/generate stream",
    "/generate stream TTFT",
    "/translate",
    "/summarize",
    "/text2text",
    "/v1/completions",
    "/v1/chat/completions stream",
    "/v1/chat/completions stream TTFT",
}
GRPC_NAME = "ModelInfer text-classification"


def _grpc_answers(address: str) -> bool:
    try:
        import tritonclient.grpc as grpcclient
    except ImportError:
        return False
    client = grpcclient.InferenceServerClient(url=address)
    try:
        return bool(client.is_server_live(client_timeout=5.0))
    except Exception:  # noqa: BLE001 - no gRPC endpoint (yet)
        return False
    finally:
        client.close()


def _loadtest(*args: str, timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "loadtests", "run", "--quiet", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="module")
def grpc_address(live_server) -> str | None:
    return live_server.grpc_address if _grpc_answers(live_server.grpc_address) else None


def test_smoke_load_meets_the_slo_gates(live_server, grpc_address, tmp_path):
    out = tmp_path / "smoke"
    # 24 users at 0.5 req/s each: every user class (14) gets one user and the rest go by
    # weight; ~12 req/s offered.
    args = [
        "--host",
        live_server.url,
        "--shape",
        "steady",
        "--duration",
        "15",
        "--users",
        "24",
        "--rps-per-user",
        "0.5",
        "--out",
        str(out),
        "--slo",
        str(SLO),
    ]
    if grpc_address:
        args += ["--grpc", grpc_address]
    result = _loadtest(*args, timeout=120)
    report = out / "report.json"
    assert result.returncode == 0, (
        f"exit {result.returncode}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}\n"
        + ((out / "summary.md").read_text() if (out / "summary.md").exists() else "")
    )

    for name in (
        "locust_stats.csv",
        "locust_stats_history.csv",
        "locust_failures.csv",
        "locust.html",
        "throughput.png",
        "latency.png",
        "errors.png",
        "summary.md",
    ):
        path = out / name
        assert path.exists() and path.stat().st_size > 0, name
    for png in out.glob("*.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    data = json.loads(report.read_text())
    expected = HTTP_NAMES | ({GRPC_NAME} if grpc_address else set())
    assert expected <= set(data["tasks"]), f"missing: {expected - set(data['tasks'])}"
    for name in expected:
        assert data["tasks"][name]["requests"] > 0, name
    assert data["passed"] and data["gates"]
    assert all(g["passed"] for g in data["gates"])
    # The gates cover every request name the run made (a new user class needs its SLO).
    gated = {g["subject"] for g in data["gates"] if g["kind"] == "p95_ms" and not g["skipped"]}
    assert expected <= gated, f"no p95 gate for {expected - gated}"
    summary = (out / "summary.md").read_text()
    assert "all SLO gates met" in summary and "![latency](latency.png)" in summary


def test_an_impossible_slo_fails_and_says_by_how_much(live_server, tmp_path):
    slo = tmp_path / "impossible.yaml"
    slo.write_text(
        "version: 0\n"
        "aggregate: {min_rps: 100000}\n"
        "tasks:\n"
        "  /classify: {p95_ms: 0.001, max_error_rate: 0.01}\n"
    )
    out = tmp_path / "impossible"
    result = _loadtest(
        "--host",
        live_server.url,
        "--only",
        "ClassifyUser",
        "--duration",
        "5",
        "--users",
        "2",
        "--rps-per-user",
        "2",
        "--out",
        str(out),
        "--slo",
        str(slo),
        timeout=60,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "SLO gate FAILED: /classify: p95" in result.stdout
    assert "limit 0.001 ms (over by" in result.stdout
    assert "SLO gate FAILED: all requests: throughput" in result.stdout
    assert "short by" in result.stdout
    assert "/classify: error rate" not in result.stdout  # the gates that hold stay quiet
    data = json.loads((out / "report.json").read_text())
    failed = {(g["subject"], g["kind"]) for g in data["gates"] if not g["passed"]}
    assert failed == {("/classify", "p95_ms"), ("all requests", "min_rps")}
    assert "2 SLO gate(s) failed" in (out / "summary.md").read_text()
