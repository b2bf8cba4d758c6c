"""``hpo run`` in local mode with a custom container command: budget, lines, best trial, resume, Ctrl-C."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml
from hpo_operator.core.events import fmt_params, fmt_value
from hpo_operator.core.parse import parse_spec
from hpo_operator.core.spec import SpecError
from optuna.trial import TrialState

from tests.cli.conftest import CustomStudy, RunHpo, hpo_env, load_local, local_storage


def completed_line(t: optuna.trial.FrozenTrial) -> str:
    """The seed's line for a completed trial, without the "Best is" part (that depends on the order)."""
    return f"Trial {t.number} finished with value {fmt_value(t.value)} and parameters {fmt_params(t.params)}."


def test_run_finishes_the_budget_and_prints_the_seed_lines(
    custom_study: CustomStudy, run_hpo: RunHpo
) -> None:
    path = custom_study("quad")
    result = run_hpo("run", str(path), cwd=path.parent)
    assert result.code == 0, result.text

    study = load_local(path, "quad")
    trials = study.get_trials()
    assert [t.number for t in trials] == [0, 1, 2, 3, 4]
    assert all(t.state == TrialState.COMPLETE for t in trials)
    # The enqueued baseline is tried first, with exactly its parameters.
    assert trials[0].params == {"x": 0.25, "y": 0}
    # The objective really ran with each trial's parameters.
    for t in trials:
        assert t.value == pytest.approx((t.params["x"] - 0.3) ** 2 + t.params["y"] / 10)
        assert sorted(t.intermediate_values) == [1, 2, 3, 4]

    for t in trials:
        assert completed_line(t) in result.out
    best = study.best_trial
    lines = result.out.splitlines()
    announced = [ln for ln in lines if ln.startswith("Trial ")]
    assert len(announced) == 5
    # The last line about a trial names the study's best, and so does the final line.
    assert announced[-1].endswith(f"Best is trial {best.number} with value {fmt_value(best.value)}.")
    assert (
        f"Best trial {best.number}: loss = {fmt_value(best.value)}, parameters {fmt_params(best.params)}"
        in (result.out)
    )
    assert "Study finished: 5 of 5 trials finished (5 complete, 0 pruned, 0 failed)." in result.out
    # Every trial's output went to its log file next to the manifest.
    for t in trials:
        log = path.parent / ".hpo" / "local.quad" / f"trial-{t.number}.log"
        assert f"trial {t.number} attempt 0 params" in log.read_text()

    # A second run resumes the same study: nothing new is asked.
    again = run_hpo("run", str(path), cwd=path.parent)
    assert again.code == 0, again.text
    assert "Resuming study local.quad: 5 of 5 trials finished" in again.out
    assert len(load_local(path, "quad").get_trials()) == 5
    assert not [ln for ln in again.out.splitlines() if ln.startswith("Trial ")]  # nothing re-announced

    # Raising the budget on the command line continues the study with new, different parameters.
    more = run_hpo("run", str(path), "--trials", "7", cwd=path.parent)
    assert more.code == 0, more.text
    trials = load_local(path, "quad").get_trials()
    assert [t.number for t in trials] == list(range(7))
    seen = [tuple(sorted(t.params.items())) for t in trials]
    assert len(set(seen)) == 7, "a resumed seeded sampler must not replay the first trials' parameters"

    # A budget below what already ran asks nothing, and says so from the first line.
    fewer = run_hpo("run", str(path), "--trials", "3", cwd=path.parent)
    assert fewer.code == 0, fewer.text
    assert "7 trials finished, more than the budget of 3: no new trial is asked" in fewer.out
    assert len(load_local(path, "quad").get_trials()) == 7


@pytest.mark.parametrize(("in_spec", "override", "expected"), [(2, None, 2), (3, "1", 1)])
def test_parallelism_is_respected(
    custom_study: CustomStudy, run_hpo: RunHpo, in_spec: int, override: str | None, expected: int
) -> None:
    path = custom_study("par", trials={"total": 4, "parallelism": in_spec})
    extra = ["--parallelism", override] if override else []
    result = run_hpo("run", str(path), *extra, cwd=path.parent, env={"STEP_SECONDS": "0.4"})
    assert result.code == 0, result.text
    trials = load_local(path, "par").get_trials()
    assert len(trials) == 4
    # Never more trials at once than the parallelism (start..complete intervals)...
    events = sorted(
        [(t.datetime_start, 1) for t in trials] + [(t.datetime_complete, -1) for t in trials],
        key=lambda e: (e[0], e[1]),
    )
    running = peak = 0
    for _, delta in events:
        running += delta
        peak = max(peak, running)
    assert peak == expected  # ...and that many did run together


