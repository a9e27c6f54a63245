"""The Grafana dashboard and the deploy files: they parse, agree with each other, and every
panel queries metrics the running service really exports (checked against a live `/metrics`)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import requests
import yaml

from tests.test_prometheus import prometheus_binary

ROOT = Path(__file__).resolve().parents[1]
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "nlp-serving.json"
DATASOURCES = ROOT / "deploy" / "grafana" / "provisioning" / "datasources" / "prometheus.yml"
PROVIDERS = ROOT / "deploy" / "grafana" / "provisioning" / "dashboards" / "dashboards.yml"
PROMETHEUS = ROOT / "deploy" / "prometheus" / "prometheus.yml"
COMPOSE = ROOT / "docker-compose.yml"

# PromQL functions, aggregations and keywords: identifiers that are not metric names.
PROMQL_WORDS = {
    "sum",
    "min",
    "max",
    "avg",
    "count",
    "stddev",
    "stdvar",
    "topk",
    "bottomk",
    "quantile",
    "count_values",
    "group",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "and",
    "or",
    "unless",
    "bool",
    "offset",
    "inf",
    "nan",
}
# Grafana substitutes these before Prometheus sees the query.
GRAFANA_VARIABLES = {
    "$__rate_interval": "1m",
    "$__interval": "15s",
    "$__range": "1h",
    "$model": ".*",
    "$protocol": ".*",
}


def metric_names(expr: str) -> set[str]:
    """Metric names a PromQL expression selects (label matchers, ranges, strings, grouping
    clauses and function names removed)."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    expr = re.sub(r"\{[^}]*\}", " ", expr)
    expr = re.sub(r"\[[^\]]*\]", " ", expr)
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", expr)
    names = set()
    for match in re.finditer(r"(?<![\w.$])[A-Za-z_:][\w:]*", expr):
        word = match.group(0)
        if word.lower() in PROMQL_WORDS or expr[match.end() :].lstrip().startswith("("):
            continue
        names.add(word)
    return names


def all_panels(dashboard: dict) -> list[dict]:
    panels = []
    for panel in dashboard["panels"]:
        panels.append(panel)
        panels.extend(panel.get("panels", []))  # collapsed rows keep their panels inside
    return panels


def queries(dashboard: dict) -> list[tuple[str, str]]:
    """(panel title, PromQL) of every target."""
    return [
        (panel["title"], target["expr"])
        for panel in all_panels(dashboard)
        for target in panel.get("targets", [])
    ]


@pytest.fixture(scope="module")
def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def test_metric_names_are_read_from_promql():
    assert metric_names(
        "histogram_quantile(0.95, sum by (le) (rate(nlp_request_duration_seconds_bucket"
        '{task="translation",model=~"$model"}[$__rate_interval])))'
    ) == {"nlp_request_duration_seconds_bucket"}
    assert metric_names(
        'sum by (task) (rate(nlp_requests_total{outcome!="ok"}[5m])) / '
        "sum without (outcome) (nlp_requests_total offset 1m) or vector(0)"
    ) == {"nlp_requests_total"}
    assert metric_names("count(max by (model) (nlp_model_info))") == {"nlp_model_info"}


def test_dashboard_parses_and_every_panel_uses_the_provisioned_datasource(dashboard):
    (datasource,) = yaml.safe_load(DATASOURCES.read_text())["datasources"]
    assert datasource["type"] == "prometheus"
    assert dashboard["uid"] and dashboard["title"]
    ids = [panel["id"] for panel in all_panels(dashboard)]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    graphs = [p for p in all_panels(dashboard) if p["type"] != "row"]
    assert len(graphs) >= 20
    for panel in graphs:
        assert panel["datasource"]["uid"] == datasource["uid"], panel["title"]
        assert panel.get("targets"), panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == datasource["uid"], panel["title"]
            assert target["expr"].strip(), panel["title"]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            assert variable["datasource"]["uid"] == datasource["uid"]


def test_the_dashboard_is_generated_from_the_task_registry():
    """A task's row comes from the registry (`deploy/grafana/build_dashboard.py`): the committed
    dashboard is exactly what the script writes, so a new task fails here until it is rerun."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "build_dashboard", ROOT / "deploy" / "grafana" / "build_dashboard.py"
    )
    builder = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(builder)
    assert DASHBOARD.read_text(encoding="utf-8") == builder.render(), (
        "deploy/grafana/dashboards/nlp-serving.json is not what build_dashboard.py writes: "
        "run `python deploy/grafana/build_dashboard.py`"
    )


def test_dashboard_has_one_row_per_task_and_each_row_stays_in_its_task(dashboard):
    from service.runtime.registry import TASKS

    rows: dict[str, list[dict]] = {}
    current = None
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            current = panel["title"]
            rows[current] = list(panel.get("panels", []))
        elif current is not None:
            rows[current].append(panel)
    for task in TASKS:
        (title,) = [t for t in rows if t.endswith(f": {task}")]
        titles = " | ".join(p["title"] for p in rows[title])
        for panel in rows[title]:
            for target in panel["targets"]:
                assert f'task="{task}"' in target["expr"], (task, panel["title"])
        # What the issue asks of every task's row.
        for wanted in (
            "Throughput",
            "p50 / p95 / p99",
            "Queue vs tokenization vs inference",
            "Tokens/s",
            "Errors/s by outcome",
        ):
            assert wanted in titles, (task, wanted)
        generation = TASKS[task].streams
        assert ("Time to first token" in titles) == generation, task
        assert ("Batch size" in titles) == (not generation), task


def _warm_up(url: str) -> None:
    """One request of every kind, so that every labelled series exists in /metrics."""
    calls = [
        ("/classify", {"inputs": "I loved it."}),
        ("/answer", {"inputs": {"question": "Who?", "context": "Bob did."}}),
        ("/embed", {"inputs": "A sentence."}),
        ("/translate", {"inputs": "Hello.", "parameters": {"max_new_tokens": 4}}),
        ("/generate", {"inputs": "Hello", "parameters": {"max_new_tokens": 4}}),
        ("/classify", {"inputs": "word " * 400}),  # an error
    ]
    for path, body in calls:
        requests.post(f"{url}{path}", json=body, timeout=60)


@pytest.fixture(scope="module")
def server(live_server):
    """The session's server: the whole tiny profile."""
    return live_server


