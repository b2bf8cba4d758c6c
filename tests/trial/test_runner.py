"""Acceptance: whole trials through ``python -m hpo_trial`` against a real PostgreSQL-backed Optuna study.

Tiny BERT built offline, small local data; each trial is a real process with the trial contract in its
environment, the way the operator runs it in a pod.
"""

from __future__ import annotations

from typing import Any

import optuna
import pytest
from hpo_trial.contract import ATTR_FAIL_REASON, ATTR_MODEL_PATH
from optuna.trial import TrialState

from tests.trial.helpers import RunTrial, TinyData, ask_trial, make_study, run_asked

OBJECTIVE = "eval_sts-dev_spearman_cosine"


def pair_recipe(model: str, data: TinyData, **extra: Any) -> dict[str, Any]:
    """CoSENTLoss on scored pairs, an EmbeddingSimilarityEvaluator named sts-dev, 4 evaluations an epoch."""
    recipe: dict[str, Any] = {
        "model": model,
        "train": {"files": data.pairs_train},
        "loss": {"name": "CoSENTLoss"},
        "evaluator": {
            "name": "EmbeddingSimilarityEvaluator",
            "dataset": {"files": data.pairs_dev},
            "args": {"name": "sts-dev", "main_similarity": "cosine"},
        },
        "arguments": {"per_device_train_batch_size": 8, "seed": 7, "logging_steps": 4, "use_cpu": True},
        "evalEveryEpochs": 0.25,
    }
    recipe.update(extra)
    return recipe


def test_full_trial_reports_and_completes(
    postgres_url: str, tiny_model: str, tiny_data: TinyData, run_trial_process: RunTrial, tmp_path: Any
) -> None:
    study = make_study(postgres_url, "ns.full.uid")
    params = {"learning_rate": 5e-4, "num_train_epochs": 2, "warmup_ratio": 0.1}
    trial = ask_trial(study, params)

    run = run_trial_process(
        storage_url=postgres_url,
        study_name=study.study_name,
        trial_number=trial.number,
        params=params,
        trainer=pair_recipe(tiny_model, tiny_data, saveModel="models"),
        objective=OBJECTIVE,
        output_dir=str(tmp_path / "out"),
    )

    assert run.returncode == 0, run.output
    done = study.trials[trial.number]
    assert done.state == TrialState.COMPLETE
    # 64 rows / batch 8 = 8 steps an epoch, evaluated every quarter epoch for 2 epochs: steps in hundredths.
    assert sorted(done.intermediate_values) == [25, 50, 75, 100, 125, 150, 175, 200]
    assert done.value == pytest.approx(done.intermediate_values[200])
    assert -1.0 <= done.value <= 1.0
    assert len(set(done.intermediate_values.values())) > 1  # the model changed while training

    # The saved model, evaluated again here, gives the value the trial told the study.
    model_path = done.user_attrs[ATTR_MODEL_PATH]
    assert model_path == str((tmp_path / "out" / "models" / f"trial-{trial.number}").resolve())
    from datasets import load_dataset
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.evaluation import EmbeddingSimilarityEvaluator

    dev = load_dataset("json", data_files=tiny_data.pairs_dev, split="train")
    evaluator = EmbeddingSimilarityEvaluator(
        list(dev["sentence1"]),
        list(dev["sentence2"]),
        list(dev["score"]),
        name="sts-dev",
        main_similarity="cosine",
    )
    metrics = evaluator(SentenceTransformer(model_path, device="cpu"))
    assert metrics["sts-dev_spearman_cosine"] == pytest.approx(done.value, abs=1e-6)

    # A person can follow the trial in its log.
    assert f"Trial {trial.number} (attempt 0)" in run.output
    assert '"learning_rate": 0.0005' in run.output
    assert "reported at step 25" in run.output
    assert f"{OBJECTIVE} = {done.value:.6g}" in run.output


