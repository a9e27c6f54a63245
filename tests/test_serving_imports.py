"""The serving path runs on onnxruntime + tokenizers + numpy: no torch, no transformers."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from loadtests.server_process import ROOT

SERVING_MODULES = [
    "service.runtime.registry",
    "service.dataplane",
    "service.model_repository",
    "service.http.app",
    "service.service",
    "models.store",
    "models.catalog",
]


def test_serving_path_imports_without_torch_or_transformers(tmp_path):
    script = textwrap.dedent(f"""
        import sys
        for blocked in ("torch", "transformers", "optimum", "sentence_transformers"):
            sys.modules[blocked] = None  # any import of these now raises ImportError
        import importlib
        for name in {SERVING_MODULES!r}:
            importlib.import_module(name)
        leaked = [m for m in sys.modules if m.split(".")[0] in
                  ("torch", "transformers", "optimum") and sys.modules[m] is not None]
        assert not leaked, leaked
        print("ok")
    """)
    env = {"BENTOML_HOME": str(tmp_path), "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().endswith("ok")
