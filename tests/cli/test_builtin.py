"""``hpo run`` with the built-in Sentence Transformers runner, end to end, on a tiny offline BERT."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
from hpo_operator.core.events import fmt_params, fmt_value
from optuna.trial import TrialState

from tests.cli.conftest import RunHpo, load_local, write_study
from tests.trial.helpers import TinyData

OBJECTIVE = "eval_sts-dev_spearman_cosine"


def builtin_spec(model: str) -> dict[str, Any]:
    return {
        "objective": [{"metric": OBJECTIVE, "direction": "maximize"}],
        "searchSpace": [
            {"name": "learning_rate", "type": "float", "low": 1e-4, "high": 1e-2, "log": True},
            {"name": "warmup_ratio", "type": "float", "low": 0.0, "high": 0.2},
        ],
        "trials": {"total": 3, "parallelism": 1},
        "sampler": {"type": "TPE", "seed": 1},
        "enqueue": [{"learning_rate": 1e-3, "warmup_ratio": 0.1}],
        "trainer": {
            "model": model,
            # Relative paths: trials run in the manifest's directory.
            "train": {"files": "data/pairs-train.jsonl"},
            "loss": {"name": "CoSENTLoss"},
            "evaluator": {
                "name": "EmbeddingSimilarityEvaluator",
                "dataset": {"files": "data/pairs-dev.jsonl"},
                "args": {"name": "sts-dev", "main_similarity": "cosine"},
            },
            "arguments": {
                "per_device_train_batch_size": 16,
                "num_train_epochs": 1,
                "seed": 7,
                "use_cpu": True,
            },
            "evalEveryEpochs": 0.5,
        },
    }


def study_dir(d: Path, data: TinyData) -> Path:
    """``d`` with the tiny pair data at the relative paths :func:`builtin_spec` names."""
    (d / "data").mkdir(parents=True)
    shutil.copy(data.pairs_train, d / "data" / "pairs-train.jsonl")
    shutil.copy(data.pairs_dev, d / "data" / "pairs-dev.jsonl")
    return d


@pytest.mark.slow
def test_builtin_runner_study_end_to_end(
    tiny_model: str, tiny_data: TinyData, run_hpo: RunHpo, tmp_path: Path
) -> None:
    d = study_dir(tmp_path / "st", tiny_data)
    path = write_study(d, "tiny-st", builtin_spec(tiny_model))

    result = run_hpo("run", str(path), cwd=tmp_path, timeout=600)
    assert result.code == 0, result.text

    study = load_local(path, "tiny-st")
    trials = study.get_trials()
    assert [t.number for t in trials] == [0, 1, 2]
    assert all(t.state == TrialState.COMPLETE for t in trials)
    assert trials[0].params == {"learning_rate": 1e-3, "warmup_ratio": 0.1}
    for t in trials:
        assert -1.0 <= t.value <= 1.0
        assert sorted(t.intermediate_values) == [50, 100]  # evaluated every half epoch, in hundredths
        value, params = fmt_value(t.value), fmt_params(t.params)
        assert f"Trial {t.number} finished with value {value} and parameters {params}." in result.out
    best = study.best_trial
    best_is = f"Best is trial {best.number} with value {fmt_value(best.value)}."
    assert f"Study finished: 3 of 3 trials finished (3 complete, 0 pruned, 0 failed). {best_is}" in result.out
    value, params = fmt_value(best.value), fmt_params(best.params)
    assert f"Best trial {best.number}: {OBJECTIVE} = {value}, parameters {params}" in result.out

    again = run_hpo("run", str(path), cwd=tmp_path)
    assert again.code == 0, again.text
    assert "Resuming study local.tiny-st: 3 of 3 trials finished" in again.out
    assert len(load_local(path, "tiny-st").get_trials()) == 3
