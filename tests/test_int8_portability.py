"""int8 that means the same on every x86-64 CPU: the parity rule, the preset, the load warning.

The rule and the warning are checked on arrays and metadata (no export); the premise they rest
on, that ONNX Runtime's u8s8 kernels saturate full-range s8 weights on AVX2-only CPUs and are
exact with 7-bit ones, is checked under `qemu-x86_64 -cpu Haswell` where QEMU is installed.
Measured figures: models/results/int8-portability.md.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from models.cpu import NO_SATURATION_FLAGS, cpu_flags, describe_cpu, saturation_hazard
from models.optimize import quantization_target
from models.parity import TOLERANCES, argmax_figures, violation
from service.model_repository import ModelRecord, portability_warnings

INT8 = TOLERANCES["int8"]
ROWS = 129  # what parity compares for a classifier at int8 (one sentence, then 128)
# Metadata of an int8 build made before every x86 export used 7-bit weights, on a VNNI CPU.
OLD_VNNI_BUILD = {
    "dtype": "int8",
    "mode": "dynamic",
    "target": "avx512_vnni",
    "per_channel": True,
    "reduce_range": False,
    "graphs": ["model.onnx"],
}


def logits(rows: int = ROWS, labels: int = 2, seed: int = 0) -> np.ndarray:
    """fp32-like logits: a spread of margins, a fifth of the rows nearly tied."""
    rng = np.random.default_rng(seed)
    values = rng.normal(0.0, 2.0, (rows, labels))
    tied = rng.random(rows) < 0.2
    values[tied, 1] = values[tied, 0] + rng.normal(0.0, 0.05, tied.sum())
    return values.astype(np.float32)


def judged(reference: np.ndarray, actual: np.ndarray) -> tuple[dict, str | None]:
    figures = argmax_figures(reference, actual, INT8)
    return figures, violation(figures, INT8)


def test_int8_noise_on_near_ties_passes_though_plain_agreement_is_low():
    reference = logits()
    rng = np.random.default_rng(1)
    # int8-sized noise: every near-tie becomes a coin toss, clear decisions survive.
    actual = reference + rng.normal(0.0, 0.3, reference.shape).astype(np.float32)
    figures, failure = judged(reference, actual)
    assert failure is None, failure
    assert figures["agreement"] < 0.95  # the old all-rows count saw the coin tosses
    assert figures["confident_rows"] >= 0.5 * ROWS
    assert figures["confident_agreement"] == 1.0


def test_noise_a_fifth_of_the_scale_is_refused():
    reference = logits()
    rng = np.random.default_rng(2)
    actual = reference + rng.normal(0.0, 1.7, reference.shape).astype(np.float32)
    figures, failure = judged(reference, actual)
    assert figures["max_abs_diff"] < INT8.limit(figures["scale"])  # not what refuses it
    assert figures["decision_error_median"] > INT8.max_decision_error * figures["scale"]
    assert failure and "moves decisions by a median" in failure


def test_a_model_whose_decisions_are_all_near_ties_is_refused():
    """int8-sized noise, but hardly any row has a margin it cannot flip: nothing to judge by."""
    rng = np.random.default_rng(3)
    reference = rng.normal(0.0, 0.05, (ROWS, 2)).astype(np.float32)
    reference[:5] *= 200  # a few large outputs set the scale
    actual = reference + rng.normal(0.0, 0.2, reference.shape).astype(np.float32)
    figures, failure = judged(reference, actual)
    assert figures["decision_error_median"] <= INT8.max_decision_error * figures["scale"]
    assert figures["confident_rows"] < INT8.min_confident * ROWS
    assert failure and "fp32 top-2 margin above 2x the median decision error" in failure


def test_flipped_confident_decisions_are_refused():
    reference = logits()
    actual = reference.copy()
    margin = np.abs(reference[:, 0] - reference[:, 1])
    clear = np.flatnonzero((margin > 1.0) & (margin < 3.0))[:20]
    winner = reference[clear].argmax(-1)
    # 20 clear decisions flip (the winner drops just below the other label), the rest exact.
    actual[clear, winner] = reference[clear, 1 - winner] - 0.1
    figures, failure = judged(reference, actual)
    assert figures["max_abs_diff"] < INT8.limit(figures["scale"])
    assert figures["decision_error_median"] == 0.0
    assert figures["confident_agreement"] < INT8.min_confident_agreement
    assert failure and "on the" in failure and "confident rows" in failure


def test_identical_outputs_pass():
    reference = logits(labels=3)
    figures, failure = judged(reference, reference.copy())
    assert failure is None
    assert figures["agreement"] == 1.0 and figures["decision_error_median"] == 0.0


@pytest.fixture(scope="module")
def int8_classifier(tiny_exported, tmp_path_factory) -> Path:
    """The tiny DistilBERT classifier as the catalog's int8 entry builds it (O2, then int8)."""
    from models.optimize import optimize_graphs, quantize_graphs

    folder = tmp_path_factory.mktemp("int8") / "classifier"
    shutil.copytree(tiny_exported("distilbert-classifier"), folder)
    optimize_graphs(folder, "text-classification", "O2")
    quantize_graphs(folder, "text-classification")
    return folder


