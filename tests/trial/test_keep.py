"""``trainer.saveModel`` mode best: which saved models stay (``hpo_trial.keep``), on a real Optuna study."""

from __future__ import annotations

from pathlib import Path

import optuna
from hpo_trial import keep
from hpo_trial.contract import ATTR_MODEL_PATH
from optuna.trial import TrialState


def _saved(study: optuna.Study, root: Path) -> optuna.Trial:
    trial = study.ask()
    path = Path(keep.model_dir(str(root), trial.number))
    path.mkdir(parents=True)
    (path / "model.safetensors").write_bytes(b"w")
    trial.set_user_attr(ATTR_MODEL_PATH, str(path))
    return trial


def _dirs(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir())


def test_only_the_best_finished_trials_model_stays_and_running_ones_are_left_alone(tmp_path: Path) -> None:
    study = optuna.create_study(direction="maximize")
    root = tmp_path / "models"
    t0 = _saved(study, root)
    study.tell(t0, 0.5)
    assert keep.remove_beaten(study) == []  # the only complete trial is the best
    t1 = _saved(study, root)  # still running while t2 finishes better
    t2 = _saved(study, root)
    study.tell(t2, 0.7)
    assert keep.remove_beaten(study) == [str(root / "trial-0")]
    assert _dirs(root) == ["trial-1", "trial-2"]  # trial 1 is still being written: not touched
    study.tell(t1, 0.6)  # trial 1 finishes beaten: its own model goes
    assert keep.remove_beaten(study) == [str(root / "trial-1")]
    assert _dirs(root) == ["trial-2"]
    t3 = _saved(study, root)  # a trial that saved, then failed: not kept
    study.tell(t3, state=TrialState.FAIL)
    keep.remove_beaten(study)
    assert _dirs(root) == ["trial-2"]


def test_could_be_best_by_direction_and_by_pareto_dominance() -> None:
    study = optuna.create_study(direction="minimize")
    t = study.ask()
    study.tell(t, 1.0)
    assert keep.could_be_best(study, 1, [0.5]) and keep.could_be_best(study, 1, [1.0])
    assert not keep.could_be_best(study, 1, [1.5])

    multi = optuna.create_study(directions=["maximize", "minimize"])
    t = multi.ask()
    multi.tell(t, [0.8, 2.0])
    assert keep.could_be_best(multi, 1, [0.9, 3.0])  # better on one objective: on the front
    assert not keep.could_be_best(multi, 1, [0.7, 2.5])  # beaten on both
