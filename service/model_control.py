"""Loading and unloading models while serving (the KServe/Triton model repository extension),
the same in every worker.

Each BentoML worker has its own data plane, and a repository request reaches one of them. So the
`bentoml serve` process makes a directory its workers share (`prepare_shared_state`, before they
spawn), and the worker that takes a load or unload request:

1. takes the directory's file lock (one repository change at a time, server-wide);
2. loads the stored model itself (its hashes checked) or stops serving it, so a model that
   cannot load is refused before anything is published;
3. publishes the new set of served models (`served.json`: a generation number and `name: tag`);
4. answers once every live worker has applied that generation (`ack-PID` files), or says which
   ones failed.

Every worker polls `served.json` (a stat every `POLL_S`) and applies a newer generation: it loads
the named versions and stops serving the others. A worker started later (a respawn after a crash)
loads the published set instead of the configured one. Why files: the workers share no memory and
BentoML offers no broadcast between them; a local directory is what they share, and a lock plus
an atomic rename keep it consistent without another service.

Without the shared directory (a data plane used in-process, as in tests), changes apply to this
process only. Requests name models, never paths or files: Triton's `config` and `file:`
overrides are refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from service.dataplane import DataPlane
from service.model_repository import ModelRecord, stored_index, stored_record
from service.runtime.errors import InvalidInput, ModelLoadError, ModelNotFound

STATE_DIR_ENV = "NLP_REPOSITORY_STATE_DIR"
POLL_S = 0.25
APPLY_TIMEOUT_S = 300.0
log = logging.getLogger("service.repository")


def prepare_shared_state() -> None:
    """In the `bentoml serve` process, before workers spawn (they inherit the variable)."""
    os.environ[STATE_DIR_ENV] = tempfile.mkdtemp(prefix="nlp-repository-")


class SharedServedSet:
    """The published set of served models in the workers' shared directory, and which
    generation each worker has applied."""

    def __init__(self, directory: Path | None) -> None:
        self.directory = directory

    @classmethod
    def from_environment(cls) -> SharedServedSet:
        path = os.environ.get(STATE_DIR_ENV)
        return cls(Path(path) if path else None)

    @property
    def _served(self) -> Path:
        assert self.directory is not None
        return self.directory / "served.json"

    def read(self) -> tuple[int, dict[str, str]] | None:
        """(generation, {name: tag}) as last published, or None before the first change."""
        if self.directory is None:
            return None
        try:
            state = json.loads(self._served.read_text())
        except (OSError, ValueError):
            return None
        return int(state["generation"]), dict(state["models"])

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """The server-wide lock of repository changes (a no-op without a shared directory)."""
        if self.directory is None:
            yield
            return
        with open(self.directory / "lock", "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def publish(self, generation: int, models: dict[str, str]) -> None:
        if self.directory is None:
            return
        temporary = self.directory / f".served-{os.getpid()}.json"
        temporary.write_text(json.dumps({"generation": generation, "models": models}))
        temporary.replace(self._served)

    def acknowledge(self, generation: int, error: str | None = None) -> None:
        """This worker applied `generation` (or failed to, saying why)."""
        if self.directory is None:
            return
        temporary = self.directory / f".ack-{os.getpid()}.json"
        temporary.write_text(json.dumps({"generation": generation, "error": error}))
        temporary.replace(self.directory / f"ack-{os.getpid()}.json")

    def behind(self, generation: int) -> tuple[list[int], list[str]]:
        """Live workers that have not applied `generation` yet, and the errors of those that
        could not."""
        if self.directory is None:
            return [], []
        waiting, errors = [], []
        for ack in self.directory.glob("ack-*.json"):
            pid = int(ack.stem.removeprefix("ack-"))
            if not _alive(pid):
                continue
            try:
                state = json.loads(ack.read_text())
            except (OSError, ValueError):
                waiting.append(pid)
                continue
            if state.get("error") and state["generation"] >= generation:
                errors.append(f"worker {pid}: {state['error']}")
            elif state["generation"] < generation:
                waiting.append(pid)
        return waiting, errors


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class ModelControl:
    """One per worker: the repository index, load and unload, and following the changes the
    other workers publish."""

    def __init__(self, plane: DataPlane, shared: SharedServedSet | None = None) -> None:
        self.plane = plane
        self.shared = shared or SharedServedSet(None)
        self.applied = 0
        self._lock = asyncio.Lock()
        self._follower: asyncio.Task[None] | None = None
        self._retiring: set[asyncio.Task[None]] = set()

    # --- start-up -------------------------------------------------------------------------------
    def startup_records(self, configured: list[ModelRecord]) -> list[ModelRecord]:
        """What this worker loads at start: the published set when there is one (a respawned
        worker joins the others as they are now), else the configured models."""
        # Registered before loading: a change published meanwhile waits for this worker too.
        published = self.shared.read()
        self.shared.acknowledge(published[0] if published else 0)
        if published is None:
            return configured
        self.applied, models = published
        by_tag = {record.tag: record for record in configured}
        return [by_tag.get(tag) or stored_record(tag) for tag in models.values()]

    def start(self) -> None:
        """Follow the published set (on the worker's event loop) and say this worker is in it."""
        if self.shared.directory is None:
            return
        self.shared.acknowledge(self.applied)
        self._follower = asyncio.get_running_loop().create_task(self._follow())

    async def stop(self) -> None:
        if self._follower is not None:
            self._follower.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._follower

    # --- the extension --------------------------------------------------------------------------
    def index(self, ready_only: bool = False) -> list[dict[str, Any]]:
        """Every stored model, READY if this server serves it (its served version), else
        UNAVAILABLE; Triton's index entries."""
        served = self.plane.models
        entries = []
        for entry in stored_index():
            model = served.get(entry["name"])
            if model is not None:
                entries.append(
                    {
                        "name": entry["name"],
                        "version": model.record.version,
                        "state": "READY",
                        "reason": "",
                    }
                )
            elif not ready_only:
                entries.append(
                    {
                        "name": entry["name"],
                        "version": entry["version"],
                        "state": "UNAVAILABLE",
                        "reason": "unloaded",
                    }
                )
        return entries

    async def load(self, name: str, parameters: dict[str, Any] | None = None) -> None:
        """Serve the latest stored version of `name` in every worker (a new version replaces the
        served one once its requests are done; the same version is a no-op)."""
        _refuse_overrides(parameters)
        record = await asyncio.to_thread(stored_record, name)
        await self._change(lambda models: {**models, record.name: record.tag}, record)

    async def unload(self, name: str, parameters: dict[str, Any] | None = None) -> None:
        """Stop serving `name` in every worker; requests it holds finish first."""
        for key in parameters or {}:
            if key != "unload_dependents":
                raise InvalidInput(f"unknown unload parameter {key!r}", field=f"parameters.{key}")
        if name not in self.plane.models:
            raise ModelNotFound(f"model {name!r} is not served")
        await self._change(lambda models: {k: v for k, v in models.items() if k != name})

    async def _change(self, edit: Any, record: ModelRecord | None = None) -> None:
        async with self._lock:
            server_wide = self.shared.locked()
            await asyncio.to_thread(server_wide.__enter__)  # blocking: another worker's change
            try:
                published = self.shared.read()
                generation = (published[0] if published else self.applied) + 1
                current = (
                    published[1]
                    if published
                    else {name: served.record.tag for name, served in self.plane.models.items()}
                )
                wanted = edit(current)
                await self._apply(wanted, {record.tag: record} if record else {})
                self.applied = generation
                self.shared.publish(generation, wanted)
                self.shared.acknowledge(generation)
            finally:
                server_wide.__exit__(None, None, None)
            await self._wait_for_workers(generation)

    async def _wait_for_workers(self, generation: int) -> None:
        deadline = time.monotonic() + APPLY_TIMEOUT_S
        while True:
            waiting, errors = self.shared.behind(generation)
            if errors:
                raise ModelLoadError("; ".join(errors))
            if not waiting:
                return
            if time.monotonic() > deadline:
                raise ModelLoadError(
                    f"workers {waiting} have not applied the change after {APPLY_TIMEOUT_S:.0f} s"
                )
            await asyncio.sleep(POLL_S)

    async def _apply(self, wanted: dict[str, str], known: dict[str, ModelRecord]) -> None:
        """Make this worker serve exactly `wanted` ({name: tag})."""
        plane = self.plane
        for name in [n for n in plane.models if n not in wanted]:
            self._retire(plane.uninstall(name))
        for name, tag in wanted.items():
            served = plane.models.get(name)
            if served is not None and served.record.tag == tag:
                continue
            record = known.get(tag) or await asyncio.to_thread(stored_record, tag)
            runtime, seconds = await asyncio.to_thread(plane.load_runtime, record)
            replaced = plane.install(record, runtime, seconds)
            if replaced is not None:
                self._retire(replaced)

    def _retire(self, served: Any) -> None:
        """Close a model once its requests are done, in the background."""
        task = asyncio.get_running_loop().create_task(self.plane.retire(served))
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    async def _follow(self) -> None:
        """Apply what other workers publish."""
        while True:
            await asyncio.sleep(POLL_S)
            published = self.shared.read()
            if published is None or published[0] <= self.applied or self._lock.locked():
                continue
            generation, wanted = published
            async with self._lock:
                try:
                    await self._apply(wanted, {})
                except Exception as err:  # noqa: BLE001 - reported to the requesting worker
                    log.exception("could not apply repository generation %d", generation)
                    self.shared.acknowledge(generation, f"{type(err).__name__}: {err}")
                else:
                    self.shared.acknowledge(generation)
                self.applied = generation


def _refuse_overrides(parameters: dict[str, Any] | None) -> None:
    """Triton's load may carry a model config or files to load from: this server loads stored
    models by name only."""
    for key in parameters or {}:
        raise InvalidInput(
            f"load parameter {key!r} is not supported: models are loaded from "
            "the model store by name (`python -m models build` stores them)",
            field=f"parameters.{key}",
        )
