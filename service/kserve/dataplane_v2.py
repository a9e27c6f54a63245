"""The Open Inference Protocol (v2) operations over the data plane, for both of its adapters.

`grpc_server.py` and `rest_routes.py` only translate their wire format to and from the
protocol-neutral types of `tensors.py` and call these methods, so a v2 request batches, counts
and fails the same way through either door, and the same way as the HTTP task routes (the data
plane under all of them is one object per worker). Errors are the data plane's exceptions
(`ModelNotFound`, `InvalidInput`, `Overloaded`); each adapter maps them to its status codes.
"""

from __future__ import annotations

import asyncio
from typing import Any

from service import deadlines, metrics
from service.dataplane import DataPlane, ServedModel
from service.kserve.tensors import (
    InferenceRequest,
    InferenceResponse,
    TaskTensors,
    TensorSpec,
    input_texts,
    select_outputs,
    task_parameters,
)
from service.runtime.errors import InvalidInput, ModelNotFound

SERVER_NAME = "nlp-serving"
SERVER_VERSION = "0.1.0"
# Triton's platform name for ONNX models, which tools that read metadata recognise.
PLATFORM = "onnxruntime_onnx"
BACKEND = "onnxruntime"
# What ServerMetadata lists: the REST binary tensor extension, the Triton model configuration
# and statistics extensions (read by perf_analyzer), request parameters, and Triton's generate
# and model repository extensions (service/kserve/generate_routes.py, repository_routes.py).
EXTENSIONS = (
    "binary_tensor_data",
    "model_configuration",
    "statistics",
    "parameters",
    "generate",
    "model_repository",
)

# The one version every v2 route names a served model by (metadata, ready, infer, statistics):
# Triton numbers versions, and perf_analyzer parses the statistics' version as an integer
# (`std::stoll` aborts on a store hash such as "abc123"). The store version (the build's hash)
# is in the metadata's `tag` parameter, and is accepted as an alias wherever a version is.
V2_VERSION = "1"

_CONFIG_TYPES = {
    "BOOL": "TYPE_BOOL",
    "UINT8": "TYPE_UINT8",
    "UINT16": "TYPE_UINT16",
    "UINT32": "TYPE_UINT32",
    "UINT64": "TYPE_UINT64",
    "INT8": "TYPE_INT8",
    "INT16": "TYPE_INT16",
    "INT32": "TYPE_INT32",
    "INT64": "TYPE_INT64",
    "FP16": "TYPE_FP16",
    "FP32": "TYPE_FP32",
    "FP64": "TYPE_FP64",
    "BYTES": "TYPE_STRING",
    "BF16": "TYPE_BF16",
}


def triton_timeout(parameters: dict[str, Any]) -> float | None:
    """Seconds from Triton's `timeout` request parameter (microseconds, 0 = none), which bounds
    the request like the caller's own deadline; `priority` other than 0 (the default level) is
    refused: requests here are served in arrival order."""
    priority = parameters.get("priority", 0)
    if priority not in (0, None):
        raise InvalidInput(
            f"parameters.priority: this server has one priority level (0); got {priority!r}",
            field="parameters.priority",
        )
    timeout = parameters.get("timeout")
    if timeout is None or timeout == 0:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, int) or timeout < 0:
        raise InvalidInput(
            f"parameters.timeout: microseconds as a non-negative integer, got {timeout!r}",
            field="parameters.timeout",
        )
    return timeout / 1e6


def _tensor_metadata(spec: TensorSpec) -> dict[str, Any]:
    return {"name": spec.name, "datatype": spec.datatype, "shape": list(spec.shape)}


