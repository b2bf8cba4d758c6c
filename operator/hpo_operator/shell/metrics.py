"""Prometheus metrics of the operator (``HPO_METRICS_PORT``, ``/metrics``).

=====================================  ==========================================================
``hpo_studies{phase}``                 HPOStudies this operator runs, by phase
``hpo_trials_started_total``           trials asked (a retry is not a new trial)
``hpo_trials_finished_total{state}``   trials finished: ``complete``, ``pruned``, ``failed``
``hpo_trial_retries_total``            runs started again for a failed attempt
``hpo_reconcile_errors_total{kind}``   reconciles that failed: ``spec``, ``storage``, ``api``, ``other``
``hpo_reconcile_seconds``              how long a reconcile takes
=====================================  ==========================================================
"""

from __future__ import annotations

import threading

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

PHASES = ("Pending", "Running", "Suspended", "Succeeded", "Failed")
FINISHED = {"COMPLETE": "complete", "PRUNED": "pruned", "FAIL": "failed"}


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
        for phase in PHASES:
            self.studies.labels(phase).set(0)
        for state in FINISHED.values():
            self.trials_finished.labels(state)
        self._lock = threading.Lock()
        self._phases: dict[str, str] = {}

    def set_phase(self, key: str, phase: str | None) -> None:
        """The phase of one study (``None``: forget it), reflected in ``hpo_studies``."""
        with self._lock:
            if phase is None:
                self._phases.pop(key, None)
            else:
                self._phases[key] = phase
            counts = {p: 0 for p in PHASES}
            for p in self._phases.values():
                counts[p] = counts.get(p, 0) + 1
            for p, n in counts.items():
                self.studies.labels(p).set(n)

    def finished(self, state: str) -> None:
        label = FINISHED.get(state)
        if label:
            self.trials_finished.labels(label).inc()

    def serve(self, port: int) -> None:
        if port:
            start_http_server(port, registry=self.registry)
