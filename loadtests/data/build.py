"""Build the load-test payload files from the project's English corpus, reproducibly.

Source: `models/data/sentences_en.tsv` — 4,000 real English sentences (movie-review snippets,
tweets, Amazon product-review snippets, New York Times editorial snippets) with their VADER
human sentiment ratings, from the `vaderSentiment` distribution (C.J. Hutto and E. Gilbert,
ICWSM 2014), MIT licence. Nothing here is invented text: contexts and prompts are runs of
consecutive corpus sentences; questions are templates around words taken from them.

Writes, next to this file:
- `qa.jsonl`: {"question", "context", "answer_sentence", "words"} — contexts of 6 to 48
  consecutive sentences of one source (about 100 to 1,400 words), long enough that most need
  several windows of a 384-token reader (and many windows of the tiny profile's 128).
- `prompts.jsonl`: {"prompt", "words", "kind"} — prompts of 1 to 10 sentences for completions,
  varied from a few words to a few hundred.
- `chats.jsonl`: {"messages", "words"} — one- and three-turn conversations
  (user/assistant/user).

    python -m loadtests.data.build        # rewrites the three files (seeded: same output)
"""

from __future__ import annotations

import csv
import json
import random
import re
from pathlib import Path

HERE = Path(__file__).resolve().parent
CORPUS = HERE.parents[1] / "models" / "data" / "sentences_en.tsv"
SEED = 20261126
_STOPWORDS = """a an and are as at be but by for from has have he her his i if in into is it
its just me my no not of on or our she so than that the their them then there these they this to
too was we were what when which who will with would you your very really much more most only all
can could do does did been being had some any out up about like one get got"""
STOPWORDS = set(_STOPWORDS.split())


def corpus_sentences() -> list[dict[str, str]]:
    """The corpus rows in file order: {"source", "sentiment", "text"} (no quoting in the file)."""
    with CORPUS.open(encoding="utf-8") as f:
        rows = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    return [r for r in rows if r["text"].strip()]


def _keyword(sentence: str) -> str | None:
    """A content word of the sentence to ask about: a capitalised name if any, else the longest
    word that is not a stop word."""
    words = re.findall(r"[A-Za-z][A-Za-z'-]{2,}", sentence)
    names = [
        w
        for i, w in enumerate(words)
        if i > 0 and w[0].isupper() and len(w) > 3 and w.lower() not in STOPWORDS
    ]
    if names:
        return names[0]
    content = [w for w in words if w.lower() not in STOPWORDS]
    return max(content, key=len) if content else None


QUESTIONS = [
    "What does the text say about {w}?",
    "What is said about {w}?",
    "Why is {w} mentioned?",
    "How is {w} described?",
    "What happened with {w}?",
    "Which opinion is given about {w}?",
]


def build_qa(rows: list[dict[str, str]], rng: random.Random, n: int = 200) -> list[dict]:
    by_source: dict[str, list[str]] = {}
    for r in rows:
        by_source.setdefault(r["source"], []).append(r["text"].strip())
    sources = sorted(by_source)
    out = []
    while len(out) < n:
        texts = by_source[rng.choice(sources)]
        # Lengths skewed towards shorter documents, with a long tail.
        size = min(48, 6 + int(rng.expovariate(1 / 12)))
        start = rng.randrange(0, len(texts) - size)
        sentences = texts[start : start + size]
        target = rng.choice(sentences)
        word = _keyword(target)
        if word is None:
            continue
        context = " ".join(sentences)
        out.append(
            {
                "question": rng.choice(QUESTIONS).format(w=word),
                "context": context,
                "answer_sentence": target,
                "words": len(context.split()),
            }
        )
    return out


def build_prompts(rows: list[dict[str, str]], rng: random.Random, n: int = 300) -> list[dict]:
    texts = [r["text"].strip() for r in rows]
    out = []
    for _ in range(n):
        size = min(10, 1 + int(rng.expovariate(1 / 2.5)))
        start = rng.randrange(0, len(texts) - size)
        prompt = " ".join(texts[start : start + size])
        kind = "continue"
        if rng.random() < 0.3:
            prompt = f"Review: {prompt}\nSummary:"
            kind = "summarise"
        out.append({"prompt": prompt, "words": len(prompt.split()), "kind": kind})
    return out


CHAT_ASKS = [
    'Is this review positive or negative? "{s}"',
    'Rewrite this more politely: "{s}"',
    'Summarise in one sentence: "{s}"',
    'Reply to this customer: "{s}"',
    'What is the main point here? "{s}"',
]


def build_chats(rows: list[dict[str, str]], rng: random.Random, n: int = 200) -> list[dict]:
    texts = [r["text"].strip() for r in rows]
    out = []
    for _ in range(n):
        first = rng.choice(CHAT_ASKS).format(s=rng.choice(texts))
        messages = [{"role": "user", "content": first}]
        if rng.random() < 0.35:
            messages += [
                {"role": "assistant", "content": rng.choice(texts)},
                {"role": "user", "content": rng.choice(CHAT_ASKS).format(s=rng.choice(texts))},
            ]
        out.append(
            {"messages": messages, "words": sum(len(m["content"].split()) for m in messages)}
        )
    return out


def write_jsonl(path: Path, items: list[dict]) -> None:
    with path.open("w", encoding="utf-8") as f:
        for item in items:
            f.write(json.dumps(item, ensure_ascii=False) + "\n")


def main() -> None:
    rows = corpus_sentences()
    rng = random.Random(SEED)
    for name, items in (
        ("qa.jsonl", build_qa(rows, rng)),
        ("prompts.jsonl", build_prompts(rows, rng)),
        ("chats.jsonl", build_chats(rows, rng)),
    ):
        write_jsonl(HERE / name, items)
        print(f"{HERE / name}: {len(items)} items")


if __name__ == "__main__":
    main()
