"""The KServe v2 gRPC server (grpc.aio), started inside each BentoML worker's event loop.

Why in the worker and not in a process of its own: the worker holds the data plane (models,
batchers, metrics), and a gRPC request must join the same batches as HTTP requests; a separate
process could only forward to HTTP (a second hop per request) or load its own models (a second
copy, separate batches). With several workers each binds the port with SO_REUSEPORT and the
kernel spreads connections over them, as it does for HTTP.

The servicer is a thin adapter: protobuf to `tensors.Tensor` and back; a data-plane exception
answers with the gRPC status its class states (service/runtime/errors.py; `Retry-After` as a
`retry-after` trailer).
Besides `inference.GRPCInferenceService` the server answers `grpc.health.v1.Health` (SERVING once
the models are loaded, NOT_SERVING while shutting down) and server reflection.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from service.api_keys import ApiKeys
from service.config import Settings
from service.dataplane import DataPlane
from service.kserve.dataplane_v2 import V2DataPlane
from service.kserve.generated import grpc_predict_v2_pb2 as pb
from service.kserve.generated import grpc_predict_v2_pb2_grpc as pb_grpc
from service.kserve.grpc_calls import PROTOCOL, ApiKeyInterceptor, maps_errors
from service.kserve.tensors import (
    InferenceRequest,
    InferenceResponse,
    RequestedOutput,
    Tensor,
    tensor_from_raw,
    tensor_from_values,
    tensor_raw_bytes,
)
from service.model_control import ModelControl
from service.runtime.errors import InvalidInput

log = logging.getLogger("service.kserve.grpc")

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name

# InferTensorContents field holding each datatype's typed elements.
_CONTENTS_FIELD = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}


# --- protobuf <-> neutral types ---------------------------------------------------------------


def parameters_from_pb(parameters: Any) -> dict[str, Any]:
    values = {}
    for key, value in parameters.items():
        kind = value.WhichOneof("parameter_choice")
        values[key] = getattr(value, kind) if kind else None
    return values


def set_parameter(target: pb.InferParameter, value: Any) -> None:
    # bool before int: bool is an int in Python.
    if isinstance(value, bool):
        target.bool_param = value
    elif isinstance(value, int):
        target.int64_param = value
    elif isinstance(value, float):
        target.double_param = value
    else:
        target.string_param = str(value)


def request_from_pb(request: pb.ModelInferRequest) -> InferenceRequest:
    raw = request.raw_input_contents
    if raw and len(raw) != len(request.inputs):
        raise InvalidInput(
            f"raw_input_contents has {len(raw)} entries for {len(request.inputs)} inputs"
        )
    inputs: list[Tensor] = []
    for i, tensor in enumerate(request.inputs):
        params = parameters_from_pb(tensor.parameters)
        if raw:
            inputs.append(
                tensor_from_raw(tensor.name, tensor.datatype, tensor.shape, raw[i], params)
            )
            continue
        field_name = _CONTENTS_FIELD.get(tensor.datatype)
        values = getattr(tensor.contents, field_name) if field_name else []
        inputs.append(
            tensor_from_values(tensor.name, tensor.datatype, tensor.shape, values, params)
        )
    outputs = [RequestedOutput(o.name, parameters_from_pb(o.parameters)) for o in request.outputs]
    return InferenceRequest(inputs, parameters_from_pb(request.parameters), outputs, request.id)


def response_to_pb(response: InferenceResponse) -> pb.ModelInferResponse:
    message = pb.ModelInferResponse(
        model_name=response.model_name, model_version=response.model_version, id=response.id
    )
    for tensor in response.outputs:
        message.outputs.add(name=tensor.name, datatype=tensor.datatype, shape=tensor.shape)
        message.raw_output_contents.append(tensor_raw_bytes(tensor))
    return message


def metadata_to_pb(metadata: dict[str, Any]) -> pb.ModelMetadataResponse:
    message = pb.ModelMetadataResponse(
        name=metadata["name"], versions=metadata["versions"], platform=metadata["platform"]
    )
    for key in ("inputs", "outputs"):
        for tensor in metadata[key]:
            getattr(message, key).add(
                name=tensor["name"], datatype=tensor["datatype"], shape=tensor["shape"]
            )
    for key, value in metadata.get("parameters", {}).items():
        set_parameter(message.parameters[key], value)
    return message


class InferenceServicer(pb_grpc.GRPCInferenceServiceServicer):
    """`inference.GRPCInferenceService` over the v2 data plane (and the model repository
    extension over the worker's `ModelControl`)."""

    def __init__(self, v2: V2DataPlane, control: ModelControl | None = None) -> None:
        self.v2 = v2
        self.control = control or ModelControl(v2.plane)

    @maps_errors
    async def ServerLive(
        self, request: pb.ServerLiveRequest, context: Any
    ) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=self.v2.live())

    @maps_errors
    async def ServerReady(
        self, request: pb.ServerReadyRequest, context: Any
    ) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=self.v2.ready())

    @maps_errors
    async def ModelReady(
        self, request: pb.ModelReadyRequest, context: Any
    ) -> pb.ModelReadyResponse:
        return pb.ModelReadyResponse(ready=self.v2.model_ready(request.name, request.version))

    @maps_errors
    async def ServerMetadata(
        self, request: pb.ServerMetadataRequest, context: Any
    ) -> pb.ServerMetadataResponse:
        return pb.ServerMetadataResponse(**self.v2.server_metadata())

    @maps_errors
    async def ModelMetadata(
        self, request: pb.ModelMetadataRequest, context: Any
    ) -> pb.ModelMetadataResponse:
        return metadata_to_pb(self.v2.model_metadata(request.name, request.version))

    @maps_errors
    async def ModelConfig(
        self, request: pb.ModelConfigRequest, context: Any
    ) -> pb.ModelConfigResponse:
        config = self.v2.model_config(request.name, request.version)
        return pb.ModelConfigResponse(config=pb.ModelConfig(**config))

    @maps_errors
    async def ModelStatistics(
        self, request: pb.ModelStatisticsRequest, context: Any
    ) -> pb.ModelStatisticsResponse:
        stats = self.v2.model_statistics(request.name, request.version)
        return pb.ModelStatisticsResponse(model_stats=[pb.ModelStatistics(**s) for s in stats])

    @maps_errors
    async def ModelInfer(
        self, request: pb.ModelInferRequest, context: Any
    ) -> pb.ModelInferResponse:
        infer_request = request_from_pb(request)
        response = await self.v2.infer(
            request.model_name, request.model_version, infer_request, PROTOCOL
        )
        return response_to_pb(response)

    @maps_errors
    async def RepositoryIndex(
        self, request: pb.RepositoryIndexRequest, context: Any
    ) -> pb.RepositoryIndexResponse:
        entries = await asyncio.to_thread(self.control.index, request.ready)
        return pb.RepositoryIndexResponse(
            models=[pb.RepositoryIndexResponse.ModelIndex(**e) for e in entries]
        )

    @maps_errors
    async def RepositoryModelLoad(
        self, request: pb.RepositoryModelLoadRequest, context: Any
    ) -> pb.RepositoryModelLoadResponse:
        await self.control.load(request.model_name, parameters_from_pb(request.parameters))
        return pb.RepositoryModelLoadResponse()

    @maps_errors
    async def RepositoryModelUnload(
        self, request: pb.RepositoryModelUnloadRequest, context: Any
    ) -> pb.RepositoryModelUnloadResponse:
        await self.control.unload(request.model_name, parameters_from_pb(request.parameters))
        return pb.RepositoryModelUnloadResponse()


