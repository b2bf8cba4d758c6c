"""``report_to`` per trial with ``hpo run``: every trial is one MLflow run on a real tracking server (named
``<study>-trial-<n>``, its parameters, trial number, attempt and objective), and TensorBoard event files
land under the trial's output directory with no service at all."""

from __future__ import annotations

from pathlib import Path

import pytest
from optuna.trial import TrialState

from tests.cli.conftest import RunHpo, load_local, write_study
from tests.cli.mlflow_server import mlflow_server
from tests.cli.test_builtin import OBJECTIVE, builtin_spec, study_dir
from tests.trial.helpers import TinyData


@pytest.mark.slow
def test_every_trial_is_an_mlflow_run_with_its_params_and_objective_and_tensorboard_logs(
    tiny_model: str, tiny_data: TinyData, run_hpo: RunHpo, tmp_path: Path
) -> None:
    from mlflow.tracking import MlflowClient

    d = study_dir(tmp_path / "st", tiny_data)
    with mlflow_server(tmp_path / "mlflow") as uri:
        spec = builtin_spec(tiny_model)
        spec["trainer"]["arguments"]["report_to"] = ["mlflow", "tensorboard"]
        spec["template"] = {
            "outputDir": "/out",
            "env": [{"name": "MLFLOW_TRACKING_URI", "value": uri}],
        }
        path = write_study(d, "tracked", spec)
        result = run_hpo("run", str(path), cwd=tmp_path, timeout=900)
        assert result.code == 0, result.text

        trials = load_local(path, "tracked").get_trials()
        assert [t.state for t in trials] == [TrialState.COMPLETE] * 3
        client = MlflowClient(uri)
        experiment = client.get_experiment_by_name("tracked")  # named after the study
        assert experiment is not None
        runs = client.search_runs([experiment.experiment_id], max_results=100)
        by_name = {r.info.run_name: r for r in runs}
        assert sorted(by_name) == [f"tracked-trial-{t.number}" for t in trials]  # one run per trial
        for t in trials:
            run = by_name[f"tracked-trial-{t.number}"]
            assert run.info.status == "FINISHED"
            assert run.data.tags["hpo.trial_number"] == str(t.number)
            assert run.data.tags["hpo.attempt"] == "0"
            assert run.data.tags["hpo.state"] == "COMPLETE"
            assert run.data.tags["hpo.optuna_study"] == "local.tracked"
            assert run.data.params["hpo.trial_number"] == str(t.number)
            for name, value in t.params.items():
                assert run.data.params[f"hpo.params.{name}"] == str(value)
            assert run.data.params["learning_rate"] == str(t.params["learning_rate"])  # the library's own
            assert run.data.metrics["hpo.objective"] == pytest.approx(t.value)
            # The evaluator's metric as the library logged it at each evaluation (last: the final one).
            history = client.get_metric_history(run.info.run_id, OBJECTIVE)
            assert len(history) >= 2
            assert max(history, key=lambda m: m.step).value == pytest.approx(t.value)

    # TensorBoard: event files under each trial's output directory, in a directory named after its run.
    for t in trials:
        events = list(
            (d / ".hpo").rglob(f"trial-{t.number}/runs/tracked-trial-{t.number}/events.out.tfevents.*")
        )
        assert events, f"no TensorBoard events for trial {t.number}"