def test_the_int8_classifier_passes_and_every_breakage_of_it_is_refused(
    int8_classifier, tiny_checkpoint, tmp_path
):
    from models.int8_portability import BREAKAGES, break_int8_graph
    from models.parity import parity_report

    checkpoint = tiny_checkpoint("distilbert-classifier")
    report, failure = parity_report(
        checkpoint, int8_classifier, "text-classification", "O2", "int8"
    )
    assert failure is None, failure
    assert report["cpu"]["int8_flags"] == describe_cpu()["int8_flags"]
    for how in BREAKAGES:
        broken = break_int8_graph(int8_classifier, tmp_path / how, how)
        report, failure = parity_report(checkpoint, broken, "text-classification", "O2", "int8")
        assert failure and failure.startswith("parity failed (O2+int8): output 'logits'"), how


def test_every_x86_export_uses_seven_bit_weights_whatever_the_cpu():
    target = quantization_target("x86_64")
    assert (target.preset, target.reduce_range, target.weights_dtype) == ("avx512", True, "s8")
    assert quantization_target("aarch64").name == "arm64"
    described = target.describe()
    assert described["reduce_range"] is True and described["activations_dtype"] == "u8"


def test_cpu_description_names_the_int8_flags(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("model name\t: AMD EPYC 7B13\nflags\t\t: fpu sse2 avx avx2 fma bmi2\n")
    described = describe_cpu(cpuinfo)
    assert described["model"] == "AMD EPYC 7B13"
    assert described["int8_flags"] == ["avx2"]


@pytest.mark.parametrize(
    ("config", "flags", "machine", "warns"),
    [
        (OLD_VNNI_BUILD, {"avx2", "fma"}, "x86_64", True),
        (OLD_VNNI_BUILD, {"avx2", "avx512f", "avx512bw"}, "x86_64", True),  # AVX-512, no VNNI
        (OLD_VNNI_BUILD, {"avx2", "avx512f", "avx512_vnni"}, "x86_64", False),
        (OLD_VNNI_BUILD, {"avx2", "avx_vnni"}, "x86_64", False),
        (OLD_VNNI_BUILD, {"avx2", "amx_int8"}, "x86_64", False),
        (OLD_VNNI_BUILD, {"asimd"}, "aarch64", False),
        ({**OLD_VNNI_BUILD, "reduce_range": True}, {"avx2"}, "x86_64", False),
        ({**OLD_VNNI_BUILD, "weights_dtype": "u8"}, {"avx2"}, "x86_64", False),
        (quantization_target("x86_64").describe() | {"dtype": "int8"}, {"avx2"}, "x86_64", False),
        (None, {"avx2"}, "x86_64", False),
    ],
)
def test_saturation_hazard_only_for_full_range_s8_weights_without_vnni(
    config, flags, machine, warns
):
    hazard = saturation_hazard(config, flags, machine)
    assert bool(hazard) is warns, hazard
    if warns:
        assert "saturate" in hazard and "python -m models build" in hazard


def test_portability_warnings_name_the_model(monkeypatch):
    monkeypatch.setattr("platform.machine", lambda: "x86_64")
    old = ModelRecord(
        name="old",
        tag="old:1",
        task="text-classification",
        path=Path("."),
        metadata={"quantization_config": OLD_VNNI_BUILD},
    )
    new = ModelRecord(
        name="new",
        tag="new:1",
        task="text-classification",
        path=Path("."),
        metadata={
            "quantization_config": {**quantization_target("x86_64").describe(), "dtype": "int8"}
        },
    )
    assert portability_warnings([old, new], {"avx2"}) == [
        f"old:1: {saturation_hazard(OLD_VNNI_BUILD, {'avx2'}, 'x86_64')}"
    ]
    assert portability_warnings([old, new], {"avx2", "avx512_vnni"}) == []


def test_service_logs_the_warning_when_it_loads_such_a_model(tiny_exported, monkeypatch, caplog):
    from service.config import Settings
    from service.dataplane import DataPlane

    monkeypatch.setattr("models.cpu.cpu_flags", lambda *args: {"avx2", "fma"})
    monkeypatch.setattr("platform.machine", lambda: "x86_64")
    record = ModelRecord(
        name="old-int8",
        tag="old-int8:1",
        task="text-classification",
        path=tiny_exported("bert-classifier"),
        metadata={"quantization_config": OLD_VNNI_BUILD},
    )
    plane = DataPlane(Settings())
    with caplog.at_level(logging.WARNING, logger="service.dataplane"):
        plane.load([record])
    try:
        assert plane.ready
        assert any(
            "old-int8:1: int8 graph quantized with full-range 8-bit weights" in message
            for message in caplog.messages
        ), caplog.messages
    finally:
        plane.close()


SATURATION_PROBE = """
    import json
    import numpy as np
    import onnxruntime as ort
    from onnx import TensorProto, helper

    def matmul(weight, dtype):
        graph = helper.make_graph(
            [helper.make_node("MatMulInteger", ["A", "B"], ["Y"])], "g",
            [helper.make_tensor_value_info("A", TensorProto.UINT8, [2, 64]),
             helper.make_tensor_value_info("B", dtype, [64, 4])],
            [helper.make_tensor_value_info("Y", TensorProto.INT32, [2, 4])])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
        session = ort.InferenceSession(model.SerializeToString(),
                                       providers=["CPUExecutionProvider"])
        a = np.full((2, 64), 255, np.uint8)
        b = np.full((64, 4), weight, np.int8 if dtype == TensorProto.INT8 else np.uint8)
        return int(session.run(None, {"A": a, "B": b})[0][0, 0])

    print(json.dumps({"s8_full": matmul(127, TensorProto.INT8),
                      "s8_7bit": matmul(63, TensorProto.INT8),
                      "u8": matmul(255, TensorProto.UINT8)}))
"""
EXACT = {"s8_full": 255 * 127 * 64, "s8_7bit": 255 * 63 * 64, "u8": 255 * 255 * 64}


def run_probe(prefix: list[str]) -> dict:
    import json

    proc = subprocess.run(
        [*prefix, sys.executable, "-c", textwrap.dedent(SATURATION_PROBE)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.export_side  # the probe builds its graph with `onnx`
def test_full_range_s8_weights_saturate_on_an_avx2_cpu_and_7_bit_ones_do_not():
    """The premise of the x86-64 preset, on an emulated Haswell (AVX2, no VNNI): ONNX
    Runtime's u8s8 kernel there sums pairs of u8 x s8 products in 16 bits. Needs Debian's
    `qemu-user`: `.ci/run` installs it and sets NLP_REQUIRE_QEMU=1, so there it cannot skip."""
    if not shutil.which("qemu-x86_64"):
        if os.environ.get("NLP_REQUIRE_QEMU") == "1":
            pytest.fail("qemu-x86_64 missing (apt-get install qemu-user)")
        pytest.skip("qemu-x86_64 (qemu-user) missing")
    haswell = run_probe(["qemu-x86_64", "-cpu", "Haswell"])
    assert haswell["s8_7bit"] == EXACT["s8_7bit"] and haswell["u8"] == EXACT["u8"]
    assert haswell["s8_full"] == 32767 * 32  # every pair sum saturated at 2^15 - 1
    native = run_probe([])
    assert native["s8_7bit"] == EXACT["s8_7bit"] and native["u8"] == EXACT["u8"]
    if any(flag in cpu_flags() for flag in NO_SATURATION_FLAGS):
        assert native["s8_full"] == EXACT["s8_full"]