def test_trial_told_to_prune_stops_early(
    postgres_url: str, tiny_model: str, tiny_data: TinyData, run_trial_process: RunTrial
) -> None:
    study = make_study(postgres_url, "ns.prune.uid")
    steps = [25, 50, 75, 100, 125, 150, 175, 200]
    for lr in (1e-4, 2e-4):  # earlier trials that did as well as a Spearman correlation can
        study.add_trial(
            optuna.trial.create_trial(
                params={"learning_rate": lr},
                distributions={"learning_rate": optuna.distributions.FloatDistribution(1e-6, 1e-2)},
                value=1.0,
                intermediate_values={s: 1.0 for s in steps},
            )
        )
    params = {"learning_rate": 5e-4, "num_train_epochs": 2}
    trial = ask_trial(study, params)

    run = run_trial_process(
        storage_url=postgres_url,
        study_name=study.study_name,
        trial_number=trial.number,
        params=params,
        trainer=pair_recipe(tiny_model, tiny_data),
        objective=OBJECTIVE,
        pruner={"type": "Median", "nStartupTrials": 1, "nWarmupSteps": 0},
    )

    assert run.returncode == 0, run.output
    done = study.trials[trial.number]
    assert done.state == TrialState.PRUNED
    assert list(done.intermediate_values) == [25]  # stopped at its first report, of 8 it would have made
    assert "pruner stops it at epoch 0.25" in run.output
    assert "finished" not in run.output


def _expect_failure(run: Any, study: optuna.Study, number: int, *fragments: str) -> str:
    assert run.returncode == 1, run.output
    done = study.trials[number]
    assert done.state == TrialState.FAIL
    reason = done.user_attrs[ATTR_FAIL_REASON]
    for fragment in fragments:
        assert fragment in reason
        assert fragment in run.output
    return reason


def test_unknown_loss_fails_before_training(
    postgres_url: str, tiny_model: str, tiny_data: TinyData, run_trial_process: RunTrial
) -> None:
    study = make_study(postgres_url, "ns.badloss.uid")
    trial = ask_trial(study, {"learning_rate": 1e-4})
    run = run_asked(
        run_trial_process,
        postgres_url,
        study,
        trial,
        pair_recipe(tiny_model, tiny_data, loss={"name": "CoSENTLos"}),
        OBJECTIVE,
    )
    reason = _expect_failure(run, study, trial.number, "trainer.loss.name: unknown loss 'CoSENTLos'")
    assert "CoSENTLoss" in reason  # the known names are listed
    assert "recipe ready" not in run.output  # nothing was built


def test_missing_column_fails_before_loading_the_model(
    postgres_url: str, tiny_model: str, tiny_data: TinyData, run_trial_process: RunTrial
) -> None:
    study = make_study(postgres_url, "ns.badcol.uid")
    trial = ask_trial(study, {"learning_rate": 1e-4})
    recipe = pair_recipe(tiny_model, tiny_data)
    recipe["train"] = {"files": tiny_data.pairs_train, "columns": ["sentence1", "sentence2", "similarity"]}
    run = run_asked(run_trial_process, postgres_url, study, trial, recipe, OBJECTIVE)
    _expect_failure(
        run,
        study,
        trial.number,
        "trainer.train.columns: no column 'similarity'",
        "the columns are: sentence1, sentence2, score",
    )
    assert "recipe ready" not in run.output


def test_unknown_metric_fails_listing_the_metrics_that_exist(
    postgres_url: str, tiny_model: str, tiny_data: TinyData, run_trial_process: RunTrial
) -> None:
    study = make_study(postgres_url, "ns.badmetric.uid")
    trial = ask_trial(study, {"learning_rate": 1e-4})
    run = run_asked(
        run_trial_process,
        postgres_url,
        study,
        trial,
        pair_recipe(tiny_model, tiny_data),
        "eval_sts-dev_spearman_cosinus",
    )
    reason = _expect_failure(
        run,
        study,
        trial.number,
        "objective metric 'eval_sts-dev_spearman_cosinus' was not produced",
        "eval_sts-dev_spearman_cosine",
        "eval_sts-dev_pearson_cosine",
    )
    assert "the metrics that exist are" in reason
    assert study.trials[trial.number].intermediate_values == {}  # failed at the first evaluation


