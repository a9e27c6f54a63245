"""Tensors of the Open Inference Protocol (v2): wire encodings and one table of tensors per task.

Both adapters (gRPC and REST) decode their wire format into `Tensor`s with the helpers here and
encode `Tensor`s back. Each task declares its own `TaskTensors` (which tensors a model takes and
returns, how they become data-plane items and come back from results) in its module, with the
helpers here (`ranked_tensors`, `text_tensor`).

Text travels as BYTES: a [N] (or [N, 1]) tensor of UTF-8 strings is N independent requests,
submitted together so that they batch. Raw BYTES contents (gRPC `raw_input_contents`, the REST
binary extension) hold each element as a 4-byte little-endian length followed by its bytes.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pydantic import BaseModel, ValidationError

from service.runtime.errors import InvalidInput

# v2 datatype -> numpy dtype (little-endian, as the wire is).
NUMPY_DTYPES: dict[str, np.dtype] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype("<u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("<i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
    "BYTES": np.dtype(object),
}
# BF16 has no numpy type: accepted on the wire (raw only) and refused by every model here.
DATATYPES = (*NUMPY_DTYPES, "BF16")

# Request parameters that belong to the protocol (Triton clients set them), not to a task.
PROTOCOL_PARAMETERS = frozenset(
    {
        "binary_data_output",
        "priority",
        "timeout",
        "headers",
        "sequence_id",
        "sequence_start",
        "sequence_end",
        "content_type",
    }
)


@dataclass
class Tensor:
    """A decoded tensor; `data` has `shape` (BYTES: an object array of `bytes`)."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    data: np.ndarray
    parameters: dict[str, Any] = field(default_factory=dict)


@dataclass
class RequestedOutput:
    name: str
    parameters: dict[str, Any] = field(default_factory=dict)


@dataclass
class InferenceRequest:
    """A protocol-neutral v2 inference request."""

    inputs: list[Tensor]
    parameters: dict[str, Any] = field(default_factory=dict)
    outputs: list[RequestedOutput] = field(default_factory=list)
    id: str = ""


@dataclass
class InferenceResponse:
    model_name: str
    model_version: str
    outputs: list[Tensor]
    id: str = ""


# --- wire encodings ---------------------------------------------------------------------------


def _check_shape(name: str, datatype: str, shape: Sequence[int]) -> tuple[int, ...]:
    if datatype not in DATATYPES:
        raise InvalidInput(
            f"input {name!r}: unknown datatype {datatype!r}; one of {', '.join(DATATYPES)}",
            field=name,
        )
    shape = tuple(int(d) for d in shape)
    if any(d < 0 for d in shape):
        raise InvalidInput(
            f"input {name!r}: shape {list(shape)} has a negative dimension", field=name
        )
    return shape


def _count(shape: tuple[int, ...]) -> int:
    return math.prod(shape)


def split_bytes_elements(raw: bytes, name: str) -> list[bytes]:
    """Elements of a raw BYTES tensor: each a uint32 little-endian length, then the bytes."""
    elements: list[bytes] = []
    view = memoryview(raw)
    offset = 0
    while offset < len(view):
        if offset + 4 > len(view):
            raise InvalidInput(
                f"input {name!r}: raw BYTES content ends inside a length prefix", field=name
            )
        (length,) = struct.unpack_from("<I", view, offset)
        offset += 4
        if offset + length > len(view):
            raise InvalidInput(
                f"input {name!r}: raw BYTES element {len(elements)} claims "
                f"{length} bytes, {len(view) - offset} remain",
                field=name,
            )
        elements.append(bytes(view[offset : offset + length]))
        offset += length
    return elements


def join_bytes_elements(elements: Iterable[bytes]) -> bytes:
    """The raw encoding of BYTES elements (inverse of `split_bytes_elements`)."""
    return b"".join(struct.pack("<I", len(e)) + e for e in elements)


def _object_array(elements: Sequence[bytes], shape: tuple[int, ...]) -> np.ndarray:
    array = np.empty(len(elements), dtype=object)
    array[:] = list(elements)
    return array.reshape(shape)


def tensor_from_raw(
    name: str,
    datatype: str,
    shape: Sequence[int],
    raw: bytes,
    parameters: dict[str, Any] | None = None,
) -> Tensor:
    """A tensor from its raw bytes (gRPC raw_input_contents, REST binary data)."""
    shape = _check_shape(name, datatype, shape)
    count = _count(shape)
    if datatype == "BYTES":
        elements = split_bytes_elements(raw, name)
        if len(elements) != count:
            raise InvalidInput(
                f"input {name!r}: shape {list(shape)} needs {count} elements, "
                f"the raw content holds {len(elements)}",
                field=name,
            )
        return Tensor(name, datatype, shape, _object_array(elements, shape), parameters or {})
    dtype = np.dtype("<u2") if datatype == "BF16" else NUMPY_DTYPES[datatype]
    if len(raw) != count * dtype.itemsize:
        raise InvalidInput(
            f"input {name!r}: shape {list(shape)} of {datatype} needs "
            f"{count * dtype.itemsize} bytes, got {len(raw)}",
            field=name,
        )
    data = np.frombuffer(raw, dtype=dtype)
    return Tensor(name, datatype, shape, data.reshape(shape), parameters or {})


