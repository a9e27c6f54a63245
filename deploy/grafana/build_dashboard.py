"""Write the Grafana dashboard from the task registry: one row per registered task.

A task's row is one of two templates in `dashboard-parts.json` (a batched task's: throughput,
latency, queue vs tokenization vs inference, batch size, tokens/s, errors; a streaming task's:
the same with time to first token instead of batch size), filled with the task's name, so a
new task gets its row by running this script, and `tests/test_dashboard.py` fails while the
committed dashboard differs from what it writes. The header and the overview row are kept as
written in the parts file.

    python deploy/grafana/build_dashboard.py      # rewrites dashboards/nlp-serving.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
PARTS = HERE / "dashboard-parts.json"
DASHBOARD = HERE / "dashboards" / "nlp-serving.json"
ROW_HEIGHT = 15  # a row's title bar (1) and two lines of panels (7 each)
# Streaming tasks are served by the generation adapters rather than by routes of their own.
STREAM_ROUTES = "TGI /generate, OpenAI /v1/*, KServe v2 generate"


def row_title(spec: Any) -> str:
    from service.runtime.task import route_path

    human = spec.name.replace("-", " ").capitalize()
    routes = ", ".join(route_path(spec, r) for r in spec.routes) or STREAM_ROUTES
    return f"{human} ({routes}): {spec.name}"


def _fill(value: Any, task: str, title: str) -> Any:
    """The template with `{task}` and `{title}` replaced in every string."""
    if isinstance(value, str):
        return value.replace("{title}", title).replace("{task}", task)
    if isinstance(value, list):
        return [_fill(v, task, title) for v in value]
    if isinstance(value, dict):
        return {k: _fill(v, task, title) for k, v in value.items()}
    return value


def build() -> dict[str, Any]:
    from service.runtime.registry import TASKS

    parts = json.loads(PARTS.read_text(encoding="utf-8"))
    panels: list[dict[str, Any]] = [dict(p) for p in parts["overview"]]
    y = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in panels)
    # Batched tasks by name, then streaming ones: an order that does not depend on which task
    # module happened to be imported first.
    specs = sorted(TASKS.values(), key=lambda s: (s.streams, s.name))
    for spec in specs:
        template = parts["streamed" if spec.streams else "batched"]
        for panel in _fill(template, spec.name, row_title(spec)):
            panel["gridPos"]["y"] += y
            panels.append(panel)
        y += ROW_HEIGHT
    numbered = [{"id": i, **p} for i, p in enumerate(panels, start=1)]
    return {**parts["header"], "panels": numbered}


def render() -> str:
    return json.dumps(build(), indent=2, ensure_ascii=False) + "\n"


def main() -> None:
    sys.path.insert(0, str(ROOT))
    DASHBOARD.write_text(render(), encoding="utf-8")
    print(f"wrote {DASHBOARD.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
