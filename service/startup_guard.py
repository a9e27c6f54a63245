"""Bounded start-up: the server stops, non-zero, when its workers keep failing to start.

BentoML's process supervisor (circus) respawns a worker that exits, forever, and a worker that
fails while loading its models exits: the server then never serves and never exits, so neither a
container's restart policy nor Kubernetes' back-off ever sees the failure. (Inside a Bento image,
BENTOML_CONTAINERIZED turns respawning off: the server then idles with no worker at all.)

The `bentoml serve` process watches its own children: a worker that goes away before it marked
itself ready (`mark_worker_ready`, at the end of the service's `__init__`) is a failed start,
whatever the cause (an exception, an import error, a crash, the OOM killer). After
`NLP_MAX_START_FAILURES` (default 3) failed starts, or once no worker is left alive after one, the
server stops its workers and exits with EXIT_CODE.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import signal
import tempfile
import threading
import time
from pathlib import Path

import psutil

STATE_DIR_ENV = "NLP_STARTUP_STATE_DIR"
MAX_FAILURES_ENV = "NLP_MAX_START_FAILURES"
DEFAULT_MAX_FAILURES = 3
EXIT_CODE = 3
# A server with no live worker after a failed start for this long has nothing left to serve
# (respawning is off, or every worker died): longer than circus takes to respawn one.
NO_WORKER_GRACE_S = 5.0

log = logging.getLogger("service.startup")


def mark_worker_ready() -> None:
    """In a worker, once its models are loaded: its exit is no longer a failed start."""
    state = os.environ.get(STATE_DIR_ENV)
    if state:
        (Path(state) / f"ready-{os.getpid()}").touch()


def watch_worker_starts(max_failures: int | None = None, poll_s: float = 0.5) -> None:
    """In the `bentoml serve` process, before it spawns workers (they inherit the state dir)."""
    if max_failures is None:
        max_failures = int(os.environ.get(MAX_FAILURES_ENV, DEFAULT_MAX_FAILURES))
    state = Path(tempfile.mkdtemp(prefix="nlp-startup-"))
    os.environ[STATE_DIR_ENV] = str(state)
    thread = threading.Thread(
        target=_watch, args=(state, max_failures, poll_s), name="nlp-startup-guard", daemon=True
    )
    thread.start()


def _watch(state: Path, max_failures: int, poll_s: float) -> None:
    me = psutil.Process()
    alive: set[int] = set()
    failures = 0
    empty_since: float | None = None
    while True:
        time.sleep(poll_s)
        try:
            children = {child.pid for child in me.children(recursive=False)}
        except psutil.Error:
            continue
        for pid in alive - children:
            if not (state / f"ready-{pid}").exists():
                failures += 1
                log.error(
                    "worker %d exited before it was ready (failed start %d of %d)",
                    pid,
                    failures,
                    max_failures,
                )
        alive = children
        now = time.monotonic()
        empty_since = (empty_since or now) if failures and not children else None
        if failures >= max_failures or (
            empty_since is not None and now - empty_since >= NO_WORKER_GRACE_S
        ):
            log.critical(
                "nlp-serving cannot start: %d worker start(s) failed; stopping with exit code %d",
                failures,
                EXIT_CODE,
            )
            _stop_with(EXIT_CODE)
            return


def _stop_with(code: int, retry_s: float = 2.0, give_up_s: float = 60.0) -> None:
    """SIGTERM ourselves until the supervisor stops, then, as a last resort, exit hard.

    SIGTERM runs the supervisor's graceful stop (the other workers drain and exit); once
    `bentoml serve` returns, the exit status becomes `code` instead of 0. Circus drops a stop
    that arrives while it is respawning workers (its commands are exclusive: the "quit" fails
    with a ConflictError and nothing else happens), which with two failing workers is most of
    the time. A supervisor that took the stop spawns nothing more, so the signal is sent again
    only while new workers keep appearing (a second one during a stop already under way would
    be harmless, but one after circus restored the default handler would end the process with
    the signal instead of `code`); one that has still not stopped after `give_up_s` has its
    children killed and the process exits with `code`.
    """
    atexit.register(os._exit, code)
    me = psutil.Process()
    deadline = time.monotonic() + give_up_s
    os.kill(os.getpid(), signal.SIGTERM)
    seen = _children(me)
    while time.monotonic() < deadline:
        time.sleep(retry_s)
        now = _children(me)
        if now - seen:
            log.warning("the supervisor is still starting workers; asking it to stop again")
            os.kill(os.getpid(), signal.SIGTERM)
        seen |= now
    log.critical("the supervisor did not stop within %.0f s; killing its workers", give_up_s)
    for child in me.children(recursive=True):
        with contextlib.suppress(psutil.Error):
            child.kill()
    os._exit(code)


def _children(me: psutil.Process) -> set[int]:
    try:
        return {child.pid for child in me.children(recursive=False)}
    except psutil.Error:
        return set()