def test_metric_missing_at_the_end_fails_too(
    postgres_url: str, tiny_model: str, tiny_data: TinyData, run_trial_process: RunTrial
) -> None:
    """Without intermediate evaluations the name is checked against the final evaluation's metrics."""
    study = make_study(postgres_url, "ns.badmetric2.uid", direction="minimize")
    trial = ask_trial(study, {"learning_rate": 1e-4})
    recipe = pair_recipe(tiny_model, tiny_data)
    del recipe["evalEveryEpochs"]
    run = run_asked(run_trial_process, postgres_url, study, trial, recipe, "eval_loss", direction="minimize")
    _expect_failure(run, study, trial.number, "objective metric 'eval_loss'", "train_loss", OBJECTIVE)


def test_two_ranks_prune_together(
    postgres_url: str, tiny_model: str, tiny_data: TinyData, hf_home: str, tmp_path: Any
) -> None:
    """Under torchrun (2 CPU processes, gloo) only rank 0 reports; its prune decision stops both ranks."""
    import os
    import subprocess
    import sys

    import psutil
    from hpo_trial.contract import Objective, TrialContract

    from tests.trial.helpers import OFFLINE_ENV

    study = make_study(postgres_url, "ns.ddp.uid")
    for lr in (1e-4, 2e-4):
        study.add_trial(
            optuna.trial.create_trial(
                params={"learning_rate": lr},
                distributions={"learning_rate": optuna.distributions.FloatDistribution(1e-6, 1e-2)},
                value=1.0,
                intermediate_values={s: 1.0 for s in (25, 50, 75, 100)},
            )
        )
    params = {"learning_rate": 5e-4, "num_train_epochs": 1}
    trial = ask_trial(study, params)
    recipe = pair_recipe(tiny_model, tiny_data)
    recipe["arguments"] = {**recipe["arguments"], "per_device_train_batch_size": 4, "ddp_backend": "gloo"}
    contract = TrialContract(
        storage_url=postgres_url,
        study_name=study.study_name,
        trial_number=trial.number,
        params=params,
        objectives=(Objective(OBJECTIVE, "maximize"),),
        pruner={"type": "Median", "nStartupTrials": 1, "nWarmupSteps": 50},
        trainer=recipe,
        output_dir=str(tmp_path / "out"),
    )
    env = {**os.environ, **OFFLINE_ENV, **contract.to_env(), "HF_HOME": hf_home, "OMP_NUM_THREADS": "1"}
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    log = tmp_path / "torchrun.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [*torchrun, "-m", "hpo_trial"], env=env, cwd=str(tmp_path), stdout=out, stderr=out
        )
        try:
            proc.wait(timeout=150)
        except subprocess.TimeoutExpired:
            for child in psutil.Process(proc.pid).children(recursive=True):  # the ranks, then torchrun
                child.kill()
            proc.kill()
            proc.wait()
            pytest.fail(f"the ranks did not stop together:\n{log.read_text()[-6000:]}")
    output = log.read_text()
    print(output[-6000:])
    assert proc.returncode == 0, output
    finished = study.trials[trial.number]
    assert finished.state == TrialState.PRUNED
    assert list(finished.intermediate_values) == [25, 50]  # pruned at the first step the pruner may act
    assert "of study ns.ddp.uid on rank 1" in output
    assert output.count("(reported at step") == 2  # rank 0 only
    assert "Trial 2: rank 1 stops with rank 0 (prune)" in output  # rank 0's decision, broadcast


def test_pruner_with_step_scheduled_evaluations_fails_fast(
    postgres_url: str, tiny_model: str, tiny_data: TinyData, run_trial_process: RunTrial
) -> None:
    """eval_strategy "steps" reports at steps a pruner cannot compare across batch sizes: FAIL at once."""
    study = make_study(postgres_url, "ns.stepsprune.uid")
    trial = ask_trial(study, {"learning_rate": 1e-4})
    recipe = pair_recipe(tiny_model, tiny_data)
    del recipe["evalEveryEpochs"]
    recipe["arguments"] = {**recipe["arguments"], "eval_strategy": "steps", "eval_steps": 3}
    run = run_asked(
        run_trial_process, postgres_url, study, trial, recipe, OBJECTIVE, pruner={"type": "Median"}
    )
    _expect_failure(
        run,
        study,
        trial.number,
        "trainer.evalEveryEpochs: the study has a Median pruner",
        "set trainer.evalEveryEpochs (for example 0.25)",
    )
    assert "recipe ready" not in run.output  # before anything was built