def _schema_made(db: Path) -> bool:
    """Whether Optuna finished creating its schema in this SQLite file (it records its version last)."""
    if not db.exists():
        return False
    try:
        with contextlib.closing(sqlite3.connect(db)) as conn:
            return bool(conn.execute("SELECT count(*) FROM alembic_version").fetchone()[0])
    except sqlite3.Error:
        return False


def test_sigint_stops_cleanly_and_the_next_run_completes_exactly_the_budget(
    custom_study: CustomStudy, tmp_path: Path
) -> None:
    path = custom_study("stop", trials={"total": 6, "parallelism": 2})
    pid_dir = tmp_path / "pids"
    pid_dir.mkdir()
    env = hpo_env({"STEP_SECONDS": "0.6", "PID_DIR": str(pid_dir)})
    proc = subprocess.Popen(
        [sys.executable, "-m", "hpo_operator.cli.main", "run", str(path), "--grace", "5"],
        cwd=path.parent,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = local_storage(path)
    db = path.parent / f"{path.stem}.hpo.db"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # interrupt once some trials finished and others run
        time.sleep(0.3)
        if not _schema_made(db):
            continue  # `hpo run` is still creating the storage: a second writer of the schema would race it
        try:
            states = [t.state for t in optuna.load_study(study_name="local.stop", storage=url).get_trials()]
        except KeyError:
            continue
        if states.count(TrialState.COMPLETE) >= 2 and TrialState.RUNNING in states:
            break
    else:
        proc.kill()
        pytest.fail("the study never had finished and running trials at once")
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    print(out, err)
    assert proc.returncode == 130, out + err
    assert "Interrupted. Run `hpo run" in out

    before = {t.number: t for t in load_local(path, "stop").get_trials()}
    interrupted = [n for n, t in before.items() if t.state == TrialState.RUNNING]
    assert interrupted, "some trial was running when Ctrl-C came"
    assert f"trial(s) {', '.join(map(str, interrupted))} will run again from their stored parameters" in out
    # Every trial process is gone (SIGTERM reached them), none left behind.
    for pid_file in pid_dir.glob("*.pid"):
        pid = int(pid_file.read_text())
        assert (
            not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text().lower()
        )

    again = subprocess.run(
        [sys.executable, "-m", "hpo_operator.cli.main", "run", str(path)],
        cwd=path.parent,
        env=hpo_env({"PID_DIR": str(pid_dir)}),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    print(again.stdout, again.stderr)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "Resuming study local.stop" in again.stdout
    after = load_local(path, "stop").get_trials()
    # Exactly the budget, numbers 0..5 once each, all complete; interrupted trials kept number and parameters.
    assert [t.number for t in after] == list(range(6))
    assert all(t.state == TrialState.COMPLETE for t in after)
    for n in interrupted:
        assert after[n].params == before[n].params
        assert (pid_dir / f"{n}-0.pid").exists()  # ran again as attempt 0: an interruption is no failure


def test_a_trial_that_ignores_sigterm_is_killed_after_the_grace_period(
    custom_study: CustomStudy, tmp_path: Path
) -> None:
    path = custom_study("stubborn", trials={"total": 1, "parallelism": 1}, enqueue=[])
    pid_dir = tmp_path / "pids"
    pid_dir.mkdir()
    env = hpo_env({"STEP_SECONDS": "30", "PID_DIR": str(pid_dir), "IGNORE_SIGTERM": "1"})
    proc = subprocess.Popen(
        [sys.executable, "-m", "hpo_operator.cli.main", "run", str(path), "--grace", "1"],
        cwd=path.parent,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while not list(pid_dir.glob("*.pid")) and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(1.0)  # the child installed its SIGTERM handler
    pid = int(next(pid_dir.glob("*.pid")).read_text())
    started = time.monotonic()
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 130, out
    assert time.monotonic() - started < 10
    assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text().lower()


def test_failed_trials_are_retried_then_failed_with_the_log_path(
    custom_study: CustomStudy, run_hpo: RunHpo
) -> None:
    path = custom_study("flaky", trials={"total": 3, "parallelism": 1, "retries": 1, "maxFailed": 1})
    result = run_hpo("run", str(path), cwd=path.parent, env={"FAIL_TRIALS": "1"})
    assert result.code == 0, result.text  # one failed trial is within maxFailed: the study succeeds

    trials = load_local(path, "flaky").get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.FAIL, TrialState.COMPLETE]
    failed = trials[1]
    assert failed.user_attrs["hpo:attempts"] == 2
    reason = failed.user_attrs["hpo:fail_reason"]
    assert "exit code 3" in reason and "RuntimeError: the data loader exploded" in reason
    assert "Trial 1 attempt 1 of 2 failed" in result.out
    assert "Running it again with the same parameters (attempt 2 of 2)." in result.out
    assert "Trial 1 failed: trial process flaky-trial-1-r1 failed (exit code 3, Error)" in result.out
    log_dir = Path(".hpo") / "local.flaky"
    assert f"log: {log_dir / 'trial-1.log'}" in result.out
    assert f"log: {log_dir / 'trial-1-r1.log'}" in result.out
    assert "the data loader exploded" in (path.parent / log_dir / "trial-1-r1.log").read_text()


def test_too_many_failures_fail_the_study(custom_study: CustomStudy, run_hpo: RunHpo) -> None:
    path = custom_study("doomed", trials={"total": 4, "parallelism": 1, "maxFailed": 0}, enqueue=[])
    result = run_hpo("run", str(path), cwd=path.parent, env={"FAIL_TRIALS": "0,1,2,3"})
    assert result.code == 1, result.text
    assert "Study failed (TooManyFailedTrials): spec.trials.maxFailed:" in result.out
    assert len(load_local(path, "doomed").get_trials()) == 1  # nothing asked after the study failed


def test_a_command_that_does_not_exist_is_named(custom_study: CustomStudy, run_hpo: RunHpo) -> None:
    # A path next to the manifest: refused before anything is stored or started.
    path = custom_study("nocmd", template={"command": ["./no-such-program"]})
    result = run_hpo("run", str(path), cwd=path.parent)
    assert result.code == 2
    assert f"spec.template.command[0]: no such file: ./no-such-program in {path.parent}" in result.err
    # A program looked up on PATH: named when the first trial cannot start it.
    path = custom_study("nocmd", template={"command": ["no-such-program-on-path"]})
    result = run_hpo("run", str(path), cwd=path.parent)
    assert result.code == 1
    assert "spec.template.command: cannot start 'no-such-program-on-path'" in result.err


INVALID = [
    (lambda s: s["searchSpace"][0].update(low=2.0), "spec.searchSpace[0].low"),
    (lambda s: s["trials"].update(parallelism=0), "spec.trials.parallelism"),
    (lambda s: s.update(enqueue=[{"x": 5.0}]), "spec.enqueue[0].x"),
    (lambda s: s["sampler"].update(type="Bayes"), "spec.sampler.type"),
    (lambda s: s["template"].pop("command"), "spec.trainer"),
]


@pytest.mark.parametrize(("mutate", "field"), INVALID)
def test_an_invalid_manifest_fails_with_the_operators_message(
    custom_study: CustomStudy, run_hpo: RunHpo, mutate: object, field: str
) -> None:
    path = custom_study("invalid")
    doc = yaml.safe_load(path.read_text())
    mutate(doc["spec"])  # type: ignore[operator]
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(SpecError) as operator_says:
        parse_spec(doc["spec"])
    assert operator_says.value.field == field

    for command in ("run", "validate"):
        result = run_hpo(command, str(path), cwd=path.parent)
        assert result.code == 2, result.text
        assert f"{path}: {operator_says.value}" in " ".join(result.err.split()), result.err
    assert not Path(local_storage(path).removeprefix("sqlite:///")).exists()  # nothing was stored


def test_validate_accepts_the_examples_with_a_summary_on_short_lines(run_hpo: RunHpo) -> None:
    repo = Path(__file__).resolve().parents[2]
    for example in ("seed-study.yaml", "quickstart.yaml", "custom-container-study.yaml"):
        result = run_hpo("validate", str(repo / "examples" / example), cwd=repo, env={"COLUMNS": "80"})
        assert result.code == 0, result.text
        lines = result.out.strip().splitlines()
        assert lines[0].endswith(": a valid HPOStudy") and all(len(ln) <= 80 for ln in lines), result.out
        assert "(s)" not in result.out
    seed = run_hpo("validate", str(repo / "examples" / "seed-study.yaml"), cwd=repo)
    assert seed.out.splitlines() == [
        "nli-distilbert: a valid HPOStudy",
        "  objective   maximize eval_sts-dev_spearman_cosine",
        "  parameters  4: num_train_epochs, per_device_train_batch_size, warmup_ratio,",
        "              learning_rate",
        "  trials      20, 1 at a time",
        "  on failure  1 retry a trial; the study fails after 4 failed trials",
        "  sampler     TPE (seed 42)",
        "  pruner      none",
        "  runs        the built-in runner, model distilbert-base-uncased",
    ]
    quickstart = run_hpo("validate", str(repo / "examples" / "quickstart.yaml"), cwd=repo)
    assert "  local files  data/sts-train.csv, data/sts-dev.csv (found)" in quickstart.out.splitlines()


def test_validate_names_problems_outside_the_spec(tmp_path: Path, run_hpo: RunHpo) -> None:
    head = "apiVersion: hpo.dev/v1alpha1\nkind: HPOStudy\n"
    cases = {
        "apiVersion: v1\nkind: HPOStudy\nmetadata: {name: a}\n": "apiVersion: must be hpo.dev/v1alpha1",
        head + "spec: {}\n": "metadata: required",
        head + "metadata: {name: Bad_Name}\nspec: {}\n": "metadata.name:",
        "kind: ConfigMap\n": "kind: no HPOStudy in this file",
        "spec: [unclosed\n": "not valid YAML",
    }
    for i, (text, expected) in enumerate(cases.items()):
        path = tmp_path / f"case{i}.yaml"
        path.write_text(text)
        result = run_hpo("validate", str(path), cwd=tmp_path)
        assert result.code == 2 and expected in result.err, (text, result.err)
    missing = run_hpo("validate", str(tmp_path / "nope.yaml"), cwd=tmp_path)
    assert missing.code == 2 and "no such file" in missing.err


def test_run_on_postgresql_storage(custom_study: CustomStudy, run_hpo: RunHpo, postgres_url: str) -> None:
    path = custom_study("pg", trials={"total": 3, "parallelism": 2})
    result = run_hpo("run", str(path), "--storage", postgres_url, cwd=path.parent)
    assert result.code == 0, result.text
    study = optuna.load_study(study_name="local.pg", storage=postgres_url)
    assert [t.state for t in study.get_trials()] == [TrialState.COMPLETE] * 3
    assert not (path.parent / "study.hpo.db").exists()
    # The password never reaches the screen.
    password = postgres_url.split("://", 1)[1].split("@", 1)[0].partition(":")[2]
    if password:
        assert password not in result.text
    again = run_hpo("run", str(path), "--storage", postgres_url, cwd=path.parent)
    assert again.code == 0 and "Resuming study local.pg: 3 of 3 trials finished" in again.out


def test_two_runs_of_one_study_at_once_are_refused(custom_study: CustomStudy, run_hpo: RunHpo) -> None:
    path = custom_study("busy", trials={"total": 2, "parallelism": 1})
    env = hpo_env({"STEP_SECONDS": "1"})
    first = subprocess.Popen(
        [sys.executable, "-m", "hpo_operator.cli.main", "run", str(path)],
        cwd=path.parent,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        lock_file = path.parent / ".hpo" / "local.busy" / "lock"
        deadline = time.monotonic() + 30
        while not lock_file.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(0.5)
        second = run_hpo("run", str(path), cwd=path.parent)
        assert second.code == 1 and "another `hpo run` is running the study local.busy" in second.err
    finally:
        out, err = first.communicate(timeout=120)
    assert first.returncode == 0, out + err


def test_the_trial_environment_carries_the_contract(custom_study: CustomStudy, run_hpo: RunHpo) -> None:
    """The trial sees the contract, the template's env values and the manifest's directory as cwd."""
    path = custom_study(
        "env",
        trials={"total": 1, "parallelism": 1},
        enqueue=[],
        template={
            "command": ["python", "-c"],
            "args": [
                "import os, json; from hpo_trial import reporting; t = reporting.current_trial();"
                "env = {k: v for k, v in os.environ.items() if k.startswith(('HPO_', 'GREETING'))};"
                "print(json.dumps(env));"
                "print('cwd=' + os.getcwd()); t.complete(1.0)"
            ],
            "env": [{"name": "GREETING", "value": "hello"}],
        },
    )
    result = run_hpo("run", str(path), cwd=path.parent.parent)
    assert result.code == 0, result.text
    log = (path.parent / ".hpo" / "local.env" / "trial-0.log").read_text()
    assert f"cwd={path.parent}" in log
    assert '"GREETING": "hello"' in log
    assert '"HPO_STUDY_NAME": "local.env"' in log and '"HPO_TRIAL_NUMBER": "0"' in log
    assert '"HPO_OBJECTIVE": "[{\\"metric\\": \\"loss\\", \\"direction\\": \\"minimize\\"}]"' in log
    assert os.path.exists(local_storage(path).removeprefix("sqlite:///"))


def test_the_studys_pruner_reaches_the_trial_process(custom_study: CustomStudy, run_hpo: RunHpo) -> None:
    path = custom_study(
        "pruned",
        trials={"total": 2, "parallelism": 1},
        enqueue=[{"x": 0.3, "y": 0}, {"x": 0.9, "y": 3}],
        pruner={"type": "Median", "nStartupTrials": 1, "nWarmupSteps": 0},
    )
    result = run_hpo("run", str(path), cwd=path.parent)
    assert result.code == 0, result.text
    first, second = load_local(path, "pruned").get_trials()
    assert first.state == TrialState.COMPLETE and sorted(first.intermediate_values) == [1, 2, 3, 4]
    # Worse than the median of earlier trials at its first step: the Median pruner stops it there.
    assert second.state == TrialState.PRUNED and list(second.intermediate_values) == [1]
    assert "Trial 1 pruned at step 1 with value 0.8100; parameters {'x': 0.9, 'y': 3}." in result.out
    assert "Study finished: 2 of 2 trials finished (1 complete, 1 pruned, 0 failed)." in result.out


def test_trial_processes_left_by_a_killed_run_are_stopped_and_their_trials_run_again(
    custom_study: CustomStudy, tmp_path: Path, run_hpo: RunHpo
) -> None:
    path = custom_study("orphans", trials={"total": 3, "parallelism": 2}, enqueue=[])
    pid_dir = tmp_path / "pids"
    pid_dir.mkdir()
    proc = subprocess.Popen(
        [sys.executable, "-m", "hpo_operator.cli.main", "run", str(path)],
        cwd=path.parent,
        env=hpo_env({"STEP_SECONDS": "5", "PID_DIR": str(pid_dir)}),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while len(list(pid_dir.glob("*.pid"))) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    proc.kill()  # no chance to clean up: its trial processes live on
    proc.wait()
    orphans = [int(p.read_text()) for p in pid_dir.glob("*.pid")]
    assert len(orphans) == 2 and all(Path(f"/proc/{pid}").exists() for pid in orphans)
    for p in pid_dir.glob("*.pid"):
        p.unlink()

    result = run_hpo("run", str(path), cwd=path.parent, env={"PID_DIR": str(pid_dir)})
    assert result.code == 0, result.text
    assert "Stopped 2 trial process(es) left running by an earlier `hpo run`." in result.out
    assert "trial(s) 0, 1 will run again from their stored parameters" in result.out
    for pid in orphans:
        assert (
            not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text().lower()
        )
    trials = load_local(path, "orphans").get_trials()
    assert [t.number for t in trials] == [0, 1, 2]
    assert all(t.state == TrialState.COMPLETE for t in trials)
    assert {p.name for p in pid_dir.glob("*.pid")} == {"0-0.pid", "1-0.pid", "2-0.pid"}


def test_a_multi_objective_study_ends_with_its_pareto_front(
    custom_study: CustomStudy, run_hpo: RunHpo
) -> None:
    path = custom_study(
        "pareto",
        objective=[{"metric": "gain", "direction": "maximize"}, {"metric": "cost", "direction": "minimize"}],
        searchSpace=[{"name": "x", "type": "float", "low": 0.0, "high": 1.0}],
        sampler={"type": "NSGAII", "seed": 1},
        enqueue=[{"x": 0.5}],
        trials={"total": 6, "parallelism": 2},
        template={
            "command": [
                "python",
                "-c",
                # gain peaks at x = 0.6 and cost grows with x: trials past 0.6 are dominated.
                "from hpo_trial import reporting; t = reporting.current_trial(); x = t.params['x'];"
                "t.complete([1 - (x - 0.6) ** 2, x])",
            ]
        },
    )
    result = run_hpo("run", str(path), cwd=path.parent)
    assert result.code == 0, result.text
    study = load_local(path, "pareto")
    assert len(study.get_trials()) == 6
    front = sorted(t.number for t in study.best_trials)
    assert f"Pareto front ({len(front)} trials)" in result.out
    table = result.out.split("Pareto front (", 1)[1]
    shown = sorted(int(m) for m in re.findall(r"^│ (\d+) ", table, re.MULTILINE))
    assert shown == front
    for t in study.get_trials():
        assert (
            f"Trial {t.number} finished with values [{fmt_value(t.values[0])}, {fmt_value(t.values[1])}]"
            in (result.out)
        )


def test_a_relative_sqlite_url_is_the_users_file_for_run_trials_and_report(
    custom_study: CustomStudy, run_hpo: RunHpo, tmp_path: Path
) -> None:
    # The manifest is in a sub-directory; hpo runs from its parent; trial processes run in the
    # manifest's directory. "sqlite:///my.db" must mean <cwd>/my.db for all of them.
    path = custom_study("rel", directory=tmp_path / "examples", trials={"total": 2, "parallelism": 2})
    result = run_hpo("run", "examples/study.yaml", "--storage", "sqlite:///my.db", cwd=tmp_path)
    assert result.code == 0, result.text
    assert (tmp_path / "my.db").exists()
    assert not (path.parent / "my.db").exists()
    study = optuna.load_study(study_name="local.rel", storage=f"sqlite:///{tmp_path / 'my.db'}")
    assert [t.state for t in study.get_trials()] == [TrialState.COMPLETE] * 2  # the trials reported there

    listed = run_hpo("trials", "examples/study.yaml", "--storage", "sqlite:///my.db", cwd=tmp_path)
    assert listed.code == 0, listed.text
    assert "COMPLETE" in listed.out
    report = run_hpo(
        "report", "examples/study.yaml", "--storage", "sqlite:///my.db", "-o", "r.html", cwd=tmp_path
    )
    assert report.code == 0, report.text
    assert (tmp_path / "r.html").stat().st_size > 0


def test_a_search_space_change_the_stored_study_cannot_take_is_refused_naming_the_field(
    custom_study: CustomStudy, run_hpo: RunHpo
) -> None:
    space = [
        {"name": "x", "type": "float", "low": 0.0, "high": 1.0},
        {"name": "y", "type": "categorical", "choices": [0, 1, 2, 3]},
    ]
    path = custom_study("space", searchSpace=space, enqueue=[], trials={"total": 2, "parallelism": 1})
    first = run_hpo("run", str(path), cwd=path.parent)
    assert first.code == 0, first.text

    doc = yaml.safe_load(path.read_text())
    doc["spec"]["searchSpace"][1]["choices"] = [0, 1]
    path.write_text(yaml.safe_dump(doc))
    again = run_hpo("run", str(path), "--trials", "3", cwd=path.parent)
    assert again.code == 1, again.text
    said = " ".join(again.out.split())
    assert (
        "Study failed (InvalidSpec): spec.searchSpace[1].choices: parameter 'y' of trial 0 was sampled "
        "from choices [0, 1, 2, 3], the spec asks for choices [0, 1]"
    ) in said, again.text
    assert "create a new HPOStudy" in said and "Traceback" not in again.text
    # Nothing was asked: no third trial, none left RUNNING with part of its parameters.
    trials = load_local(path, "space").get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.COMPLETE]

    # A numeric range may change (Optuna allows it): the study goes on.
    doc["spec"]["searchSpace"][1]["choices"] = [0, 1, 2, 3]
    doc["spec"]["searchSpace"][0]["high"] = 2.0
    path.write_text(yaml.safe_dump(doc))
    more = run_hpo("run", str(path), "--trials", "3", cwd=path.parent)
    assert more.code == 0, more.text
    assert len(load_local(path, "space").get_trials()) == 3


@pytest.mark.parametrize(
    ("sampler", "changes"),
    [
        # GP: a Gaussian process (torch, which the hpo run environment has) past two start-up trials.
        ({"type": "GP", "seed": 5, "options": {"n_startup_trials": 2, "deterministic_objective": True}}, {}),
        ({"type": "NSGAIII", "seed": 5, "options": {"population_size": 2, "dividing_parameter": 2}}, {}),
        # BruteForce walks a discrete space: 3 x values times 2 y values, each exactly once.
        (
            {"type": "BruteForce", "seed": 5},
            {
                "searchSpace": [
                    {"name": "x", "type": "float", "low": 0.0, "high": 1.0, "step": 0.5},
                    {"name": "y", "type": "int", "low": 0, "high": 1},
                ],
                "trials": {"total": 6},
            },
        ),
    ],
    ids=["GP", "NSGAIII", "BruteForce"],
)
def test_a_study_runs_with_each_added_sampler(
    custom_study: CustomStudy, run_hpo: RunHpo, sampler: dict[str, object], changes: dict[str, object]
) -> None:
    name = f"s-{str(sampler['type']).lower()}"
    changes = {"trials": {"total": 4, "parallelism": 1}, **changes}
    path = custom_study(name, sampler=sampler, enqueue=[], **changes)
    result = run_hpo("run", str(path), cwd=path.parent)
    assert result.code == 0, result.text
    trials = load_local(path, name).get_trials()
    total = len(trials)
    assert total == (6 if sampler["type"] == "BruteForce" else 4)
    assert all(t.state == TrialState.COMPLETE for t in trials)
    assert f"Study finished: {total} of {total} trials finished ({total} complete" in result.out
    seen = {(t.params["x"], t.params["y"]) for t in trials}
    assert len(seen) == total  # no parameter set twice
    if sampler["type"] == "BruteForce":
        assert seen == {(x, y) for x in (0.0, 0.5, 1.0) for y in (0, 1)}


@pytest.mark.parametrize(
    ("pruner", "direction", "enqueue", "steps"),
    [
        # Trial 1 is worse than the best at every step: at two steps the one-sided signed-rank test's
        # p-value is 0.25, below pThreshold.
        (
            {"type": "Wilcoxon", "pThreshold": 0.3, "nStartupSteps": 2},
            "minimize",
            [{"x": 0.3, "y": 0}, {"x": 0.9, "y": 3}],
            [1, 2],
        ),
        # Trial 1's values (0.96 down to 0.81) are above upper: pruned at the first step the warm-up
        # allows (Optuna's Threshold pruner checks steps from nWarmupSteps on).
        (
            {"type": "Threshold", "upper": 0.5, "nWarmupSteps": 2},
            "minimize",
            [{"x": 0.3, "y": 0}, {"x": 0.9, "y": 3}],
            [1, 2],
        ),
        # Maximizing values that fall at every step: no improvement for `patience` steps, so from step 3
        # the wrapped Median pruner is asked, and it prunes the trial below the first one's median (the
        # Median pruner alone would have pruned it at step 1).
        (
            {"type": "Patient", "patience": 1, "wrappedPruner": {"type": "Median", "nStartupTrials": 1}},
            "maximize",
            [{"x": 0.9, "y": 3}, {"x": 0.3, "y": 0}],
            [1, 2, 3],
        ),
    ],
    ids=["Wilcoxon", "Threshold", "Patient"],
)
def test_a_study_runs_with_each_added_pruner(
    custom_study: CustomStudy,
    run_hpo: RunHpo,
    pruner: dict[str, object],
    direction: str,
    enqueue: list[dict[str, object]],
    steps: list[int],
) -> None:
    name = f"p-{str(pruner['type']).lower()}"
    path = custom_study(
        name,
        objective=[{"metric": "loss", "direction": direction}],
        trials={"total": 2, "parallelism": 1},
        enqueue=enqueue,
        pruner=pruner,
    )
    result = run_hpo("run", str(path), cwd=path.parent)
    assert result.code == 0, result.text
    first, second = load_local(path, name).get_trials()
    assert first.state == TrialState.COMPLETE and sorted(first.intermediate_values) == [1, 2, 3, 4]
    assert second.state == TrialState.PRUNED and sorted(second.intermediate_values) == steps
    assert "Study finished: 2 of 2 trials finished (1 complete, 1 pruned, 0 failed)." in result.out


def test_the_added_samplers_and_pruners_are_checked_naming_the_field(
    custom_study: CustomStudy, run_hpo: RunHpo
) -> None:
    path = custom_study(
        "bad", pruner={"type": "Patient", "patience": 1, "wrappedPruner": {"type": "Hyperband"}}
    )
    result = run_hpo("run", str(path), cwd=path.parent)
    assert result.code != 0
    assert "spec.pruner.wrappedPruner.maxResource" in result.text


def test_run_honours_spec_suspend(custom_study: CustomStudy, run_hpo: RunHpo) -> None:
    path = custom_study("held", suspend=True, trials={"total": 3, "parallelism": 1})
    result = run_hpo("run", str(path), cwd=path.parent)
    assert result.code == 0, result.text
    assert "suspended (spec.suspend): no trial is asked or started" in result.out
    assert "Set spec.suspend to false (or remove it) and run again to resume this study." in result.out
    # Nothing asked (the enqueued baseline waits in the study), no trial process started.
    held = load_local(path, "held").get_trials()
    assert [t.state for t in held] == [TrialState.WAITING]
    assert not list(path.parent.glob(".hpo/local.held/trial-*.log"))
    # Resumed: the same study runs its budget.
    manifest = yaml.safe_load(path.read_text())
    manifest["spec"]["suspend"] = False
    path.write_text(yaml.safe_dump(manifest))
    result = run_hpo("run", str(path), cwd=path.parent)
    assert result.code == 0, result.text
    trials = load_local(path, "held").get_trials()
    assert [t.number for t in trials] == [0, 1, 2]
    assert all(t.state == TrialState.COMPLETE for t in trials)


def test_run_says_when_the_sampler_samples_parameters_at_random(
    custom_study: CustomStudy, run_hpo: RunHpo
) -> None:
    space = [
        {"name": "x", "type": "float", "low": 0.0, "high": 1.0},
        {"name": "y", "type": "categorical", "choices": [0, 1, 2, 3]},
    ]
    path = custom_study("cma", searchSpace=space, sampler={"type": "CMAES", "seed": 1}, trials={"total": 2})
    result = run_hpo("run", str(path), cwd=path.parent)
    assert result.code == 0, result.text
    note = "Note: spec.sampler.type: the CMAES sampler cannot sample categorical parameters ('y')"
    assert note in result.out
    assert len(load_local(path, "cma").get_trials()) == 2


def test_validate_says_which_models_are_kept_and_where(tmp_path: Path, run_hpo: RunHpo) -> None:
    repo = Path(__file__).resolve().parents[2]
    doc = yaml.safe_load((repo / "examples" / "quickstart.yaml").read_text())
    best = "the best trial's only (hpo export copies it)"
    expected = {
        "/models/qs": "models every completed trial's, under /models/qs",
        "{path: /models/qs, mode: best}": f"models {best}, under /models/qs",
        "{path: model, mode: none}": "models none saved",
        "{path: model, mode: best}": f"models {best}, under model (relative to template.outputDir, "
        "else the trial's working directory)",
    }
    for save, line in expected.items():
        doc["spec"]["trainer"]["saveModel"] = yaml.safe_load(save)
        path = tmp_path / "study.yaml"
        path.write_text(yaml.safe_dump(doc))
        result = run_hpo("validate", "--no-file-check", str(path), cwd=tmp_path, env={"COLUMNS": "80"})
        assert result.code == 0, result.text
        assert line in " ".join(result.out.split()), result.out
        assert all(len(ln) <= 80 for ln in result.out.splitlines()), result.out
    del doc["spec"]["trainer"]["saveModel"]
    path.write_text(yaml.safe_dump(doc))
    assert "models " not in run_hpo("validate", "--no-file-check", str(path), cwd=tmp_path).out
