"""The chart's Grafana dashboard and ServiceMonitor: rendered objects, and the dashboard's queries
checked against the series the operator's metrics registry really exports."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from hpo_operator.core.series import StudySeries
from hpo_operator.shell.metrics import Metrics
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from tests.chart.test_chart import by_kind, one, render, schema_error
from tests.harness.helm import Helm

DASHBOARD = (
    Path(__file__).resolve().parents[2] / "charts" / "hpo-operator" / "dashboards" / "hpo-operator.json"
)
PER_STUDY = {
    "hpo_study_phase",
    "hpo_study_trials",
    "hpo_study_trials_budget",
    "hpo_study_running_trials",
    "hpo_study_best_value",
    "hpo_study_last_trial_duration_seconds",
}


def exported() -> dict[str, set[str]]:
    """Every sample name the operator's registry exports with one study, with its labels."""
    metrics = Metrics()
    series = StudySeries(
        budget=4,
        trials=(("waiting", 0), ("running", 1), ("complete", 2), ("pruned", 1), ("failed", 0)),
        running=1,
        best=("score", 0.5),
        last_duration=12.0,
    )
    metrics.set_series("ns/demo", series)
    metrics.set_phase("ns/demo", "Running")  # and nothing else: what a fresh operator with one study exports
    names: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(generate_latest(metrics.registry).decode()):
        for sample in family.samples:
            names.setdefault(sample.name, set()).update(sample.labels)
    return names


def queries(dashboard: dict[str, Any]) -> list[str]:
    out = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    out += [v["definition"] for v in dashboard["templating"]["list"] if v["type"] == "query"]
    return out


def test_every_dashboard_query_uses_series_and_labels_the_operator_exports() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    names = exported()
    used: set[str] = set()
    for expr in queries(dashboard):
        metrics = set(re.findall(r"\bhpo_[a-z_]+\b", expr))
        assert metrics, f"a query that plots none of the operator's series: {expr}"
        unknown = metrics - set(names)
        assert not unknown, f"{expr} uses {unknown}, which the operator does not export"
        used |= metrics
        labels = set().union(*(names[m] for m in metrics)) | {"pod"}  # pod: added by the scrape
        for group in re.findall(r"\bby \(([^)]*)\)", expr):
            for label in (x.strip() for x in group.split(",")):
                assert label in labels, f"{expr} groups by {label!r}, which no series of it carries"
        for label in re.findall(r"[{,]\s*([a-z_]+)=~?\"", expr):
            assert label in labels, f"{expr} selects on {label!r}, which no series of it carries"
    assert used >= PER_STUDY, f"per-study series the dashboard does not plot: {PER_STUDY - used}"
    assert {v["name"] for v in dashboard["templating"]["list"]} == {"datasource", "namespace", "study"}


def test_dashboard_json_is_a_grafana_dashboard_with_unique_panel_ids() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] == "hpo-operator" and dashboard["title"]
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
            assert [t["refId"] for t in panel["targets"]] == [
                chr(65 + i) for i in range(len(panel["targets"]))
            ]


def test_no_dashboard_configmap_by_default(helm: Helm, chart: Path) -> None:
    assert not [d for d in by_kind(render(helm, chart), "ConfigMap") if "grafana" in d["metadata"]["name"]]


def test_the_dashboard_configmap_carries_the_sidecar_label_and_the_dashboard(helm: Helm, chart: Path) -> None:
    docs = render(helm, chart, "metrics.grafanaDashboard.enabled=true")
    cm = one(docs, "ConfigMap", "rel-hpo-operator-grafana-dashboard")
    assert cm["metadata"]["namespace"] == "hpo-system"
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert cm["metadata"]["labels"]["app.kubernetes.io/instance"] == "rel"
    assert json.loads(cm["data"]["hpo-operator.json"]) == json.loads(DASHBOARD.read_text())

    # Another sidecar's label, its namespace and folder annotation.
    docs = render(
        helm,
        chart,
        "metrics.grafanaDashboard.enabled=true",
        "metrics.grafanaDashboard.label=dashboards.example.com/load",
        "metrics.grafanaDashboard.labelValue=yes",
        "metrics.grafanaDashboard.namespace=monitoring",
        "metrics.grafanaDashboard.annotations.grafana_folder=HPO",
    )
    cm = one(docs, "ConfigMap", "rel-hpo-operator-grafana-dashboard")
    assert cm["metadata"]["namespace"] == "monitoring"
    assert cm["metadata"]["labels"]["dashboards.example.com/load"] == "yes"
    assert "grafana_dashboard" not in cm["metadata"]["labels"]
    assert cm["metadata"]["annotations"] == {"grafana_folder": "HPO"}


def test_the_dashboard_needs_metrics_and_a_label_kubernetes_accepts(helm: Helm, chart: Path) -> None:
    message = schema_error(helm, chart, "metrics.enabled=false", "metrics.grafanaDashboard.enabled=true")
    assert "metrics.grafanaDashboard.enabled needs metrics.enabled" in message
    message = schema_error(helm, chart, "metrics.grafanaDashboard.label=bad label")
    assert "/metrics/grafanaDashboard/label" in message


def test_the_service_monitor_scrapes_the_metrics_port_keeping_the_studys_namespace_label(
    helm: Helm, chart: Path
) -> None:
    docs = render(
        helm,
        chart,
        "metrics.serviceMonitor.enabled=true",
        "metrics.serviceMonitor.interval=15s",
        "metrics.serviceMonitor.labels.release=prometheus",
    )
    monitor = one(docs, "ServiceMonitor", "rel-hpo-operator")
    service = one(docs, "Service", "rel-hpo-operator-metrics")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": ["hpo-system"]}
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    (endpoint,) = monitor["spec"]["endpoints"]
    # hpo_study_* carry the HPOStudy's namespace: without honorLabels Prometheus would rename it
    # exported_namespace and put the operator's namespace in its place.
    assert endpoint == {
        "port": "metrics",
        "path": "/metrics",
        "honorLabels": True,
        "interval": "15s",
        "scrapeTimeout": "10s",
    }
