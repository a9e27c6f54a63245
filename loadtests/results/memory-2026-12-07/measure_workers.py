"""RSS and PSS (MB) of each worker of a two-worker server of the `local` profile, at ready.

    cd /tmp && PYTHONPATH=TREE BENTOML_HOME=STORE_HOME python measure_workers.py PREPARED_DIR STARTS

PREPARED_DIR as in measure_start.py ("" for a tree without the setting). Memory-mapped weights
are page cache: workers that map the same prepared graph share it too.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

import psutil

from loadtests.server_process import start_server


def main() -> None:
    home = Path(os.environ["BENTOML_HOME"])
    env = {"PROFILE": "local", "NLP_SERVER_WORKERS": "2"}
    if sys.argv[1]:
        env["NLP_MODELS_PREPARED_GRAPHS_DIR"] = sys.argv[1]
    for _ in range(int(sys.argv[2])):
        logs = Path(tempfile.mkdtemp())
        server = start_server(home, logs / "server.log", env, timeout=600.0)
        try:
            time.sleep(3.0)
            root = psutil.Process(server.process.pid)
            children = root.children(recursive=True)
            workers = [p for p in children if "worker" in " ".join(p.cmdline())]
            sizes = [p.memory_full_info() for p in workers]
            print(json.dumps([(round(m.rss / 1e6, 1), round(m.pss / 1e6, 1)) for m in sizes]))
        finally:
            server.stop()


if __name__ == "__main__":
    main()
