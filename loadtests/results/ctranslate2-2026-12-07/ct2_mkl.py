"""CTranslate2's GEMM backend on this CPU: run once per `CT2_USE_MKL` setting (README, "Its GEMM
backend"); `CT2_VERBOSE=1` prints what it picked.

    for v in "" 1 0; do
        CT2_VERBOSE=1 CT2_USE_MKL=$v python loadtests/results/ctranslate2-2026-12-07/ct2_mkl.py
    done
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
    from transformers import AutoTokenizer

    from loadtests.bench import translation_suite as ts

    tokenizer = AutoTokenizer.from_pretrained(DECODING / "t5-small-random")
    texts = [ts.PREFIXES["t5"] + s for s in ts.bench_sentences(8)]
    sources = [tokenizer.convert_ids_to_tokens(tokenizer.encode(t)) for t in texts]
    for precision, compute_type in (("fp32", "float32"), ("int8", "int8")):
        translator = ctranslate2.Translator(
            str(DECODING / f"t5-small-random-ct2-{precision}"),
            compute_type=compute_type,
            intra_threads=2,
        )

        def rate(batch: list, translator=translator) -> float:
            started = time.perf_counter()
            translator.translate_batch(
                batch, beam_size=1, max_decoding_length=48, min_decoding_length=48
            )
            return len(batch) / (time.perf_counter() - started)

        rate(sources)
        one = statistics.median(rate(sources[:1]) for _ in range(5))
        eight = statistics.median(rate(sources) for _ in range(3))
        print(f"{precision} batch 1 {one:.2f} sent/s, batch 8 {eight:.2f} sent/s", flush=True)


if __name__ == "__main__":
    main()