class V2DataPlane:
    """Live, ready, metadata and infer of the v2 protocol, by model name, over a `DataPlane`."""

    def __init__(self, plane: DataPlane) -> None:
        self.plane = plane

    # --- health ---------------------------------------------------------------------------------
    def live(self) -> bool:
        return True

    def ready(self) -> bool:
        return self.plane.ready

    def model_ready(self, name: str, version: str = "") -> bool:
        self.served(name, version)
        return self.plane.ready

    # --- metadata -------------------------------------------------------------------------------
    def served(self, name: str, version: str = "") -> ServedModel:
        """The served model `name`; `version` empty, `V2_VERSION` or its store version (an
        alias), else NOT_FOUND."""
        served = self.plane.models.get(name)
        if served is None:
            raise ModelNotFound(
                f"model {name!r} is not served; served models: "
                f"{', '.join(sorted(self.plane.models))}"
            )
        if version and version not in (V2_VERSION, served.record.version):
            raise ModelNotFound(
                f"model {name!r} has no version {version!r}; served version: {V2_VERSION!r}"
            )
        return served

    def tensors(self, served: ServedModel) -> TaskTensors:
        return served.spec.tensors

    def server_metadata(self) -> dict[str, Any]:
        return {"name": SERVER_NAME, "version": SERVER_VERSION, "extensions": list(EXTENSIONS)}

    def model_metadata(self, name: str, version: str = "") -> dict[str, Any]:
        """v2 model metadata; `parameters` (an MLServer extension) names the task and source and
        flags random-weight models (`untrained`; over gRPC the model's name says it too)."""
        served = self.served(name, version)
        table = self.tensors(served)
        record = served.record
        parameters: dict[str, Any] = {
            "task": record.task,
            "tag": record.tag,
            "source": record.public_source,
            "graph": record.graph,
            "optimization": record.optimization or "none",
            "quantization": record.quantization or "none",
            "default": self.plane.defaults.get(record.task) == record.name,
            "untrained": record.untrained,
        }
        return {
            "name": record.name,
            "versions": [V2_VERSION],
            "platform": PLATFORM,
            "inputs": [_tensor_metadata(spec) for spec in table.inputs],
            "outputs": [_tensor_metadata(spec) for spec in table.outputs],
            "parameters": parameters,
        }

    def model_config(self, name: str, version: str = "") -> dict[str, Any]:
        """Triton's model configuration (the fields perf_analyzer reads).

        `max_batch_size` is 0: the first dimension of `text` is a list of requests that this
        server batches itself (with other requests, across protocols), not Triton's batch axis.
        """
        served = self.served(name, version)
        table = self.tensors(served)
        return {
            "name": served.name,
            "platform": PLATFORM,
            "backend": BACKEND,
            "max_batch_size": 0,
            "input": [
                {"name": s.name, "data_type": _CONFIG_TYPES[s.datatype], "dims": list(s.shape)}
                for s in table.inputs
            ],
            "output": [
                {"name": s.name, "data_type": _CONFIG_TYPES[s.datatype], "dims": list(s.shape)}
                for s in table.outputs
            ],
            "model_transaction_policy": {"decoupled": False},
        }

    def model_statistics(self, name: str = "", version: str = "") -> list[dict[str, Any]]:
        """Triton's statistics extension (perf_analyzer reports them), read from the data plane's
        Prometheus metrics of this worker, so every protocol's requests count.

        compute_input is tokenization, compute_infer the model run with post-processing,
        compute_output (included in compute_infer) reports zero time; the three share one count,
        as perf_analyzer requires. `success.ns` is the time of all requests (the duration
        histogram has no outcome label). Versions: `V2_VERSION`, as everywhere.
        """
        models = [self.served(name, version)] if name else list(self.plane.models.values())
        return [self._statistics(served) for served in models]

    @staticmethod
    def _statistics(served: ServedModel) -> dict[str, Any]:
        model = {"model": served.name}

        def total(metric: Any, sample: str, **labels: str) -> float:
            return sum(
                s.value
                for family in metric.collect()
                for s in family.samples
                if s.name == sample
                and all(s.labels.get(k) == v for k, v in {**model, **labels}.items())
            )

        def duration(count: float, seconds: float) -> dict[str, int]:
            return {"count": int(count), "ns": int(seconds * 1e9)}

        requests = total(metrics.REQUESTS, "nlp_requests_total")
        ok = total(metrics.REQUESTS, "nlp_requests_total", outcome="ok")
        # Batches (generation: requests) whose model run finished.
        runs = total(metrics.INFERENCE_DURATION, "nlp_inference_duration_seconds_count")
        return {
            "name": served.name,
            "version": V2_VERSION,
            "inference_count": int(total(metrics.BATCH_SIZE, "nlp_batch_size_sum")),
            "execution_count": int(total(metrics.BATCH_SIZE, "nlp_batch_size_count")),
            "inference_stats": {
                "success": duration(
                    ok, total(metrics.REQUEST_DURATION, "nlp_request_duration_seconds_sum")
                ),
                "fail": duration(requests - ok, 0.0),
                "queue": duration(
                    total(metrics.QUEUE_DURATION, "nlp_queue_duration_seconds_count"),
                    total(metrics.QUEUE_DURATION, "nlp_queue_duration_seconds_sum"),
                ),
                "compute_input": duration(
                    runs,
                    total(metrics.TOKENIZATION_DURATION, "nlp_tokenization_duration_seconds_sum"),
                ),
                "compute_infer": duration(
                    runs, total(metrics.INFERENCE_DURATION, "nlp_inference_duration_seconds_sum")
                ),
                "compute_output": duration(runs, 0.0),
            },
        }

    # --- inference ------------------------------------------------------------------------------
    async def infer(
        self, name: str, version: str, request: InferenceRequest, protocol: str
    ) -> InferenceResponse:
        """Run a v2 request: its [N] inputs are N data-plane items, submitted together."""
        served = self.served(name, version)
        table = self.tensors(served)
        try:
            timeout = triton_timeout(request.parameters)
            texts = input_texts(table, request.inputs)
            params = task_parameters(table, request.parameters)
        except InvalidInput as exc:
            # Refused before reaching the data plane, which counts everything after this.
            metrics.REQUESTS.labels(served.name, served.task, protocol, exc.outcome).inc()
            raise
        items = table.items(texts, params)
        left = deadlines.remaining()
        bound = left if timeout is None else timeout if left is None else min(left, timeout)
        with deadlines.within(bound):
            if served.spec.streams:
                results = await self._generate_all(served, items, params, protocol)
            else:
                results = await self.plane.run_batched(served.task, items, served.name, protocol)
        outputs = select_outputs(table, table.encode(results), request.outputs)
        return InferenceResponse(served.name, V2_VERSION, outputs, request.id)

    async def _generate_all(
        self, served: ServedModel, prompts: list[str], params: Any, protocol: str
    ) -> list[str]:
        """Full generated texts; the N prompts run concurrently, each in a generation slot."""
        slots = self.plane.settings.limits.max_concurrent_generations
        if len(prompts) > slots:
            raise InvalidInput(
                f"{len(prompts)} prompts; at most {slots} per generation request "
                f"(they run concurrently)",
                field="text",
            )
        tasks = [
            asyncio.ensure_future(self._generate(served, prompt, params, protocol))
            for prompt in prompts
        ]
        try:
            return list(await asyncio.gather(*tasks))
        except BaseException:
            # One prompt refused (or the caller gone): stop generating the others.
            for task in tasks:
                task.cancel()
            raise

    async def _generate(self, served: ServedModel, prompt: str, params: Any, protocol: str) -> str:
        final = await self.plane.generate(prompt, params, served.name, protocol, served.task)
        text = final.generated_text if final is not None else ""
        return prompt + text if params.return_full_text else text
