"""``trainer.saveModel`` with ``hpo run``: best-only keeps exactly the best trial's model, ``hpo status``
shows where it is, and ``hpo export`` copies it out (a model that evaluates to the best trial's value)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hpo_trial.contract import ATTR_MODEL_PATH
from optuna.trial import TrialState

from tests.cli.conftest import CustomStudy, RunHpo, load_local, write_study
from tests.cli.test_builtin import OBJECTIVE, builtin_spec, study_dir
from tests.trial.helpers import TinyData


@pytest.mark.slow
def test_best_only_keeps_one_model_status_points_at_it_and_export_copies_it(
    tiny_model: str, tiny_data: TinyData, run_hpo: RunHpo, tmp_path: Path
) -> None:
    d = study_dir(tmp_path / "st", tiny_data)
    spec = builtin_spec(tiny_model)
    spec["trials"] = {"total": 4, "parallelism": 1}
    # From a learning rate too small to learn anything up: later trials tend to beat earlier ones, so
    # models are saved and then replaced.
    spec["enqueue"] = [
        {"learning_rate": 1e-4, "warmup_ratio": 0.1},
        {"learning_rate": 1e-3, "warmup_ratio": 0.1},
        {"learning_rate": 5e-3, "warmup_ratio": 0.0},
    ]
    spec["trainer"]["saveModel"] = {"path": "models", "mode": "best"}
    path = write_study(d, "keep-best", spec)

    result = run_hpo("run", str(path), cwd=tmp_path, timeout=900)
    assert result.code == 0, result.text
    study = load_local(path, "keep-best")
    trials = study.get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 4
    best = study.best_trial
    saved = [t.number for t in trials if ATTR_MODEL_PATH in t.user_attrs]
    assert len(saved) >= 2, f"only trials {saved} saved a model: nothing was replaced"  # beaten ones went

    # Exactly one model on disk: the best trial's, where its user attribute says.
    models = d / "models"
    assert sorted(p.name for p in models.iterdir()) == [f"trial-{best.number}"]
    model_path = best.user_attrs[ATTR_MODEL_PATH]
    assert Path(model_path) == (models / f"trial-{best.number}").resolve()
    assert (Path(model_path) / "config.json").is_file()

    status = run_hpo("status", str(path), cwd=tmp_path)
    assert status.code == 0, status.text
    assert f"Best model: {model_path} (hpo export copies it)" in status.out

    out = tmp_path / "exported"
    exported = run_hpo("export", str(path), str(out), cwd=tmp_path)
    assert exported.code == 0, exported.text
    assert f"Exported trial {best.number}'s model to {out}" in exported.out
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in Path(model_path).iterdir())

    # The copy is the best trial's model: evaluated as the trial evaluated it, it scores the trial's value.
    from datasets import load_dataset
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.evaluation import EmbeddingSimilarityEvaluator

    dev = load_dataset("json", data_files=str(d / "data" / "pairs-dev.jsonl"), split="train")
    evaluator = EmbeddingSimilarityEvaluator(
        dev["sentence1"], dev["sentence2"], dev["score"], name="sts-dev", main_similarity="cosine"
    )
    metrics = evaluator(SentenceTransformer(str(out), device="cpu"))
    assert metrics[OBJECTIVE.removeprefix("eval_")] == pytest.approx(best.value, abs=1e-5)

    again = run_hpo("export", str(path), str(out), cwd=tmp_path)  # never over an existing model
    assert again.code == 2 and "is not an empty directory" in again.err


def test_export_says_when_no_trial_saved_a_model(
    tmp_path: Path, run_hpo: RunHpo, custom_study: CustomStudy
) -> None:
    path = custom_study("nosave", trials={"total": 2, "parallelism": 1})
    assert run_hpo("run", str(path), cwd=tmp_path).code == 0
    result = run_hpo("export", str(path), str(tmp_path / "out"), cwd=tmp_path)
    assert result.code == 1
    best = load_local(path, "nosave").best_trial.number
    assert f"trial {best} saved no model (the recipe's trainer.saveModel)" in result.err
