"""PENDING (rename to test_quickstart_run.py once trainer.model accepts pkg:<package>/<path>): the quickstart
``hpo run examples/quickstart.yaml`` finishes on a small CPU with nothing downloaded."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest
from hpo_operator.core.events import fmt_params, fmt_value
from optuna.trial import TrialState

from tests.cli.conftest import RunHpo, load_local

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"


@pytest.mark.slow
def test_quickstart_finishes_in_under_five_minutes(run_hpo: RunHpo, tmp_path: Path) -> None:
    # A copy, so that no study database is left in the repository.
    work = tmp_path / "examples"
    work.mkdir()
    shutil.copy(EXAMPLES / "quickstart.yaml", work / "quickstart.yaml")
    shutil.copytree(EXAMPLES / "data", work / "data")

    started = time.monotonic()
    result = run_hpo("run", "examples/quickstart.yaml", cwd=tmp_path, timeout=600)
    elapsed = time.monotonic() - started
    print(f"quickstart took {elapsed:.0f}s")
    assert result.code == 0, result.text
    assert elapsed < 300, f"the quickstart took {elapsed:.0f}s"

    study = load_local(work / "quickstart.yaml", "quickstart")
    trials = study.get_trials()
    assert [t.number for t in trials] == list(range(6))
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)
    assert trials[0].state == TrialState.COMPLETE  # the enqueued baseline runs to the end
    best = study.best_trial
    assert 0.5 < best.value <= 1.0  # all-MiniLM-L6-v2 ranks these pairs well
    metric = "eval_sts-dev_spearman_cosine"
    line = (
        f"Best trial {best.number}: {metric} = {fmt_value(best.value)}, parameters {fmt_params(best.params)}"
    )
    assert line in result.out
