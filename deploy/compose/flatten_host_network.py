"""docker-compose.yml + host-network.yml, flattened into one file that docker-compose 1.29 runs.

An override file cannot remove the base file's `ports:`, and docker refuses published ports on
host networking; so resolve both files with `docker-compose config` (variables filled, paths
absolute) and drop `ports`/`expose` from the services on host (or no) networking.

    python3 deploy/compose/flatten_host_network.py > /tmp/compose-host.yml
    docker-compose -f /tmp/compose-host.yml --project-directory . up -d nlp-serving prometheus
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
FILES = [ROOT / "docker-compose.yml", ROOT / "deploy" / "compose" / "host-network.yml"]


def flatten(
    compose: str = "docker-compose",
    env: dict[str, str] | None = None,
    profiles: tuple[str, ...] = ("scale",),
) -> str:
    command = [compose, "--project-directory", str(ROOT)]
    for path in FILES:
        command += ["-f", str(path)]
    for profile in profiles:
        command += ["--profile", profile]
    resolved = subprocess.run(
        [*command, "config"],
        env=env or os.environ,
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    config = yaml.safe_load(resolved)
    for service in config["services"].values():
        if service.get("network_mode") in {"host", "none"}:
            service.pop("ports", None)
            service.pop("expose", None)
    return yaml.safe_dump(config, sort_keys=False)


if __name__ == "__main__":
    sys.stdout.write(flatten())
