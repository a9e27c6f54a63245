"""Export a Hugging Face checkpoint to an ONNX serving folder with Optimum.

A serving folder is what the torch-free runtime loads: the ONNX graph(s), `tokenizer.json`
(converted when the checkpoint only has a slow tokenizer), the config files and, for
sentence-transformers checkpoints, their pooling config.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from service.runtime.registry import TASKS

# Our task names -> Optimum exporter tasks (KV cache for every generative model), as each task
# declares them (`ExportFacts` in its module).
OPTIMUM_TASKS = {name: spec.export.optimum_task for name, spec in TASKS.items()}

# Files a sentence-transformers checkpoint keeps beside the weights; the runtime reads pooling
# and normalisation from them.
SENTENCE_TRANSFORMERS_FILES = (
    "modules.json",
    "sentence_bert_config.json",
    "1_Pooling",
    "2_Normalize",
)


def export_onnx(checkpoint: Path, out: Path, task: str) -> Path:
    """Run Optimum's exporter for `task` and complete the folder for the runtime."""
    from optimum.exporters.onnx import main_export

    checkpoint, out = Path(checkpoint), Path(out)
    main_export(
        str(checkpoint),
        str(out),
        task=OPTIMUM_TASKS[task],
        do_validation=False,
        trust_remote_code=False,
    )
    # Marian checkpoints ship only SentencePiece files: give the runtime a tokenizer.json.
    if (checkpoint / "source.spm").exists() and not (checkpoint / "tokenizer.json").exists():
        from models.marian_tokenizer import convert_marian_tokenizer

        convert_marian_tokenizer(checkpoint, out)
    for name in SENTENCE_TRANSFORMERS_FILES:
        src = checkpoint / name
        if src.is_dir():
            shutil.copytree(src, out / name, dirs_exist_ok=True)
        elif src.exists():
            shutil.copy2(src, out / name)
    return out
