"""KServe Open Inference Protocol v2 over gRPC and REST, against the running service.

The clients are the real, unchanged ones (`tritonclient.grpc`, `tritonclient.http`, the gRPC
health and reflection stubs); every task's v2 outputs are compared with what the HTTP task
endpoint answers for the same inputs (and those equal the `transformers` pipelines, see
test_http_service.py). One dedicated server with a long batching window shows that a gRPC and
an HTTP request arriving together run as one batch.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import grpc
import numpy as np
import pytest
import requests
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

ROOT = Path(__file__).resolve().parents[1]
SENTENCES = [
    "I loved this film, the acting was superb.",
    "A dull and predictable plot.",
    "Un café, s'il vous plaît — très bien ☕",
]
CONTEXT = (
    "The festival opened on a rainy Friday. Critics praised the film's soundtrack but "
    "found the plot thin. The director, Ana Ruiz, was born in Seville."
)
QUESTIONS = ["What did the critics praise?", "Where was the director born?"]
# The default model of each task in the tiny profile, and its v2 tensors.
TASK_MODELS = {
    "text-classification": ("tiny-bert-classifier", ["text"], ["label", "score"]),
    "question-answering": (
        "tiny-distilbert-qa",
        ["question", "context"],
        ["answer", "score", "start", "end"],
    ),
    "feature-extraction": ("tiny-bert-embedder", ["text"], ["embedding"]),
    "translation": ("tiny-t5", ["text"], ["translation_text"]),
    "text-generation": ("tiny-llama-chat", ["text"], ["generated_text"]),
    "fill-mask": ("tiny-bert-fill-mask", ["text"], ["token_str", "score", "token", "sequence"]),
    "text-ranking": ("tiny-bert-reranker", ["query", "text"], ["score"]),
    "zero-shot-classification": ("tiny-bert-nli", ["text"], ["label", "score"]),
    "token-classification": (
        "tiny-bert-ner",
        ["text"],
        ["entity", "score", "word", "start", "end"],
    ),
    "summarization": ("tiny-bart-summarizer", ["text"], ["summary_text"]),
    "text2text-generation": ("tiny-t5-text2text", ["text"], ["generated_text"]),
}


def test_every_registered_task_has_its_v2_contract_here():
    """The tensors below are the contract clients code against: a new task states its own."""
    from service.runtime.registry import TASKS

    assert set(TASK_MODELS) == set(TASKS)


@pytest.fixture(scope="module")
def url(live_server) -> str:
    return live_server.url


@pytest.fixture(scope="module")
def grpc_client(live_server):
    client = grpcclient.InferenceServerClient(live_server.grpc_address)
    yield client
    client.close()


@pytest.fixture(scope="module")
def http_client(live_server):
    client = httpclient.InferenceServerClient(live_server.url.removeprefix("http://"))
    yield client
    client.close()


def post(url: str, path: str, body: dict) -> object:
    response = requests.post(f"{url}{path}", json=body, timeout=60)
    assert response.status_code == 200, response.text
    return response.json()


def texts_input(module, name: str, texts: list[str], shape: list[int] | None = None):
    array = np.array([t.encode("utf-8") for t in texts], dtype=object)
    shape = shape or [len(texts)]
    tensor = module.InferInput(name, shape, "BYTES")
    tensor.set_data_from_numpy(array.reshape(shape))
    return tensor


def as_text(array: np.ndarray) -> list:
    """BYTES outputs as nested lists of str (tritonclient gives bytes or str by encoding)."""
    return np.vectorize(lambda v: v.decode() if isinstance(v, bytes) else v, otypes=[object])(
        array
    ).tolist()


def infer_both(
    grpc_client,
    http_client,
    model: str,
    inputs: dict[str, list[str]],
    parameters: dict | None = None,
) -> list[dict[str, np.ndarray]]:
    """The same request through tritonclient.grpc and tritonclient.http (binary and JSON)."""
    results = []
    for client, module in ((grpc_client, grpcclient), (http_client, httpclient)):
        tensors = [texts_input(module, name, values) for name, values in inputs.items()]
        result = client.infer(model, tensors, parameters=parameters)
        outputs = (
            result.get_response()["outputs"]
            if module is httpclient
            else result.get_response().outputs
        )
        names = [o["name"] if isinstance(o, dict) else o.name for o in outputs]
        results.append({name: result.as_numpy(name) for name in names})
    json_tensors = [texts_input(httpclient, n, v) for n, v in inputs.items()]
    for tensor in json_tensors:
        tensor.set_data_from_numpy(
            np.array([s.encode() for s in inputs[tensor.name()]], dtype=object), binary_data=False
        )
    result = http_client.infer(
        model,
        json_tensors,
        parameters=parameters,
        outputs=[httpclient.InferRequestedOutput(name, binary_data=False) for name in results[0]],
    )
    results.append({name: result.as_numpy(name) for name in results[0]})
    for other in results[1:]:
        assert list(other) == list(results[0])
        for name, value in results[0].items():
            if value.dtype == object:
                assert as_text(other[name]) == as_text(value), name
            else:
                np.testing.assert_array_equal(other[name], value, err_msg=name)
    return results


# --- health and metadata ----------------------------------------------------------------------


def test_server_live_and_ready_over_grpc_and_http(grpc_client, http_client):
    assert grpc_client.is_server_live() and grpc_client.is_server_ready()
    assert http_client.is_server_live() and http_client.is_server_ready()
    metadata = grpc_client.get_server_metadata(as_json=True)
    assert metadata["name"] == "nlp-serving"
    assert http_client.get_server_metadata()["name"] == "nlp-serving"


@pytest.mark.parametrize("task", list(TASK_MODELS))
def test_model_metadata_names_the_task_tensors(task, url, grpc_client, http_client):
    model, inputs, outputs = TASK_MODELS[task]
    assert grpc_client.is_model_ready(model) and http_client.is_model_ready(model)
    tag = next(
        m["tag"] for m in requests.get(f"{url}/models", timeout=10).json() if m["name"] == model
    )
    over_http = http_client.get_model_metadata(model)
    over_grpc = grpc_client.get_model_metadata(model, as_json=True)
    for metadata in (over_http, over_grpc):
        assert metadata["name"] == model
        assert metadata["versions"] == ["1"]  # one numeric scheme (perf_analyzer needs it)
        assert metadata["platform"] == "onnxruntime_onnx"
        assert [i["name"] for i in metadata["inputs"]] == inputs
        assert {i["datatype"] for i in metadata["inputs"]} == {"BYTES"}
        assert [o["name"] for o in metadata["outputs"]] == outputs
    assert [o["datatype"] for o in over_http["outputs"]] == [
        o["datatype"] for o in over_grpc["outputs"]
    ]
    assert over_http["parameters"]["task"] == task
    assert over_http["parameters"]["tag"] == tag
    # The same version answers on every route (the store version is an alias); others do not.
    store_version = tag.split(":", 1)[1]
    for version in ("1", store_version):
        assert http_client.is_model_ready(model, model_version=version)
        assert grpc_client.is_model_ready(model, model_version=version)
        stats = grpc_client.get_inference_statistics(model, model_version=version, as_json=True)
        assert [s["version"] for s in stats["model_stats"]] == ["1"]
    assert requests.get(f"{url}/v2/models/{model}/versions/2/ready", timeout=10).status_code == 404


def test_unknown_model_is_not_found(grpc_client, http_client):
    for call in (
        lambda: grpc_client.get_model_metadata("no-such-model"),
        lambda: grpc_client.is_model_ready("no-such-model"),
        lambda: grpc_client.infer("no-such-model", [texts_input(grpcclient, "text", ["hi"])]),
    ):
        with pytest.raises(InferenceServerException) as err:
            call()
        assert err.value.status() == "StatusCode.NOT_FOUND"
        assert "no-such-model" in err.value.message()
    with pytest.raises(InferenceServerException) as err:
        http_client.get_model_metadata("no-such-model")
    assert err.value.status() == "404"
    assert not http_client.is_model_ready("no-such-model")


# --- inference equals the HTTP task endpoints ---------------------------------------------------


def test_classification_equals_classify_endpoint(url, grpc_client, http_client):
    got = infer_both(
        grpc_client, http_client, "tiny-bert-classifier", {"text": SENTENCES}, {"top_k": 2}
    )[0]
    expected = post(url, "/classify", {"inputs": SENTENCES, "parameters": {"top_k": 2}})
    assert got["label"].shape == got["score"].shape == (len(SENTENCES), 2)
    assert as_text(got["label"]) == [[e["label"] for e in row] for row in expected]
    np.testing.assert_allclose(
        got["score"], [[e["score"] for e in row] for row in expected], atol=1e-6
    )
    best = infer_both(
        grpc_client, http_client, "tiny-distilbert-classifier", {"text": SENTENCES[:1]}
    )[0]
    single = post(
        url, "/classify", {"inputs": SENTENCES[:1], "model": "tiny-distilbert-classifier"}
    )
    assert as_text(best["label"]) == [[single[0][0]["label"]]]


def test_question_answering_equals_answer_endpoint(url, grpc_client, http_client):
    got = infer_both(
        grpc_client,
        http_client,
        "tiny-distilbert-qa",
        {"question": QUESTIONS, "context": [CONTEXT] * 2},
        {"top_k": 2},
    )[0]
    assert got["answer"].shape == (2, 2)
    for i, question in enumerate(QUESTIONS):
        expected = post(
            url,
            "/answer",
            {"inputs": {"question": question, "context": CONTEXT}, "parameters": {"top_k": 2}},
        )
        assert as_text(got["answer"])[i] == [e["answer"] for e in expected]
        assert got["start"][i].tolist() == [e["start"] for e in expected]
        assert got["end"][i].tolist() == [e["end"] for e in expected]
        np.testing.assert_allclose(got["score"][i], [e["score"] for e in expected], atol=1e-6)


def test_embeddings_equal_embed_endpoint(url, grpc_client, http_client):
    got = infer_both(grpc_client, http_client, "tiny-bert-embedder", {"text": SENTENCES})[0]
    expected = np.array(post(url, "/embed", {"inputs": SENTENCES}))
    assert got["embedding"].dtype == np.float32 and got["embedding"].shape == expected.shape
    np.testing.assert_allclose(got["embedding"], expected, atol=1e-6)


def test_translation_equals_translate_endpoint(url, grpc_client, http_client):
    params = {"max_new_tokens": 8}
    got = infer_both(grpc_client, http_client, "tiny-t5", {"text": SENTENCES[:2]}, params)[0]
    expected = post(url, "/translate", {"inputs": SENTENCES[:2], "parameters": params})
    assert as_text(got["translation_text"]) == [e["translation_text"] for e in expected]


def test_generation_equals_generate_endpoint(url, grpc_client, http_client):
    prompts = ["The movie was", "I would watch it again because"]
    params = {"max_new_tokens": 6}
    got = infer_both(grpc_client, http_client, "tiny-llama-chat", {"text": prompts}, params)[0]
    expected = [
        post(url, "/generate", {"inputs": p, "parameters": params})["generated_text"]
        for p in prompts
    ]
    assert as_text(got["generated_text"]) == expected
    full = infer_both(
        grpc_client,
        http_client,
        "tiny-gpt2",
        {"text": prompts[:1]},
        {**params, "return_full_text": True},
    )[0]
    assert as_text(full["generated_text"]) == [
        post(
            url,
            "/generate",
            {
                "inputs": prompts[0],
                "model": "tiny-gpt2",
                "parameters": {**params, "return_full_text": True},
            },
        )["generated_text"]
    ]


def test_generate_extension_answers_what_infer_and_the_task_routes_answer(url):
    """Triton's generate extension: inputs and outputs by name in one flat JSON object; the
    LLM backends' `text_input`/`text_output` names as aliases; every task, not only
    generation; the stream is one event per token and adds up to the same text."""
    params = {"max_new_tokens": 6}
    prompt = "The movie was"
    expected = post(url, "/generate", {"inputs": prompt, "parameters": params})["generated_text"]
    for path in (
        "/v2/models/tiny-llama-chat/generate",
        "/v2/models/tiny-llama-chat/versions/1/generate",
    ):
        answer = post(url, path, {"text": prompt, "parameters": params, "id": "a1"})
        assert answer == {
            "model_name": "tiny-llama-chat",
            "model_version": "1",
            "generated_text": expected,
            "id": "a1",
        }
    aliased = post(
        url, "/v2/models/tiny-llama-chat/generate", {"text_input": prompt, "parameters": params}
    )
    assert aliased["text_output"] == expected and "generated_text" not in aliased
    response = requests.post(
        f"{url}/v2/models/tiny-llama-chat/generate_stream",
        timeout=60,
        stream=True,
        json={"text_input": prompt, "parameters": params},
    )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    events = [
        json.loads(line[5:])
        for line in response.iter_lines(decode_unicode=True)
        if line.startswith("data:")
    ]
    assert len(events) == 6 and all(e["model_name"] == "tiny-llama-chat" for e in events)
    assert "".join(e["text_output"] for e in events) == expected
    # Any task: a classifier's label and score, as /infer gives them.
    classified = post(url, "/v2/models/tiny-bert-classifier/generate", {"text": SENTENCES[0]})
    direct = post(url, "/classify", {"inputs": SENTENCES[0]})[0][0]
    assert (classified["label"], classified["score"]) == (direct["label"], direct["score"])
    stream = requests.post(
        f"{url}/v2/models/tiny-bert-classifier/generate_stream",
        timeout=60,
        json={"text": SENTENCES[0]},
    )
    (event,) = [
        json.loads(line[5:]) for line in stream.text.splitlines() if line.startswith("data:")
    ]
    assert event["label"] == direct["label"]
    for path, body, status, field in (
        ("/v2/models/tiny-llama-chat/generate", {"prompt": "x"}, 422, None),
        ("/v2/models/tiny-llama-chat/generate", {"text": 3}, 422, "text"),
        (
            "/v2/models/tiny-llama-chat/generate",
            {"text": "x", "parameters": {"max_new_tokens": 0}},
            422,
            "parameters.max_new_tokens",
        ),
        (
            "/v2/models/tiny-llama-chat/generate_stream",
            {"text": "x", "parameters": {"priority": 2}},
            422,
            "parameters.priority",
        ),
        ("/v2/models/tiny-llama-chat/generate_stream", {"text": ["a", "b"]}, 422, "text"),
        ("/v2/models/no-such-model/generate", {"text": "x"}, 404, None),
    ):
        refused = requests.post(url + path, json=body, timeout=60)
        assert refused.status_code == status, (path, body, refused.text)
        # v2 errors are `{"error": message}`; the message names the field.
        if field:
            assert field.rsplit(".", 1)[-1] in refused.json()["error"], refused.text


def test_batch_input_of_shape_n_by_1_and_requested_outputs(grpc_client):
    tensor = texts_input(grpcclient, "text", SENTENCES, shape=[len(SENTENCES), 1])
    result = grpc_client.infer(
        "tiny-bert-classifier", [tensor], outputs=[grpcclient.InferRequestedOutput("score")]
    )
    assert [o.name for o in result.get_response().outputs] == ["score"]
    assert result.as_numpy("score").shape == (len(SENTENCES), 1)


def test_typed_bytes_contents_are_accepted(live_server):
    """Not every client sends raw contents: `contents.bytes_contents` works the same."""
    stub = service_pb2_grpc.GRPCInferenceServiceStub(
        grpc.insecure_channel(live_server.grpc_address)
    )
    request = service_pb2.ModelInferRequest(model_name="tiny-bert-classifier")
    request.inputs.add(name="text", datatype="BYTES", shape=[2]).contents.bytes_contents.extend(
        [s.encode() for s in SENTENCES[:2]]
    )
    response = stub.ModelInfer(request, timeout=30)
    assert [o.name for o in response.outputs] == ["label", "score"]
    assert list(response.outputs[0].shape) == [2, 1]


# --- errors -----------------------------------------------------------------------------------


def _bad_requests():
    fp32 = grpcclient.InferInput("text", [2], "FP32")
    fp32.set_data_from_numpy(np.array([1.0, 2.0], dtype=np.float32))
    return {
        "wrong datatype": ("tiny-bert-classifier", [fp32], None, "must be BYTES"),
        "missing input": (
            "tiny-distilbert-qa",
            [texts_input(grpcclient, "question", ["Who?"])],
            None,
            "missing input 'context'",
        ),
        "unknown input": (
            "tiny-bert-classifier",
            [texts_input(grpcclient, "txt", ["hi"])],
            None,
            "unknown input 'txt'",
        ),
        "bad shape": (
            "tiny-bert-classifier",
            [texts_input(grpcclient, "text", ["a", "b"] * 2, shape=[2, 2])],
            None,
            "shape [N]",
        ),
        "blank text": (
            "tiny-bert-classifier",
            [texts_input(grpcclient, "text", [" "])],
            None,
            "empty",
        ),
        "bad parameter": (
            "tiny-bert-classifier",
            [texts_input(grpcclient, "text", ["hi"])],
            {"top_k": 0},
            "parameters.top_k",
        ),
        "unknown parameter": (
            "tiny-bert-classifier",
            [texts_input(grpcclient, "text", ["hi"])],
            {"colour": "red"},
            "parameters.colour",
        ),
        "unknown output": (
            "tiny-bert-classifier",
            [texts_input(grpcclient, "text", ["hi"])],
            None,
            "unknown output 'logits'",
        ),
    }


@pytest.mark.parametrize("case", list(_bad_requests()))
def test_bad_tensors_are_invalid_argument(case, grpc_client, url):
    model, inputs, parameters, message = _bad_requests()[case]
    outputs = [grpcclient.InferRequestedOutput("logits")] if case == "unknown output" else None
    with pytest.raises(InferenceServerException) as err:
        grpc_client.infer(model, inputs, parameters=parameters, outputs=outputs)
    assert err.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert message in err.value.message()
    # The same request as v2 REST JSON: a 4xx with {"error"}.
    body = {
        "inputs": [
            {
                "name": i.name(),
                "datatype": i.datatype(),
                "shape": list(i.shape()),
                "data": [1.0, 2.0]
                if i.datatype() == "FP32"
                else ["a", "b", "a", "b"]
                if list(i.shape()) == [2, 2]
                else [" "]
                if case == "blank text"
                else ["hi"],
            }
            for i in inputs
        ],
        "parameters": parameters or {},
    }
    if outputs:
        body["outputs"] = [{"name": "logits"}]
    response = requests.post(f"{url}/v2/models/{model}/infer", json=body, timeout=30)
    assert 400 <= response.status_code < 500
    assert message in response.json()["error"]


def test_triton_priority_is_refused_and_timeout_honoured(grpc_client, http_client, url):
    """Triton's request parameters are not dropped: one priority level here, so another is
    INVALID_ARGUMENT; `timeout` (microseconds) bounds the request like a deadline."""
    text = [texts_input(grpcclient, "text", ["hi"])]
    with pytest.raises(InferenceServerException) as err:
        grpc_client.infer("tiny-bert-classifier", text, priority=2)
    assert err.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert "parameters.priority" in err.value.message()
    assert grpc_client.infer("tiny-bert-classifier", text, priority=0).as_numpy("label") is not None
    with pytest.raises(InferenceServerException) as late:  # 1 µs: over before it can run
        grpc_client.infer("tiny-bert-classifier", text, timeout=1)
    assert late.value.status() == "StatusCode.DEADLINE_EXCEEDED"
    body = {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "data": ["hi"]}]}
    response = requests.post(
        f"{url}/v2/models/tiny-bert-classifier/infer",
        timeout=30,
        json={**body, "parameters": {"timeout": 1}},
    )
    assert response.status_code == 504, response.text
    generous = requests.post(
        f"{url}/v2/models/tiny-bert-classifier/infer",
        timeout=30,
        json={**body, "parameters": {"timeout": 30_000_000}},
    )
    assert generous.status_code == 200, generous.text


def test_raw_contents_that_do_not_match_the_shape_are_invalid_argument(live_server):
    stub = service_pb2_grpc.GRPCInferenceServiceStub(
        grpc.insecure_channel(live_server.grpc_address)
    )
    request = service_pb2.ModelInferRequest(model_name="tiny-bert-classifier")
    request.inputs.add(name="text", datatype="BYTES", shape=[3])
    request.raw_input_contents.append(b"\x02\x00\x00\x00hi")  # one element, not three
    with pytest.raises(grpc.RpcError) as err:
        stub.ModelInfer(request, timeout=30)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "needs 3 elements" in err.value.details()


def test_raw_bytes_encoding_round_trips_and_refuses_truncation():
    from service.kserve.tensors import join_bytes_elements, split_bytes_elements, tensor_from_raw
    from service.runtime.errors import InvalidInput

    elements = [b"", "☕ café".encode(), b"x" * 300]
    raw = join_bytes_elements(elements)
    assert raw[:4] == b"\x00\x00\x00\x00" and split_bytes_elements(raw, "text") == elements
    assert tensor_from_raw("text", "BYTES", [3, 1], raw).data.shape == (3, 1)
    for broken in (raw[:-1], raw[:2], raw + b"\x01"):
        with pytest.raises(InvalidInput):
            tensor_from_raw("text", "BYTES", [3], broken)
    with pytest.raises(InvalidInput, match="needs 8 bytes"):
        tensor_from_raw("x", "FP32", [2], b"\x00" * 6)


# --- health, reflection -----------------------------------------------------------------------


def test_grpc_health_check_is_serving(live_server):
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(live_server.grpc_address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for service in ("", "inference.GRPCInferenceService"):
            response = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
            assert response.status == health_pb2.HealthCheckResponse.SERVING


def test_reflection_lists_the_inference_service(live_server):
    from google.protobuf import descriptor_pb2
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    with grpc.insecure_channel(live_server.grpc_address) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        requests_ = [
            reflection_pb2.ServerReflectionRequest(list_services=""),
            reflection_pb2.ServerReflectionRequest(
                file_containing_symbol="inference.GRPCInferenceService"
            ),
        ]
        listed, files = list(stub.ServerReflectionInfo(iter(requests_), timeout=10))
    services = {s.name for s in listed.list_services_response.service}
    assert {"inference.GRPCInferenceService", "grpc.health.v1.Health"} <= services
    proto = descriptor_pb2.FileDescriptorProto.FromString(
        files.file_descriptor_response.file_descriptor_proto[0]
    )
    methods = {m.name for m in proto.service[0].method}
    assert {
        "ServerLive",
        "ServerReady",
        "ModelReady",
        "ServerMetadata",
        "ModelMetadata",
        "ModelInfer",
    } <= methods


# --- the proto and its stubs ------------------------------------------------------------------


def _compiled_proto(tmp_path: Path):
    from google.protobuf import descriptor_pb2

    out = tmp_path / "v2.desc"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            "-Iservice/kserve/generated=service/kserve/protos",
            f"--descriptor_set_out={out}",
            "service/kserve/generated/grpc_predict_v2.proto",
        ],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    proto = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes()).file[0]
    # protoc records JSON names in descriptor sets; generated Python modules leave them out.
    stack = list(proto.message_type)
    while stack:
        message = stack.pop()
        stack.extend(message.nested_type)
        for field in message.field:
            field.ClearField("json_name")
    return proto


def test_proto_is_wire_compatible_with_tritons(tmp_path):
    """Every message and field of our proto has Triton's number and type (tritonclient's
    descriptors), so the clients built for Triton read what we write."""
    from google.protobuf import descriptor_pb2
    from tritonclient.grpc import model_config_pb2

    ours = _compiled_proto(tmp_path)
    theirs: dict[str, descriptor_pb2.DescriptorProto] = {}
    for module in (service_pb2, model_config_pb2):
        for name, message in module.DESCRIPTOR.message_types_by_name.items():
            proto = descriptor_pb2.DescriptorProto()
            message.CopyToProto(proto)
            theirs[name] = proto

    def fields(message):
        return {f.name: (f.number, f.type, f.label) for f in message.field}

    extensions = {("ModelMetadataResponse", "parameters"), ("TensorMetadata", "parameters")}
    checked = 0
    for message in ours.message_type:
        reference = theirs[message.name]
        pairs = [(message, reference)] + [
            (nested, next(n for n in reference.nested_type if n.name == nested.name))
            for nested in message.nested_type
            if not nested.options.map_entry
        ]
        for mine, triton in pairs:
            for name, spec in fields(mine).items():
                if (mine.name, name) in extensions:
                    continue
                assert fields(triton).get(name) == spec, f"{mine.name}.{name}"
                checked += 1
    assert checked > 60
    rpcs = {m.name: (m.input_type, m.output_type) for m in ours.service[0].method}
    triton_service = service_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    for method in triton_service.methods:
        if method.name in rpcs:
            assert rpcs[method.name] == (
                f".{method.input_type.full_name}",
                f".{method.output_type.full_name}",
            )


def test_generated_stubs_match_the_proto(tmp_path):
    """The committed stubs are what generate_stubs.sh makes from the committed proto."""
    from google.protobuf import descriptor_pb2

    # In a subprocess: our stubs and tritonclient's define the same message names, which one
    # descriptor pool cannot hold twice.
    code = (
        "import sys; from service.kserve.generated import grpc_predict_v2_pb2 as pb; "
        "sys.stdout.buffer.write(pb.DESCRIPTOR.serialized_pb)"
    )
    generated = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, check=True, capture_output=True
    ).stdout
    assert descriptor_pb2.FileDescriptorProto.FromString(generated) == _compiled_proto(tmp_path)


# --- one data plane: batches and metrics shared across protocols --------------------------------


def _metric(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


@pytest.fixture(scope="module")
def batching_server(tiny_store, tmp_path_factory):
    """One classifier, a 300 ms window for an idle model to gather company, a queue of 2."""
    from loadtests.server_process import start_server

    server = start_server(
        tiny_store,
        tmp_path_factory.mktemp("kserve") / "server.log",
        extra_env={
            "NLP_MODELS_SERVE": "tiny-bert-classifier",
            "NLP_BATCHING_MAX_WAIT_MS": "300",
            "NLP_BATCHING_MAX_QUEUE": "2",
        },
    )
    yield server
    server.stop()


def test_grpc_and_http_requests_arriving_together_share_one_batch(batching_server):
    model = "tiny-bert-classifier"
    metrics_url = f"{batching_server.url}/metrics"
    before = requests.get(metrics_url, timeout=10).text
    grpc_client = grpcclient.InferenceServerClient(batching_server.grpc_address)
    http_client = httpclient.InferenceServerClient(batching_server.url.removeprefix("http://"))
    done = threading.Event()
    results: list = []
    grpc_client.async_infer(
        model,
        [texts_input(grpcclient, "text", [SENTENCES[0]])],
        callback=lambda result, error: (results.append((result, error)), done.set()),
    )
    over_http = http_client.infer(model, [texts_input(httpclient, "text", [SENTENCES[1]])])
    assert done.wait(30)
    ((over_grpc, error),) = results
    assert error is None
    assert over_grpc.as_numpy("label").shape == over_http.as_numpy("label").shape == (1, 1)
    after = requests.get(metrics_url, timeout=10).text

    def delta(name: str, **labels: str) -> float:
        return _metric(after, name, **labels) - _metric(before, name, **labels)

    # One batch holding two inputs: one from each protocol.
    assert delta("nlp_batch_size_count", model=model) == 1
    assert delta("nlp_batch_size_sum", model=model) == 2
    assert delta("bentoml_service_adaptive_batch_size_sum", runner_name=model) == 2
    assert delta("nlp_requests_total", model=model, protocol="grpc", outcome="ok") == 1
    assert delta("nlp_requests_total", model=model, protocol="http", outcome="ok") == 1
    grpc_client.close()
    http_client.close()


def test_overload_is_resource_exhausted_and_429(batching_server):
    three = ["one", "two", "three"]  # more inputs than the queue holds
    client = grpcclient.InferenceServerClient(batching_server.grpc_address)
    with pytest.raises(InferenceServerException) as err:
        client.infer("tiny-bert-classifier", [texts_input(grpcclient, "text", three)])
    assert err.value.status() == "StatusCode.RESOURCE_EXHAUSTED"
    client.close()
    response = requests.post(
        f"{batching_server.url}/v2/models/tiny-bert-classifier/infer",
        timeout=30,
        json={"inputs": [{"name": "text", "shape": [3], "datatype": "BYTES", "data": three}]},
    )
    assert response.status_code == 429 and response.headers["Retry-After"]
    metrics = requests.get(f"{batching_server.url}/metrics", timeout=10).text
    assert _metric(metrics, "nlp_requests_total", protocol="grpc", outcome="overload") == 1
    assert _metric(metrics, "nlp_requests_total", protocol="http", outcome="overload") == 1
