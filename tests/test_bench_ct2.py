"""The bench's CTranslate2 contender (issue #21) decodes what ours decodes: on the suites' own
tiny checkpoints (T5, Marian with pad last as in opus-mt, Llama), greedy, CTranslate2 and our
served path make the same token ids, so a speed ratio between them compares equal work."""

from __future__ import annotations

import pytest

from loadtests.bench import generation_suite, translation_suite
from loadtests.bench.ct2_contender import Ct2Generator, Ct2Translator, agreement
from service.runtime.tasks.generation import GenerationParameters

pytestmark = [pytest.mark.export_side, pytest.mark.usefixtures("session_defaults_put_back")]


SENTENCES = translation_suite.bench_sentences(6)


@pytest.mark.parametrize("arch", translation_suite.ARCHS)
def test_ctranslate2_translates_to_the_same_tokens_as_ours(arch, tmp_path):
    folders = translation_suite.model_folders(True, arch, cache=tmp_path)
    prefix = translation_suite.PREFIXES[arch]
    theirs = Ct2Translator(folders["checkpoint"], "fp32", 1, translation_suite.NEW_TOKENS)
    ours = translation_suite.ServedTranslation(folders["fp32"], 1, f"ct2-{arch}")
    try:
        same = translation_suite.NEW_TOKENS - 1  # Marian forces eos at the last step
        pairs = [(ours.token_ids(s)[:same], theirs.token_ids(prefix + s)[:same]) for s in SENTENCES]
        timed = theirs.translate([prefix + s for s in SENTENCES[:2]])
    finally:
        ours.close()
        theirs.close()
    assert all(len(a) == same for a, _ in pairs)
    assert agreement(pairs)["identical"] == len(SENTENCES), pairs
    assert timed["tokens"] == translation_suite.NEW_TOKENS and timed["sent/s"] > 0
    # int8: converted and run (its tokens may differ from fp32's on random weights).
    int8 = Ct2Translator(folders["checkpoint"], "int8", 1, translation_suite.NEW_TOKENS)
    try:
        assert len(int8.token_ids(prefix + SENTENCES[0])) == translation_suite.NEW_TOKENS
    finally:
        int8.close()


def test_ctranslate2_generates_the_same_tokens_as_ours(tmp_path):
    _, checkpoint, onnx_dir = generation_suite.model_folders(True, cache=tmp_path)
    prompts = generation_suite.bench_prompts(3)
    theirs = Ct2Generator(checkpoint, "fp32", 1, 12)
    ours = generation_suite.ServedGeneration(onnx_dir, 1)
    try:
        runtime = ours.plane.models[ours.name].runtime
        params = GenerationParameters(max_new_tokens=12, do_sample=False)
        eos = set(runtime.eos_token_ids)
        for prompt in prompts:
            result = runtime.generate([prompt], params)[0]
            produced = [t.id for t in result.tokens if t.id not in eos]
            assert produced and produced == theirs.token_ids(prompt), prompt
        timed = theirs.generate(prompts[:1])
    finally:
        ours.close()
        theirs.close()
    assert timed["tokens"] == 12 and timed["tok/s"] > 0
