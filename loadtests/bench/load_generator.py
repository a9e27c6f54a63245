"""A closed-loop load generator that costs the server as little CPU as possible.

`concurrency` asyncio tasks each send one request, wait for its answer, send the next, for a fixed
time: HTTP over keep-alive connections (aiohttp, bodies encoded once up front) or KServe v2
`ModelInfer` over one gRPC channel (grpc.aio with the service's own stubs, no tritonclient
layers). It runs as its own process (`run_load` starts it) so that its CPU time is measured
apart from the server's and the suite's, and reported next to the throughput it produced.

    python -m loadtests.bench.load_generator --target http://127.0.0.1:3000 --route /classify \
        --texts texts.json --concurrency 16 --seconds 8
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
# Error messages seen (the first few are reported with the counts).
first_error: list[str] = []


# The encoder task routes' request shapes (`suite.task_lines`): texts per rerank query,
# candidate labels per zero-shot sequence, sentences per similarity source.
RERANK_TEXTS = 8
ZERO_SHOT_LABELS = ("politics", "sports", "technology", "entertainment")
ZERO_SHOT_TEMPLATE = "This example is {}."  # the pipeline's default hypothesis template
SIMILARITY_SENTENCES = 8
MASK = "[MASK]"  # the bert-base-uncased vocabulary's mask token


def _following(texts: list[str], i: int, n: int) -> list[str]:
    return [texts[(i + 1 + k) % len(texts)] for k in range(n)]


def with_mask(text: str) -> str:
    """The sentence with its middle word replaced by the one mask token."""
    words = text.split()
    words[len(words) // 2] = MASK
    return " ".join(words)


def task_payloads(route: str, texts: list[str]) -> list[tuple[dict[str, Any], list[Any]]]:
    """One request per text in the route's payload, with the model rows it computes: strings,
    or (first, second) pairs encoded as one row, as the serving task encodes them."""
    requests: list[tuple[dict[str, Any], list[Any]]] = []
    for i, text in enumerate(texts):
        question = " ".join(texts[(i + 1) % len(texts)].split()[:6]) + "?"
        if route == "/answer":
            # QA: a sentence as context, the next one's first words as the question.
            payload: dict[str, Any] = {"inputs": {"question": question, "context": text}}
            rows: list[Any] = [(question, text)]
        elif route == "/fill-mask":
            payload = {"inputs": with_mask(text)}
            rows = [payload["inputs"]]
        elif route == "/rerank":
            # TEI: a short query (the next sentence's first words), the texts that follow it.
            candidates = _following(texts, i, RERANK_TEXTS)
            payload = {"query": question, "texts": candidates}
            rows = [(question, t) for t in candidates]
        elif route == "/zero-shot":
            payload = {"inputs": text, "parameters": {"candidate_labels": list(ZERO_SHOT_LABELS)}}
            rows = [(text, ZERO_SHOT_TEMPLATE.format(label)) for label in ZERO_SHOT_LABELS]
        elif route == "/similarity":
            sentences = _following(texts, i, SIMILARITY_SENTENCES)
            payload = {"inputs": {"source_sentence": text, "sentences": sentences}}
            rows = [text, *sentences]
        else:
            payload = {"inputs": text}
            rows = [text]
        requests.append((payload, rows))
    return requests


def http_bodies(route: str, texts: list[str], model: str | None) -> list[bytes]:
    """One request body per text, in the route's Hugging Face (or TEI) payload."""
    bodies = []
    for payload, _ in task_payloads(route, texts):
        if model:
            payload["model"] = model
        bodies.append(json.dumps(payload).encode())
    return bodies


async def _http_loop(
    target: str, route: str, bodies: list[bytes], concurrency: int, seconds: float
) -> tuple[list[float], int, float]:
    import aiohttp

    latencies: list[float] = []
    errors = 0
    headers = {"content-type": "application/json"}
    url = target.rstrip("/") + route
    counter = iter(range(10**12))
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        deadline = time.perf_counter() + seconds

        async def worker() -> None:
            nonlocal errors
            while time.perf_counter() < deadline:
                body = bodies[next(counter) % len(bodies)]
                start = time.perf_counter()
                async with session.post(url, data=body, headers=headers) as response:
                    await response.read()
                    if response.status != 200:
                        errors += 1
                        first_error.append(f"HTTP {response.status}")
                        continue
                latencies.append(time.perf_counter() - start)

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return latencies, errors, time.perf_counter() - started