# --- lifecycle --------------------------------------------------------------------------------


@dataclass
class GrpcServer:
    server: grpc.aio.Server
    health: health.aio.HealthServicer
    address: str
    port: int


def bind_address(host: str, port: int) -> str:
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"  # IPv6 literal
    return f"{host}:{port}"


async def start_grpc_server(
    plane: DataPlane, settings: Settings, control: ModelControl | None = None
) -> GrpcServer:
    """Serve v2 gRPC, health and reflection on `settings.server.grpc_port` in this event loop.

    Raises when the port cannot be bound: the contract promises gRPC, so start-up fails loudly.
    """
    server_settings = settings.server
    options = [
        ("grpc.max_receive_message_length", server_settings.max_body_bytes),
        # Several workers share the port; one worker keeps it to itself, so that a second
        # server started on the same port by mistake fails instead of stealing requests.
        ("grpc.so_reuseport", 1 if server_settings.workers > 1 else 0),
    ]
    server = grpc.aio.server(
        options=options, interceptors=[ApiKeyInterceptor(ApiKeys.from_settings(server_settings))]
    )
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(
        InferenceServicer(V2DataPlane(plane), control), server
    )
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server
    )
    address = bind_address(server_settings.host, server_settings.grpc_port)
    try:
        port = server.add_insecure_port(address)
    except RuntimeError as err:
        raise RuntimeError(f"gRPC: cannot bind {address}: {err}") from err
    if not port:
        raise RuntimeError(f"gRPC: cannot bind {address}")
    await server.start()
    status = (
        health_pb2.HealthCheckResponse.SERVING
        if plane.ready
        else health_pb2.HealthCheckResponse.NOT_SERVING
    )
    for service in ("", SERVICE_NAME):
        await health_servicer.set(service, status)
    log.info("KServe v2 gRPC on %s (%s, health, reflection)", address, SERVICE_NAME)
    return GrpcServer(server, health_servicer, address, port)


async def stop_grpc_server(grpc_server: GrpcServer | None, grace: float = 5.0) -> None:
    """Report NOT_SERVING, let running calls finish for `grace` seconds, then stop."""
    if grpc_server is None:
        return
    await grpc_server.health.enter_graceful_shutdown()
    await grpc_server.server.stop(grace)
    log.info("KServe v2 gRPC on %s stopped", grpc_server.address)
