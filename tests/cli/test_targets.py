"""The read commands take a manifest (its local study) as they take an HPOStudy's name: ``hpo status``
of a manifest, here; the cluster side is in test_cluster.py."""

from __future__ import annotations

import fcntl
import re
from pathlib import Path

from tests.cli.conftest import CustomStudy, RunHpo, load_local, local_storage


def _flat(text: str) -> str:
    return " ".join(text.split())


def test_status_of_a_manifest_reads_its_local_study(
    mixed_study: Path, run_hpo: RunHpo, tmp_path: Path
) -> None:
    result = run_hpo("status", str(mixed_study), cwd=tmp_path)
    assert result.code == 0, result.text
    study = load_local(mixed_study, "mixed")
    n = len(study.trials)
    pruned = sum(t.state.name == "PRUNED" for t in study.trials)
    out = _flat(result.out)
    assert (
        f"Reading the local study local.mixed of {mixed_study} (hpo run), in {local_storage(mixed_study)}"
        in (_flat(result.err))
    )
    assert "Local study local.mixed (hpo run of study.yaml)" in out
    assert "Phase Succeeded" in out
    assert f"Trials {n}/{n} finished ({n - pruned} complete, {pruned} pruned)" in out
    assert "Objective minimize eval_loss" in out
    best = study.best_trial
    assert f"Best trial {best.number}: eval_loss {best.value:.4f}, optim={best.params['optim']}, " in out
    assert re.search(rf"★ {best.number}\s+COMPLETE", result.out)
    assert "kubeconfig" not in result.text


def test_status_of_a_stopped_and_of_a_running_local_study(
    custom_study: CustomStudy, run_hpo: RunHpo, tmp_path: Path
) -> None:
    path = custom_study("part", trials={"total": 3, "parallelism": 1})
    assert run_hpo("run", str(path), "--trials", "1", cwd=path.parent).code == 0
    stopped = run_hpo("status", str(path), cwd=tmp_path)
    assert stopped.code == 0, stopped.text
    assert "Phase Stopped" in _flat(stopped.out) and "Trials 1/3 finished (1 complete)" in _flat(stopped.out)
    assert f"Next `hpo run {path}` resumes it" in _flat(stopped.out)

    # While an `hpo run` holds the study's lock, the study is running.
    lock = path.parent / ".hpo" / "local.part" / "lock"
    with lock.open("a") as f:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        running = run_hpo("status", str(path), cwd=tmp_path)
    assert running.code == 0 and "Phase Running" in _flat(running.out)


def test_status_names_a_study_or_says_what_it_needs(
    run_hpo: RunHpo, tmp_path: Path, custom_study: CustomStudy
) -> None:
    missing = run_hpo("status", cwd=tmp_path)
    assert missing.code == 2 and "name a study" in missing.err
    fresh = custom_study("fresh")
    never = run_hpo("status", str(fresh), cwd=tmp_path)
    assert never.code == 1 and "has no local study yet" in never.err and "hpo run" in never.err