async def _grpc_loop(
    target: str, model: str, texts: list[str], concurrency: int, seconds: float
) -> tuple[list[float], int, float]:
    import grpc

    sys.path.insert(0, str(ROOT))
    from service.kserve.generated import grpc_predict_v2_pb2 as pb
    from service.kserve.generated import grpc_predict_v2_pb2_grpc as pb_grpc

    requests = []
    for text in texts:
        request = pb.ModelInferRequest(model_name=model)
        tensor = request.inputs.add(name="text", datatype="BYTES", shape=[1])
        tensor.contents.bytes_contents.append(text.encode())
        requests.append(request)
    latencies: list[float] = []
    errors = 0
    counter = iter(range(10**12))
    async with grpc.aio.insecure_channel(target) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        deadline = time.perf_counter() + seconds

        async def worker() -> None:
            nonlocal errors
            while time.perf_counter() < deadline:
                request = requests[next(counter) % len(requests)]
                start = time.perf_counter()
                try:
                    await stub.ModelInfer(request)
                except grpc.aio.AioRpcError as exc:
                    errors += 1
                    first_error.append(f"{exc.code().name}: {exc.details()}"[:300])
                    continue
                latencies.append(time.perf_counter() - start)

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return latencies, errors, time.perf_counter() - started


def measure(
    protocol: str,
    target: str,
    route: str,
    model: str | None,
    texts: list[str],
    concurrency: int,
    seconds: float,
) -> dict[str, Any]:
    """One closed-loop run: completed requests, their latencies, errors and the CPU it cost
    (the loop's own, imports and start-up excluded)."""
    import aiohttp  # noqa: F401  (imported before the CPU clock starts)
    import grpc  # noqa: F401

    cpu_before = time.process_time()
    if protocol == "http":
        bodies = http_bodies(route, texts, model)
        run = _http_loop(target, route, bodies, concurrency, seconds)
    else:
        assert model, "gRPC needs a model name"
        run = _grpc_loop(target, model, texts, concurrency, seconds)
    latencies, errors, wall = asyncio.run(run)
    return {
        "requests": len(latencies),
        "errors": errors,
        "wall_s": wall,
        "throughput": len(latencies) / wall,
        "latencies_ms": [round(x * 1000, 3) for x in latencies],
        "client_cpu_s": time.process_time() - cpu_before,
        "error_examples": sorted(set(first_error))[:5],
    }


def run_load(
    protocol: str,
    target: str,
    texts_file: Path,
    concurrency: int,
    seconds: float,
    route: str = "/classify",
    model: str | None = None,
    prefix: list[str] | None = None,
) -> dict[str, Any]:
    """Run the generator in its own process; its CPU time includes start-up (imports).
    `prefix`: what its command starts with (`nsenter --net=...` to reach a server in a network
    namespace of its own)."""
    command = [
        *(prefix or []),
        sys.executable,
        "-m",
        "loadtests.bench.load_generator",
        "--protocol",
        protocol,
        "--target",
        target,
        "--route",
        route,
        "--texts",
        str(texts_file),
        "--concurrency",
        str(concurrency),
        "--seconds",
        str(seconds),
    ]
    if model:
        command += ["--model", model]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run(
        command,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=seconds + 120,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise RuntimeError(f"load generator failed:\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout)
    # The whole process, imports included; `client_cpu_s` is the load loop alone.
    result["client_process_cpu_s"] = (after.ru_utime - before.ru_utime) + (
        after.ru_stime - before.ru_stime
    )
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--protocol", choices=("http", "grpc"), default="http")
    parser.add_argument("--target", required=True, help="http://host:port or host:port (gRPC)")
    parser.add_argument("--route", default="/classify")
    parser.add_argument("--model", default=None)
    parser.add_argument("--texts", type=Path, required=True, help="a JSON list of sentences")
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=8.0)
    args = parser.parse_args(argv)
    texts = json.loads(args.texts.read_text())
    result = measure(
        args.protocol, args.target, args.route, args.model, texts, args.concurrency, args.seconds
    )
    json.dump(result, sys.stdout)


if __name__ == "__main__":
    main()