def test_every_dashboard_query_names_a_metric_the_service_exports(dashboard, server):
    _warm_up(server.url)
    text = requests.get(f"{server.url}/metrics", timeout=10).text
    exported = {
        re.split(r"[{\s]", line, maxsplit=1)[0]
        for line in text.splitlines()
        if line and not line.startswith("#")
    }
    types = dict(re.findall(r"^# TYPE (\S+) (\S+)$", text, flags=re.MULTILINE))
    used: set[str] = set()
    for title, expr in queries(dashboard):
        names = metric_names(expr)
        assert names, (title, expr)
        for name in names:
            assert name in exported, f"panel {title!r} queries {name}, not in /metrics"
            base = re.sub(r"_(bucket|sum|count)$", "", name)
            if name != base and base in types:
                assert types[base] in {"histogram", "summary"}, (title, name)
            if name.endswith("_bucket"):
                assert types.get(base) == "histogram", (title, name)
        used |= names
    # The stages of a request are all on the dashboard.
    for metric in (
        "nlp_queue_duration_seconds_bucket",
        "nlp_tokenization_duration_seconds_bucket",
        "nlp_inference_duration_seconds_bucket",
        "nlp_batch_size_bucket",
        "nlp_time_to_first_token_seconds_bucket",
        "nlp_time_per_output_token_seconds_bucket",
        "nlp_input_tokens_total",
        "nlp_generated_tokens_total",
        "nlp_requests_total",
        "nlp_model_info",
    ):
        assert metric in used, metric


def test_dashboard_queries_are_valid_promql(dashboard, tmp_path):
    prometheus_binary()  # the Debian package prometheus, which ships promtool
    promtool = shutil.which("promtool")
    # The Debian package that prometheus_binary() installs ships promtool: missing is a failure.
    assert promtool is not None, "promtool missing although the prometheus package is installed"
    rules = []
    for i, (_, expr) in enumerate(queries(dashboard)):
        for variable, value in GRAFANA_VARIABLES.items():
            expr = expr.replace(variable, value)
        rules.append({"record": f"dashboard:query_{i}", "expr": expr})
    path = tmp_path / "rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    done = subprocess.run(
        [promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_deploy_files_parse_and_agree_with_each_other():
    prometheus = yaml.safe_load(PROMETHEUS.read_text())
    (job,) = [j for j in prometheus["scrape_configs"] if j["job_name"] == "nlp-serving"]
    assert job.get("metrics_path", "/metrics") == "/metrics"
    assert job["static_configs"][0]["targets"] == ["nlp-serving:3000"]

    (datasource,) = yaml.safe_load(DATASOURCES.read_text())["datasources"]
    assert datasource["url"] == "http://prometheus:9090"
    (provider,) = yaml.safe_load(PROVIDERS.read_text())["providers"]

    compose = yaml.safe_load(COMPOSE.read_text())
    assert compose["version"] == "3.8"
    services = compose["services"]
    assert {"nlp-serving", "prometheus", "grafana"} <= set(services)
    for name in ("nlp-serving", "prometheus", "grafana"):
        assert services[name]["healthcheck"]["test"], name
    build = services["nlp-serving"]["build"]
    assert (build["context"], build["dockerfile"]) == (".", "Dockerfile")
    assert build["target"] == "serving"  # BuildKit then builds no torch stage for it
    assert "3000:3000" in services["nlp-serving"]["ports"]
    mounts = {}
    for name in ("prometheus", "grafana"):
        for volume in services[name]["volumes"]:
            source, target = volume.split(":")[:2]
            if source.startswith("./"):
                assert (ROOT / source).exists(), volume
                mounts[target] = ROOT / source
    assert mounts["/etc/prometheus/prometheus.yml"] == PROMETHEUS
    assert mounts["/etc/grafana/provisioning"] == DATASOURCES.parents[1]
    assert mounts[provider["options"]["path"]] == DASHBOARD.parent


def test_metrics_reference_documents_every_metric_the_service_defines():
    from prometheus_client import Counter
    from prometheus_client.metrics import MetricWrapperBase

    from service import metrics

    reference = (ROOT / "docs" / "metrics.md").read_text()
    defined = [m for m in vars(metrics).values() if isinstance(m, MetricWrapperBase)]
    assert len(defined) >= 12
    for metric in defined:
        name = metric._name + ("_total" if isinstance(metric, Counter) else "")
        assert f"`{name}`" in reference, name
        for label in metric._labelnames:
            assert label in reference, (name, label)
    assert "docs/metrics.md" in (ROOT / "README.md").read_text()
