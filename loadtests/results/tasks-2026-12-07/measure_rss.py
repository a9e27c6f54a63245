"""Worker RSS of a profile's server, at ready (every model loaded and warmed up), for the
README's before/after table of issue #17. Run from the tree being measured:

    cd TREE && BENTOML_HOME=STORE PYTHONPATH=$PWD python \
        THIS_CHECKOUT/loadtests/results/tasks-2026-12-07/measure_rss.py PROFILE RUNS

(the script only imports `loadtests.server_process` and `loadtests.bench.suite`, which the
measured tree has)

It starts the real server (`loadtests.server_process.start_server`, one worker) RUNS times and
prints the median RSS of the supervisor and of the worker, in MB (psutil, whole process tree).
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from loadtests.bench.suite import process_tree_rss_mb
from loadtests.server_process import start_server


def main() -> None:
    profile, runs = sys.argv[1], int(sys.argv[2])
    home = Path(os.environ["BENTOML_HOME"])
    samples: dict[str, list[float]] = {}
    for _ in range(runs):
        log = Path(tempfile.mkdtemp()) / "server.log"
        server = start_server(home, log, extra_env={"PROFILE": profile}, timeout=600.0)
        try:
            time.sleep(2.0)  # let start-up garbage settle
            for key, value in process_tree_rss_mb(server.process.pid).items():
                samples.setdefault(key, []).append(value)
        finally:
            server.stop()
    print(json.dumps({k: round(statistics.median(v), 1) for k, v in samples.items()}))


if __name__ == "__main__":
    main()