def _flatten(values: Any) -> list[Any]:
    if isinstance(values, list | tuple):
        out: list[Any] = []
        for v in values:
            out.extend(_flatten(v))
        return out
    return [values]


def tensor_from_values(
    name: str,
    datatype: str,
    shape: Sequence[int],
    values: Any,
    parameters: dict[str, Any] | None = None,
) -> Tensor:
    """A tensor from typed elements (gRPC `contents`, REST JSON `data`, flat or nested)."""
    shape = _check_shape(name, datatype, shape)
    flat = _flatten(list(values) if not isinstance(values, list | tuple) else values)
    count = _count(shape)
    if len(flat) != count:
        raise InvalidInput(
            f"input {name!r}: shape {list(shape)} needs {count} elements, got {len(flat)}",
            field=name,
        )
    if datatype == "BF16":
        raise InvalidInput(f"input {name!r}: BF16 travels only as raw content", field=name)
    if datatype == "BYTES":
        elements = []
        for value in flat:
            if isinstance(value, str):
                try:
                    elements.append(value.encode("utf-8"))
                except UnicodeEncodeError:
                    raise InvalidInput(
                        f"input {name!r}: element is not valid Unicode (a lone surrogate)",
                        field=name,
                    ) from None
            elif isinstance(value, bytes | bytearray):
                elements.append(bytes(value))
            else:
                raise InvalidInput(
                    f"input {name!r}: BYTES elements must be strings, got {type(value).__name__}",
                    field=name,
                )
        return Tensor(name, datatype, shape, _object_array(elements, shape), parameters or {})
    try:
        data = np.asarray(flat, dtype=NUMPY_DTYPES[datatype])
    except (TypeError, ValueError, OverflowError) as err:
        raise InvalidInput(
            f"input {name!r}: elements are not {datatype}: {err}", field=name
        ) from None
    return Tensor(name, datatype, shape, data.reshape(shape), parameters or {})


def tensor_raw_bytes(tensor: Tensor) -> bytes:
    """The raw encoding of a tensor (gRPC raw_output_contents, REST binary data)."""
    if tensor.datatype == "BYTES":
        return join_bytes_elements(tensor.data.reshape(-1))
    return np.ascontiguousarray(tensor.data, dtype=NUMPY_DTYPES[tensor.datatype]).tobytes()


def tensor_json_data(tensor: Tensor) -> list[Any]:
    """Row-major elements for JSON: BYTES as UTF-8 strings, numbers as numbers."""
    flat = tensor.data.reshape(-1)
    if tensor.datatype == "BYTES":
        return [e.decode("utf-8", errors="replace") for e in flat]
    return flat.tolist()


# --- per-task tensors -------------------------------------------------------------------------


@dataclass(frozen=True)
class TensorSpec:
    """A model's tensor as metadata shows it; -1 marks a variable dimension."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    description: str = ""


Items = Callable[[dict[str, list[str]], Any], list[Any]]
Encoder = Callable[[list[Any]], list[Tensor]]


@dataclass(frozen=True)
class TaskTensors:
    """How one task travels as v2 tensors.

    `items` turns the decoded texts (by input name, N each) and the task's parameters into the
    N items `DataPlane.run_batched` takes; `encode` turns its N results into output tensors.
    Generation is not batched: its items are the prompts themselves.
    """

    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    parameters: type[BaseModel]
    items: Items
    encode: Encoder


def text_tensor(name: str, values: Sequence[str]) -> Tensor:
    """A [N] BYTES tensor of UTF-8 texts."""
    return Tensor(
        name,
        "BYTES",
        (len(values),),
        _object_array([v.encode("utf-8") for v in values], (len(values),)),
    )


def fp32_tensor(name: str, values: Sequence[Any]) -> Tensor:
    """An FP32 tensor of N numbers ([N]) or N equal-length vectors ([N, dim])."""
    data = np.asarray(values, dtype=np.float32)
    return Tensor(name, "FP32", tuple(data.shape), data)


def ranked_tensors(
    results: list[list[dict[str, Any]]], fields: Sequence[tuple[str, str, Any]]
) -> list[Tensor]:
    """[N, k] tensors from N best-first lists of dicts, one tensor per (key, datatype, pad);
    shorter lists are padded (BYTES "", numbers the given pad value) so that every row has the
    longest list's k entries."""
    k = max((len(r) for r in results), default=0)
    tensors = []
    for key, datatype, pad in fields:
        rows = [[entry[key] for entry in r] + [pad] * (k - len(r)) for r in results]
        shape = (len(results), k)
        if datatype == "BYTES":
            data = _object_array([v.encode("utf-8") for row in rows for v in row], shape)
        else:
            data = np.asarray(rows, dtype=NUMPY_DTYPES[datatype]).reshape(shape)
        tensors.append(Tensor(key, datatype, shape, data))
    return tensors


