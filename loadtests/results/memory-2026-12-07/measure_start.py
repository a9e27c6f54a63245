"""Seconds from process start to ready for the `local` profile, one start per label given.

    cd /tmp && PYTHONPATH=TREE BENTOML_HOME=STORE_HOME python measure_start.py PREPARED_DIR LABEL...

PREPARED_DIR: `models.prepared_graphs_dir` for the server ("" for a tree without the setting);
the first start into an empty folder builds the prepared graphs, the next ones find them.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

from loadtests.server_process import start_server


def main() -> None:
    home = Path(os.environ["BENTOML_HOME"])
    env = {"PROFILE": "local"}
    if sys.argv[1]:
        env["NLP_MODELS_PREPARED_GRAPHS_DIR"] = sys.argv[1]
    timings = []
    for label in sys.argv[2:] or ["start"]:
        logs = Path(tempfile.mkdtemp())
        started = time.perf_counter()
        server = start_server(home, logs / "server.log", env, timeout=600.0)
        timings.append((label, round(time.perf_counter() - started, 1)))
        server.stop()
    print(json.dumps(timings))


if __name__ == "__main__":
    main()
