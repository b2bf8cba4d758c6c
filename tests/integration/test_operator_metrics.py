"""The operator's per-study metrics on a real control plane: a study's ``hpo_study_*`` series appear on
``/metrics`` of the running operator process while it runs, hold its final numbers once it is done, and
are gone once the HPOStudy is deleted; the chart's Grafana dashboard queries only series found there.

Uses the fixtures of ``conftest.py`` and the helpers of ``operator_env.py``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.operator_env import (
    TRIALS,
    Operator,
    Pods,
    apply,
    load_study,
    study_manifest,
    wait_for,
    wait_phase,
)

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "charts" / "hpo-operator" / "dashboards" / "hpo-operator.json"
Key = tuple[str, tuple[tuple[str, str], ...]]
Samples = dict[Key, float]


def scrape(operator: Operator) -> Samples:
    try:
        text = operator.get(operator.metrics_port, "/metrics")[1]
    except OSError:
        return {}  # not serving yet
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def of_study(
    samples: Samples, namespace: str, name: str
) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """The study's hpo_study_* samples, keyed by name and the labels besides namespace and study."""
    out = {}
    for (metric, labels), value in samples.items():
        d = dict(labels)
        if metric.startswith("hpo_study_") and d.get("namespace") == namespace and d.get("study") == name:
            rest = tuple((k, v) for k, v in labels if k not in ("namespace", "study"))
            out[(metric, rest)] = value
    return out


def test_the_metrics_endpoint_shows_a_studys_series_then_drops_them_when_it_is_deleted(
    cluster: Any, namespace: str, operator: Operator, pods: Pods, storage_url: str
) -> None:
    manifest = study_manifest(
        "watched",
        namespace,
        trials={"total": 4, "parallelism": 2, "maxFailed": 0},
        template={
            "command": ["python", str(TRIALS / "quadratic.py")],
            "env": [{"name": "TRIAL_STEP_SECONDS", "value": "0.6"}],
        },
    )
    apply(cluster, manifest)

    # While it runs: two trials' pods running, the phase Running.
    def running_two() -> dict[Any, float] | None:
        mine = of_study(scrape(operator), namespace, "watched")
        ok = mine.get(("hpo_study_running_trials", ())) == 2
        return mine if ok and mine.get(("hpo_study_phase", (("phase", "Running"),))) == 1 else None

    live = wait_for("hpo_study_running_trials 2 while the study runs", running_two, timeout=90)
    assert live[("hpo_study_trials_budget", ())] == 4
    assert live[("hpo_study_trials", (("state", "running"),))] >= 2

    body = wait_phase(cluster, namespace, "watched", ("Succeeded", "Failed"), timeout=150)
    assert body["status"]["phase"] == "Succeeded", body["status"]
    trials = load_study(storage_url, body).get_trials()

    # Done: the final numbers, as the storage has them.
    def final() -> dict[Any, float] | None:
        mine = of_study(scrape(operator), namespace, "watched")
        return mine if mine.get(("hpo_study_phase", (("phase", "Succeeded"),))) == 1 else None

    done = wait_for("the Succeeded phase on /metrics", final, timeout=30)
    assert {s: done[("hpo_study_trials", (("state", s),))] for s in ("complete", "pruned", "failed")} == {
        "complete": 4,
        "pruned": 0,
        "failed": 0,
    }
    assert done[("hpo_study_trials", (("state", "running"),))] == 0
    assert done[("hpo_study_running_trials", ())] == 0
    best = max(t.value for t in trials)
    assert done[("hpo_study_best_value", (("metric", "score"),))] == pytest.approx(best)
    assert done[("hpo_study_best_value", (("metric", "score"),))] == body["status"]["bestTrial"]["value"]
    last = max(trials, key=lambda t: (t.datetime_complete, t.number))
    expected = (last.datetime_complete - last.datetime_start).total_seconds()
    assert done[("hpo_study_last_trial_duration_seconds", ())] == pytest.approx(expected, abs=1e-3)
    assert expected > 4 * 0.6 * 0.9  # four steps of 0.6 s: the duration is the trial's, not zero

    # Every series the chart's Grafana dashboard plots is on the real endpoint.
    exported = {metric for metric, _ in scrape(operator)}
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    used = {m for e in exprs for m in re.findall(r"\bhpo_[a-z_]+\b", e)}
    assert used and used <= exported, (
        f"the dashboard plots series the operator does not export: {used - exported}"
    )

    # Deleted: every hpo_study_* series of the study goes.
    cluster.kubectl("delete", "hps", "watched", "-n", namespace, "--wait=true", "--timeout=60s")
    wait_for(
        "the study's series to go",
        lambda: (s := scrape(operator)) and not of_study(s, namespace, "watched"),
        timeout=30,
    )
    after = scrape(operator)
    assert after[("hpo_studies", (("phase", "Succeeded"),))] == 0
    assert after[("hpo_trials_finished_total", (("state", "complete"),))] == 4  # counters stay
