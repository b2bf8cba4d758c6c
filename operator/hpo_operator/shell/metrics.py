"""Prometheus metrics of the operator (``HPO_METRICS_PORT``, ``/metrics``).

Operator-wide:

==========================================  =======================================================
``hpo_studies{phase}``                      HPOStudies this operator runs, by phase
``hpo_trials_started_total``                trials asked (a retry is not a new trial)
``hpo_trials_finished_total{state}``        trials finished: ``complete``, ``pruned``, ``failed``
``hpo_trial_retries_total``                 runs started again for a failed attempt
``hpo_reconcile_errors_total{kind}``        reconciles that failed: ``spec``, ``storage``, ``api``, ``other``
``hpo_reconcile_seconds``                   how long a reconcile takes
``hpo_operator_leader``                     1 while this replica acts (leads, or runs alone), 0 on standby
==========================================  =======================================================

Per study, labelled ``namespace`` and ``study`` (the HPOStudy's name), from its last reconcile, and
removed when the HPOStudy is deleted (:func:`hpo_operator.core.series.study_series` computes them):

=====================================================  ============================================
``hpo_study_phase{namespace,study,phase}``             1 for the study's phase, 0 for the others
``hpo_study_trials{namespace,study,state}``            trials by state: ``waiting``, ``running``,
                                                       ``complete``, ``pruned``, ``failed``
``hpo_study_trials_budget{namespace,study}``           ``spec.trials.total``
``hpo_study_running_trials{namespace,study}``          trials whose pod is Pending or Running now
``hpo_study_best_value{namespace,study,metric}``       the best trial's value (single objective)
``hpo_study_last_trial_duration_seconds{...}``         start to end of the trial that finished last
=====================================================  ============================================
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from hpo_operator.core.series import StudySeries

PHASES = ("Pending", "Running", "Suspended", "Succeeded", "Failed")
FINISHED = {"COMPLETE": "complete", "PRUNED": "pruned", "FAIL": "failed"}
ERROR_KINDS = ("spec", "storage", "api", "other")
STUDY = ("namespace", "study")


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.studies = Gauge(
            "hpo_studies", "HPOStudies this operator runs, by phase", ["phase"], registry=self.registry
        )
        self.trials_started = Counter("hpo_trials_started", "Trials asked", registry=self.registry)
        self.trials_finished = Counter(
            "hpo_trials_finished", "Trials finished, by final state", ["state"], registry=self.registry
        )
        self.retries = Counter(
            "hpo_trial_retries", "Runs started again after a failed attempt", registry=self.registry
        )
        self.reconcile_errors = Counter(
            "hpo_reconcile_errors", "Reconciles that failed, by kind", ["kind"], registry=self.registry
        )
        self.reconcile_seconds = Histogram(
            "hpo_reconcile_seconds",
            "Duration of one reconcile of one study",
            registry=self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        )
        self.leader = Gauge(
            "hpo_operator_leader",
            "1 while this operator replica acts on studies (the leader, or the only replica), 0 on standby",
            registry=self.registry,
        )
        self.leader.set(1)
        for phase in PHASES:
            self.studies.labels(phase).set(0)
        for state in FINISHED.values():
            self.trials_finished.labels(state)
        for kind in ERROR_KINDS:  # exported as 0 from the start: a rate() of a missing series is empty
            self.reconcile_errors.labels(kind)
        self._lock = threading.Lock()
        self._phases: dict[str, str] = {}
        self._series: dict[str, StudySeries] = {}
        self.registry.register(_StudyCollector(self))

    def set_phase(self, key: str, phase: str | None) -> None:
        """The phase of one study (``namespace/name``), reflected in ``hpo_studies`` and
        ``hpo_study_phase``; ``None``: forget the study, every ``hpo_study_*`` series of it included."""
        with self._lock:
            if phase is None:
                self._phases.pop(key, None)
                self._series.pop(key, None)
            else:
                self._phases[key] = phase
            counts = {p: 0 for p in PHASES}
            for p in self._phases.values():
                counts[p] = counts.get(p, 0) + 1
            for p, n in counts.items():
                self.studies.labels(p).set(n)

    def set_series(self, key: str, series: StudySeries) -> None:
        """One study's numbers (``namespace/name``) after a reconcile: its ``hpo_study_*`` series."""
        with self._lock:
            self._series[key] = series

    def finished(self, state: str) -> None:
        label = FINISHED.get(state)
        if label:
            self.trials_finished.labels(label).inc()

    def serve(self, port: int) -> None:
        if port:
            start_http_server(port, registry=self.registry)

    def snapshot(self) -> tuple[dict[str, str], dict[str, StudySeries]]:
        with self._lock:
            return dict(self._phases), dict(self._series)


class _StudyCollector(Collector):
    """The ``hpo_study_*`` families, built at each scrape from the studies known now: a deleted study
    has no series left to go stale."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[GaugeMetricFamily]:
        phases, all_series = self.metrics.snapshot()
        phase = GaugeMetricFamily(
            "hpo_study_phase", "1 for the HPOStudy's phase, 0 for the others", labels=[*STUDY, "phase"]
        )
        trials = GaugeMetricFamily(
            "hpo_study_trials", "Trials of the study by state", labels=[*STUDY, "state"]
        )
        budget = GaugeMetricFamily("hpo_study_trials_budget", "spec.trials.total of the study", labels=STUDY)
        running = GaugeMetricFamily(
            "hpo_study_running_trials", "Trials of the study whose pod is Pending or Running", labels=STUDY
        )
        best = GaugeMetricFamily(
            "hpo_study_best_value",
            "The best trial's value (single-objective studies), labelled with the objective's metric",
            labels=[*STUDY, "metric"],
        )
        duration = GaugeMetricFamily(
            "hpo_study_last_trial_duration_seconds",
            "Seconds from start to end of the study's trial that finished last",
            labels=STUDY,
        )
        for key in sorted(set(phases) | set(all_series)):
            ids = key.split("/", 1)
            if key in phases:
                for p in PHASES:
                    phase.add_metric([*ids, p], 1.0 if phases[key] == p else 0.0)
            series = all_series.get(key)
            if series is None:
                continue
            for state, n in series.trials:
                trials.add_metric([*ids, state], n)
            budget.add_metric(ids, series.budget)
            running.add_metric(ids, series.running)
            if series.best is not None:
                best.add_metric([*ids, series.best[0]], series.best[1])
            if series.last_duration is not None:
                duration.add_metric(ids, series.last_duration)
        yield from (phase, trials, budget, running, best, duration)
