"""The quick benchmark (`make bench-quick`) in CI: served speed must stay near the hardware limit.

The real all-MiniLM-L6-v2 served by the real service over HTTP and gRPC, measured against plain
ONNX Runtime in process on the same graph, plus the tiny profile's cold start. The floors leave
room for a busy machine but not for a regression such as spinning ORT threads or per-request
overhead (see BENCHMARKS.md for the full suite and the goals of issue #9). One line per encoder
task (fill-mask, rerank, zero-shot, similarity, NER):
its route's payload over HTTP at c=16 against the same model rows in process.
"""

from __future__ import annotations

import json

from loadtests.bench import suite
from models.cpu import cpu_class, cpu_flags
from service.runtime.encoder_batches import length_sorted_groups


def test_quick_benchmark_keeps_served_speed_near_in_process(tiny_store, tmp_path):
    got = suite.run(True, tmp_path, tiny_home=tiny_store)
    report = (tmp_path / "BENCHMARKS.md").read_text()
    raw = json.loads((tmp_path / "docs" / "bench" / "results.json").read_text())
    assert (tmp_path / "docs" / "bench" / "feature-extraction-throughput.png").stat().st_size > 0
    assert "## Goals" in report and "HTTP c=16" in report and "GRPC c=16" in report
    # The CPU class and its flags, which decide which of BENCHMARKS.md's tables a run belongs to.
    assert raw["machine"]["cpu_class"] == cpu_class(cpu_flags())
    assert f"class {raw['machine']['cpu_class']} (flags: " in report
    samples = raw["samples"]
    for key in (
        "bench-all-minilm-l6-v2/http/c1",
        "bench-all-minilm-l6-v2/http/c16",
        "bench-all-minilm-l6-v2/grpc/c16",
    ):
        assert all(run["requests"] > 0 and run["errors"] == 0 for run in samples[key]), key
    # Every encoder task line ran with no refused request (a payload the route rejects counts
    # as an error).
    expected = {"fill-mask", "rerank", "zero-shot", "similarity", "ner"}
    assert set(raw["task_lines"]) == expected
    assert "## Encoder tasks" in report
    for line in expected:
        runs = samples[f"line/{line}/http/c16"]
        assert all(run["requests"] > 0 and run["errors"] == 0 for run in runs), line
    missed = {name: (value, goal) for name, (value, goal, ok) in got["checks"].items() if not ok}
    assert not missed, f"benchmark floors missed: {missed}\n{report}"


def test_mixed_lengths_are_cut_where_padding_outweighs_an_extra_call():
    lengths = [60, 12, 58, 11, 59, 10, 13, 57]
    groups = length_sorted_groups(lengths, max_batch=32, max_tokens=4096, call_overhead_tokens=16)
    assert [sorted(lengths[i] for i in g) for g in groups] == [[57, 58, 59, 60], [10, 11, 12, 13]]
    # One call for everything when calls are dear; one per input when they are free.
    assert len(length_sorted_groups(lengths, 32, 4096, call_overhead_tokens=10**6)) == 1
    free = length_sorted_groups(lengths, 32, 4096, call_overhead_tokens=0)
    assert free == [[i] for i in sorted(range(len(lengths)), key=lambda i: -lengths[i])]
