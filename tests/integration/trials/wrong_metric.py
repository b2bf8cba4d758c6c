"""A trial whose evaluation does not produce the study's objective metric, handled as the built-in
runner does: the trial fails with the reporting API's MetricNotFound message and exits non-zero."""

from __future__ import annotations

import sys

from hpo_trial import reporting

trial = reporting.current_trial()
metrics = {"eval_loss": 0.41, "eval_sts-dev_spearman_cosine": 0.8}
try:
    trial.complete_from_metrics(metrics)
except reporting.MetricNotFound as e:
    trial.fail(str(e))
    print(f"trial {trial.number}: {e}", file=sys.stderr, flush=True)
    sys.exit(1)
