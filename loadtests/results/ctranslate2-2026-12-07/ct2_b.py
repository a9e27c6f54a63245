"""CTranslate2 beside torch in one process: t5-small shape, batch 1, sentences/s as the state
of the process changes (README, "Its own process"). CTranslate2 is driven directly here, in
this process, as the suites did before `ct2_contender.py` moved it to a process of its own.

    python loadtests/results/ctranslate2-2026-12-07/ct2_b.py   # after `make bench` built the
                                                               # checkpoint and its conversion
"""

import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))
DECODING = ROOT / ".cache" / "bench" / "decoding"


def main() -> None:
    import ctranslate2
    import torch
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    from loadtests.bench import translation_suite as ts

    torch.set_num_threads(2)
    checkpoint = DECODING / "t5-small-random"
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    translator = ctranslate2.Translator(
        str(DECODING / "t5-small-random-ct2-fp32"), compute_type="float32", intra_threads=2
    )
    texts = [ts.PREFIXES["t5"] + s for s in ts.bench_sentences(8)]
    source = [tokenizer.convert_ids_to_tokens(tokenizer.encode(texts[0]))]

    def measure(label: str) -> None:
        rates, ratio = [], 0.0
        for _ in range(5):
            wall, cpu = time.perf_counter(), time.process_time()
            translator.translate_batch(
                source, beam_size=1, max_decoding_length=48, min_decoding_length=48
            )
            seconds = time.perf_counter() - wall
            rates.append(1 / seconds)
            ratio = (time.process_time() - cpu) / seconds
        print(f"{label}: {statistics.median(rates[1:]):.2f} sent/s, CPU/wall {ratio:.2f}")

    measure("CTranslate2 alone")
    model = AutoModelForSeq2SeqLM.from_pretrained(checkpoint).eval()
    measure("PyTorch model loaded")
    with torch.inference_mode():
        model.generate(
            **tokenizer(texts[:1], return_tensors="pt"),
            max_new_tokens=48,
            min_new_tokens=48,
            num_beams=1,
            do_sample=False,
        )
    time.sleep(1)
    measure("after one PyTorch generate")
    x, w = torch.randn(256, 512), torch.randn(512, 512)
    for _ in range(50):
        x @ w
    measure("after a torch matmul loop")


if __name__ == "__main__":
    main()