TEXT = TensorSpec("text", "BYTES", (-1,), "UTF-8 text, one request per element")


def one_text_per_item(texts: dict[str, list[str]], params: Any) -> list[Any]:
    """Items of a task whose only input is `text`: (text, parameters) per element."""
    return [(t, params) for t in texts["text"]]


# --- validation -------------------------------------------------------------------------------


def input_texts(table: TaskTensors, inputs: Sequence[Tensor]) -> dict[str, list[str]]:
    """The texts of every input the task takes, checked against its table: names, BYTES,
    shape [N] or [N, 1], the same N for all inputs, UTF-8 and not blank."""
    by_name: dict[str, Tensor] = {}
    for tensor in inputs:
        if tensor.name in by_name:
            raise InvalidInput(f"input {tensor.name!r} is given twice", field=tensor.name)
        by_name[tensor.name] = tensor
    expected = [spec.name for spec in table.inputs]
    unknown = sorted(set(by_name) - set(expected))
    if unknown:
        raise InvalidInput(
            f"unknown input {unknown[0]!r}; this model takes {', '.join(expected)}",
            field=unknown[0],
        )
    texts: dict[str, list[str]] = {}
    count: int | None = None
    for spec in table.inputs:
        tensor = by_name.get(spec.name)
        if tensor is None:
            raise InvalidInput(
                f"missing input {spec.name!r} ({spec.datatype} {list(spec.shape)})", field=spec.name
            )
        if tensor.datatype != spec.datatype:
            raise InvalidInput(
                f"input {spec.name!r} must be {spec.datatype}, got {tensor.datatype}",
                field=spec.name,
            )
        shape = tensor.shape
        if not (len(shape) == 1 or (len(shape) == 2 and shape[1] == 1)) or shape[0] < 1:
            raise InvalidInput(
                f"input {spec.name!r} must have shape [N] or [N, 1] with N >= 1, got {list(shape)}",
                field=spec.name,
            )
        if count is not None and shape[0] != count:
            raise InvalidInput(
                f"input {spec.name!r} has {shape[0]} elements, "
                f"{table.inputs[0].name!r} has {count}",
                field=spec.name,
            )
        count = shape[0]
        values = []
        for i, element in enumerate(tensor.data.reshape(-1)):
            try:
                text = bytes(element).decode("utf-8")
            except UnicodeDecodeError:
                raise InvalidInput(
                    f"input {spec.name!r}[{i}] is not valid UTF-8", field=spec.name
                ) from None
            if not text.strip():
                raise InvalidInput(
                    f"input {spec.name!r}[{i}]: text must not be empty or only whitespace",
                    field=spec.name,
                )
            values.append(text)
        texts[spec.name] = values
    return texts


def task_parameters(table: TaskTensors, parameters: dict[str, Any]) -> BaseModel:
    """The task's parameter object from the request's `parameters` (protocol keys dropped)."""
    values = {
        k: v
        for k, v in parameters.items()
        if k not in PROTOCOL_PARAMETERS and not k.startswith("triton_")
    }
    try:
        return table.parameters.model_validate(values)
    except ValidationError as err:
        allowed = ", ".join(sorted(table.parameters.model_fields))
        raise InvalidInput.from_validation(
            err.errors(),
            prefix="parameters",
            unknown_key_hint=f"unknown parameter; this task takes {allowed}",
        ) from None


def select_outputs(
    table: TaskTensors, outputs: list[Tensor], requested: Sequence[RequestedOutput]
) -> list[Tensor]:
    """The requested outputs in the requested order, or all of them when none is named."""
    if not requested:
        return outputs
    by_name = {t.name: t for t in outputs}
    selected = []
    for output in requested:
        if output.name not in by_name:
            names = ", ".join(spec.name for spec in table.outputs)
            raise InvalidInput(
                f"unknown output {output.name!r}; this model returns {names}", field=output.name
            )
        selected.append(by_name[output.name])
    return selected
