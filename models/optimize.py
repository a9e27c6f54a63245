"""ONNX Runtime graph optimization (O1-O3) and dynamic int8 quantization of a serving folder.

Both rewrite the graphs in place, so the folder keeps the layout the runtime loads
(`models/layout.py`; seq2seq keeps unmerged decoders, which ORT can optimize and quantize).
"""

from __future__ import annotations

import json
import platform
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from models.layout import graph_files, with_external_data

LEVELS = ("O1", "O2", "O3")
# Above this a graph's weights must go to an external-data file (protobuf's 2 GB limit).
EXTERNAL_DATA_BYTES = 1_800_000_000


class OptimizationError(RuntimeError):
    """ONNX Runtime cannot optimize or quantize these graphs; the message says which and why."""


@dataclass(frozen=True)
class QuantizationTarget:
    """An Optimum `AutoQuantizationConfig` preset and the range of its weights.

    Activations are always u8 (quantized per batch). `weights_dtype` s8 with `reduce_range`
    (7-bit weights) or u8 weights give the same integers on every x86 CPU; s8 at full range
    saturates in the u8s8 kernels of CPUs without VNNI or AMX (models/cpu.py)."""

    name: str
    preset: str
    reduce_range: bool
    weights_dtype: str  # "s8" or "u8", what the preset stores

    def config(self, per_channel: bool):
        from optimum.onnxruntime.configuration import AutoQuantizationConfig

        preset = getattr(AutoQuantizationConfig, self.preset)
        kwargs = {"is_static": False, "per_channel": per_channel}
        if self.preset in ("avx2", "avx512"):  # the other presets fix it
            kwargs["reduce_range"] = self.reduce_range
        return preset(**kwargs)

    def describe(self) -> dict:
        return {
            "target": self.name,
            "preset": self.preset,
            "reduce_range": self.reduce_range,
            "weights_dtype": self.weights_dtype,
            "activations_dtype": "u8",
        }


# Every x86 export: u8s8 with 7-bit weights. Exact on every x86-64 CPU (no VPMADDUBSW
# saturation), run by VNNI/AMX where present; against the full-range VNNI preset it measured
# the same held-out accuracy and speed (models/results/int8-portability.md), so the exporting
# CPU no longer decides what every deployment gets.
X86_64 = QuantizationTarget("x86-64", "avx512", reduce_range=True, weights_dtype="s8")
# ARM's int8 kernels (SDOT/UDOT or widening multiplies) have no 16-bit pair sums to saturate.
ARM64 = QuantizationTarget("arm64", "arm64", reduce_range=False, weights_dtype="s8")


def quantization_target(machine: str | None = None) -> QuantizationTarget:
    """The quantization preset for this architecture (x86-64 unless it is ARM)."""
    machine = (machine or platform.machine()).lower()
    return ARM64 if machine in ("aarch64", "arm64") else X86_64


def optimize_graphs(folder: Path, task: str, level: str) -> dict:
    """Replace the folder's graphs by ORT-optimized ones at `level` (O1, O2 or O3)."""
    from optimum.onnxruntime import ORTOptimizer
    from optimum.onnxruntime.configuration import AutoOptimizationConfig

    if level not in LEVELS:
        raise OptimizationError(f"optimization level must be one of {', '.join(LEVELS)}")
    folder = Path(folder)
    names = graph_files(task)
    with tempfile.TemporaryDirectory(prefix="optimize-", dir=folder.parent) as tmp:
        try:
            optimizer = ORTOptimizer.from_pretrained(folder, file_names=list(names))
            optimizer.optimize(
                AutoOptimizationConfig.with_optimization_level(level), tmp, file_suffix=None
            )
        except Exception as err:
            raise OptimizationError(
                f"ONNX Runtime cannot {level}-optimize the {_model_type(folder)} graphs "
                f"{list(names)}: {type(err).__name__}: {err}"
            ) from err
        for name in names:
            _replace(folder, Path(tmp), name)
    return {"level": level, "graphs": list(graph_files(task))}


def quantize_graphs(
    folder: Path, task: str, per_channel: bool = True, target: QuantizationTarget | None = None
) -> dict:
    """Replace the folder's graphs by dynamically int8-quantized ones (weights int8 ahead of
    time, activations quantized per batch: no calibration data needed). The returned record
    names the preset (model metadata keeps it; the service checks it at load)."""
    from optimum.onnxruntime import ORTQuantizer

    folder = Path(folder)
    target = target or quantization_target()
    config = target.config(per_channel)
    for name in graph_files(task):
        _add_type_information(folder / name)
        size = sum(p.stat().st_size for p in with_external_data(folder, name))
        with tempfile.TemporaryDirectory(prefix="quantize-", dir=folder.parent) as tmp:
            try:
                quantizer = ORTQuantizer.from_pretrained(folder, file_name=name)
                with _untyped_tensors_are_float():
                    quantizer.quantize(
                        config,
                        tmp,
                        file_suffix=None,
                        use_external_data_format=size > EXTERNAL_DATA_BYTES,
                    )
            except Exception as err:
                raise OptimizationError(
                    f"ONNX Runtime cannot int8-quantize {name} of {folder}: "
                    f"{type(err).__name__}: {err}"
                ) from err
            _replace(folder, Path(tmp), name)
    return {
        "dtype": "int8",
        "mode": "dynamic",
        **target.describe(),
        "per_channel": per_channel,
        "graphs": list(graph_files(task)),
    }


def _add_type_information(path: Path) -> None:
    """Annotate tensor types with ORT's symbolic shape inference, which knows the fused
    `com.microsoft` operators of an optimized graph; without it the quantizer cannot type their
    outputs. Best effort: an unoptimized graph quantizes fine as it is."""
    import onnx
    from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

    if (path.parent / f"{path.name}_data").exists():
        return  # Weights outside the protobuf: leave such large graphs to the quantizer as is.
    try:
        model = SymbolicShapeInference.infer_shapes(onnx.load(str(path)), auto_merge=True)
    except Exception:  # ORT's inference does not cover every graph (e.g. `If` subgraphs)
        return
    onnx.save(model, str(path))


@contextmanager
def _untyped_tensors_are_float() -> Iterator[None]:
    """Have ORT's quantizer treat tensors whose type inference could not reach as float32.

    Symbolic shape inference fails on some optimized graphs (e.g. sentence-transformers pooling),
    leaving the outputs of fused operators untyped; ORT's quantizer then refuses unless told the
    default type (its `DefaultTensorType` option). Every activation of an fp32 export is float32,
    and parity checks the result. Optimum does not pass that option through, so its quantizer
    factory is wrapped for the duration of the call.
    """
    import onnx
    import optimum.onnxruntime.quantization as optimum_quantization

    original = optimum_quantization.ONNXQuantizer

    def factory(*args, **kwargs):
        extra = {"DefaultTensorType": onnx.TensorProto.FLOAT, **(kwargs.get("extra_options") or {})}
        return original(*args, **{**kwargs, "extra_options": extra})

    optimum_quantization.ONNXQuantizer = factory
    try:
        yield
    finally:
        optimum_quantization.ONNXQuantizer = original


def _model_type(folder: Path) -> str:
    try:
        return json.loads((folder / "config.json").read_text())["model_type"]
    except (OSError, KeyError, ValueError):
        return "unknown"


def _replace(folder: Path, produced: Path, name: str) -> None:
    for old in with_external_data(folder, name):
        old.unlink()
    for new in with_external_data(produced, name):
        shutil.move(str(new), folder / new.name)
