"""The arithmetic of ``benchmarks/operator_turnaround.py`` (slots, gaps, stages, utilization), and its
trial wrapper run once for real against a SQLite study, so the times it parses are the ones it writes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest

from benchmarks.operator_turnaround import (
    STAGES,
    TRIAL_SCRIPT,
    Gap,
    ModeResult,
    Run,
    assign_slots,
    ideal_seconds,
    parse_args,
    parse_output,
    percentile,
    stage_durations,
    stats,
    summarize,
    trial_command,
    utilization,
)


def test_ideal_is_whole_waves_of_trials() -> None:
    assert ideal_seconds(12, 3, 5.0) == 20.0
    assert ideal_seconds(13, 3, 5.0) == 25.0  # a 5th wave for the 13th trial
    assert ideal_seconds(2, 8, 1.5) == 1.5
    with pytest.raises(ValueError, match="parallelism"):
        ideal_seconds(4, 0, 1.0)
    with pytest.raises(ValueError, match="trial_seconds"):
        ideal_seconds(4, 2, 0.0)


def test_utilization_is_ideal_over_wall() -> None:
    assert utilization(20.0, 25.0) == pytest.approx(0.8)
    with pytest.raises(ValueError, match="wall time"):
        utilization(20.0, 0.0)


def test_percentiles_interpolate_between_ranks() -> None:
    assert percentile([4.0, 1.0, 3.0, 2.0], 50) == pytest.approx(2.5)
    assert percentile([1.0, 2.0, 3.0, 4.0], 90) == pytest.approx(3.7)
    assert percentile([0.25], 90) == 0.25
    s = stats([1.0, 2.0, 3.0, 4.0])
    assert (s.n, s.median, s.max, s.mean) == (4, 2.5, 4.0, 2.5)
    assert stats([]).median is None


def test_slots_are_filled_by_the_one_free_longest() -> None:
    runs = [
        Run(0, 0.0, 5.0),
        Run(1, 0.1, 5.2),
        Run(2, 5.6, 10.0),  # slot 1 (free since 5.2): slot 0 was taken at 5.3
        Run(3, 5.3, 10.4),  # slot 0 (free since 5.0, the longest)
        Run(4, 10.6, 12.0),  # slot 1 again: free since 10.0, slot 0 only since 10.4
    ]
    s = assign_slots(runs, 2)
    assert s.slot_of == {0: 0, 1: 1, 3: 0, 2: 1, 4: 1}
    assert [(g.slot, g.prev, g.next) for g in s.gaps] == [(0, 0, 3), (1, 1, 2), (1, 2, 4)]
    assert [g.seconds for g in s.gaps] == pytest.approx([0.3, 0.4, 0.6])


def test_an_unused_slot_is_taken_before_a_freed_one() -> None:
    # Three GPUs, trials one after the other: each goes to a GPU nobody used, so no slot had a gap.
    s = assign_slots([Run(0, 0.0, 1.0), Run(1, 2.0, 3.0), Run(2, 4.0, 5.0), Run(3, 5.5, 6.0)], 3)
    assert s.slot_of == {0: 0, 1: 1, 2: 2, 3: 0}
    assert [(g.prev, g.next, g.seconds) for g in s.gaps] == [(0, 3, 4.5)]


def test_impossible_schedules_are_refused() -> None:
    with pytest.raises(ValueError, match=r"trial 1 started at 4\.000 while all 1 slots were busy"):
        assign_slots([Run(0, 0.0, 5.0), Run(1, 4.0, 6.0)], 1)
    with pytest.raises(ValueError, match="trial 0 ends"):
        assign_slots([Run(0, 2.0, 1.0)], 1)
    with pytest.raises(ValueError, match="trial 0 appears twice"):
        assign_slots([Run(0, 0.0, 1.0), Run(0, 2.0, 3.0)], 2)
    with pytest.raises(ValueError, match="slots"):
        assign_slots([], 0)


def test_stages_split_a_gap_and_add_up_to_it() -> None:
    stages = [(label, side, event) for label, side, event, _ in STAGES["operator"]]
    times = {
        0: {"exit": 10.0, "pod_done": 10.05},
        1: {"asked": 10.25, "pod_added": 10.3, "pod_bound": 10.31, "spawn": 10.4},
        2: {"exit": 20.0},  # no pod_done: this gap is skipped, not half-counted
        3: {"asked": 20.2, "pod_added": 20.3, "pod_bound": 20.3, "spawn": 20.5},
    }
    gaps = [Gap(0, 0, 1, 0.4), Gap(0, 2, 3, 0.5)]
    out = stage_durations(gaps, stages, times)
    assert list(out) == [label for label, _, _ in stages[1:]]
    assert [v for values in out.values() for v in values] == pytest.approx([0.05, 0.2, 0.05, 0.01, 0.09])
    assert sum(v[0] for v in out.values()) == pytest.approx(gaps[0].seconds)
    with pytest.raises(ValueError, match="side"):
        stage_durations(gaps, [("a", "prev", "exit"), ("b", "other", "spawn")], times)


def test_summary_of_a_mode() -> None:
    # P=2, D=1: four trials of 1.5 s each, gaps of 0.5 and 0.7 s; submitted at 100, done at 104.
    times = {
        0: {"spawn": 100.5, "exit": 102.0, "told": 101.8, "asked": 100.4},
        1: {"spawn": 100.6, "exit": 102.1, "told": 101.9, "asked": 100.4},
        2: {"spawn": 102.5, "exit": 104.0 - 0.2, "told": 103.7, "asked": 102.3},
        3: {"spawn": 102.8, "exit": 103.9, "told": 103.8, "asked": 102.6},
    }
    runs = [Run(n, t["spawn"], t["exit"]) for n, t in times.items()]
    result = ModeResult("local", 0, 100.0, 104.0, runs, times, schedule=assign_slots(runs, 2))
    s = summarize([result], 2, ideal_seconds(4, 2, 1.0))
    assert s["wall_median_s"] == 4.0
    assert s["utilization"] == pytest.approx(0.5)
    assert s["startup_median_s"] == pytest.approx(0.5)
    assert s["tail_median_s"] == pytest.approx(0.1)  # the last process exited at 103.9
    assert s["gap_s"]["n"] == 2
    assert s["gap_s"]["median"] == pytest.approx(0.6)  # 0.5 and 0.7
    assert s["tell_to_ask_s"]["median"] == pytest.approx(0.6)  # 102.3 - 101.8, 102.6 - 101.9
    assert s["idle_slot_seconds_median"] == pytest.approx(2 * 4.0 - (1.5 + 1.5 + 1.3 + 1.1))
    stage = s["gap_stages_s"]["exited -> next trial asked"]
    assert stage["n"] == 2 and stage["median"] == pytest.approx(0.4)
    first = s["startup_stages_s"]  # trial 0 started first: asked at 100.4, spawned at 100.5
    assert first["submitted -> first trial asked"]["median"] == pytest.approx(0.4)
    assert first["asked -> its process spawned"]["median"] == pytest.approx(0.1)


def test_output_parsing_names_what_is_missing() -> None:
    record = {"trial": 3, "start": 1.1, "work_start": 1.5, "work_end": 2.5, "end": 2.6}
    text = f"TURNAROUND_SPAWN 1.0\nnoise\nTURNAROUND {json.dumps(record)}\nTURNAROUND_EXIT 2.9\n"
    assert parse_output(text, 3, "pod x") == {
        "spawn": 1.0,
        "start": 1.1,
        "work_start": 1.5,
        "work_end": 2.5,
        "end": 2.6,
        "exit": 2.9,
    }
    with pytest.raises(RuntimeError, match="pod x: the trial's output lacks exit"):
        parse_output(text.replace("TURNAROUND_EXIT 2.9\n", ""), 3, "pod x")
    with pytest.raises(RuntimeError, match="expected trial 4"):
        parse_output(text, 4, "pod x")


def test_flags_are_checked_by_name(capsys: pytest.CaptureFixture[str]) -> None:
    for argv, field in (
        (["--trials", "0"], "--trials"),
        (["--trials", "101"], "--trials"),
        (["--parallelism", "0"], "--parallelism"),
        (["--trial-seconds", "nan"], "--trial-seconds"),
        (["--repeats", "0"], "--repeats"),
        (["--modes", "local,kind"], "--modes"),
    ):
        with pytest.raises(SystemExit):
            parse_args(argv)
        assert field in capsys.readouterr().err
    args = parse_args(["--modes", "operator,local,operator"])
    assert args.modes == ["operator", "local"]
    assert (args.trials, args.parallelism, args.trial_seconds) == (12, 3, 5.0)


def test_the_trial_wrapper_reports_its_times(tmp_path: Path) -> None:
    """The benchmark's own trial, run as the harness and ``hpo run`` run it, against a real study."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    url = f"sqlite:///{tmp_path / 'study.db'}"
    study = optuna.create_study(study_name="s", storage=url, direction="maximize")
    trial = study.ask({"x": optuna.distributions.FloatDistribution(-5.0, 5.0)})
    script = tmp_path / "trial.py"
    script.write_text(TRIAL_SCRIPT)
    env = {
        **os.environ,
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "/usr/bin:/bin")]),
        "HPO_STORAGE_URL": url,
        "HPO_STUDY_NAME": "s",
        "HPO_TRIAL_NUMBER": str(trial.number),
        "HPO_TRIAL_PARAMS": json.dumps(trial.params),
        "HPO_OBJECTIVE": json.dumps([{"metric": "score", "direction": "maximize"}]),
        "TURNAROUND_TRIAL_SECONDS": "0.2",
    }
    done = subprocess.run(trial_command(str(script)), env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    t = parse_output(done.stdout, trial.number, "trial")
    order = ["spawn", "start", "work_start", "work_end", "end", "exit"]
    assert [t[k] for k in order] == sorted(t[k] for k in order)
    assert t["work_end"] - t["work_start"] == pytest.approx(0.2, abs=0.1)
    frozen = study.trials[0]
    assert frozen.state == optuna.trial.TrialState.COMPLETE
    assert frozen.value == pytest.approx(-((trial.params["x"] - 1.0) ** 2))
    assert t["work_end"] <= frozen.datetime_complete.timestamp() <= t["end"]
