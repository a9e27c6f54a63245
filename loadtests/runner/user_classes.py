"""What the runner knows about each task: the Locust user classes that exercise it (by the task
registry's names; `tests/test_task_registry.py` checks every task has one) and how their
request names read. The runner does not import the registry: it runs beside Locust, which must
not share a process with the service's imports."""

from __future__ import annotations

# User class (loadtests/locustfile.py) -> the task the service must serve for it.
USER_CLASSES = {
    "ClassifyUser": "text-classification",
    "EmbedUser": "feature-extraction",
    "AnswerUser": "question-answering",
    "FillMaskUser": "fill-mask",
    "RerankUser": "text-ranking",
    "ZeroShotUser": "zero-shot-classification",
    "NerUser": "token-classification",
    "GenerateUser": "text-generation",
    "GenerateStreamUser": "text-generation",
    "TranslateUser": "translation",
    "SummarizeUser": "summarization",
    "Text2TextUser": "text2text-generation",
    "OpenAIUser": "text-generation",
    "KServeGrpcUser": "text-classification",
}
# The one user class that speaks gRPC: it runs only when a gRPC address is known.
GRPC_USER = "KServeGrpcUser"


def served_classes(served_tasks: set[str], grpc: str | None) -> list[str]:
    """The user classes whose task the service serves (the gRPC one only with an address)."""
    return [
        c for c, task in USER_CLASSES.items() if task in served_tasks and (c != GRPC_USER or grpc)
    ]


def request_type(name: str) -> str:
    """The protocol a request name stands for, as the summary's table shows it."""
    return (
        "grpc" if name.startswith("ModelInfer") else ("SSE" if name.endswith("stream") else "POST")
    )
