"""``hpo run`` with ``spec.trials.perGPU``: up to perGPU trial processes per visible GPU, each pinned with
``CUDA_VISIBLE_DEVICES``; without a GPU, a note that perGPU has no effect. The GPUs are named through
``CUDA_VISIBLE_DEVICES`` (this machine has none): the trial processes only record what they are given."""

from __future__ import annotations

import json
from pathlib import Path

from tests.cli.conftest import CUSTOM_SPEC, RunHpo, load_local, write_study

PROBE = """
import json, os, sys, time
from hpo_trial import reporting

trial = reporting.current_trial()
start = time.time()
time.sleep(float(os.environ.get("HOLD_SECONDS", "1.5")))
cuda = os.environ.get("CUDA_VISIBLE_DEVICES")
record = {"trial": trial.number, "cuda": cuda, "start": start, "end": time.time()}
with open(os.path.join(os.environ["RECORD_DIR"], f"{trial.number}.json"), "w") as f:
    json.dump(record, f)
trial.complete(float(trial.params["x"]))
"""


def probe_study(tmp_path: Path, **trials: int) -> tuple[Path, Path]:
    records = tmp_path / "records"
    records.mkdir()
    (tmp_path / "probe.py").write_text(PROBE)
    spec = {
        **CUSTOM_SPEC,
        "trials": {"maxFailed": 0, **trials},
        "enqueue": [],
        "template": {
            "command": ["python", "probe.py"],
            "env": [{"name": "RECORD_DIR", "value": str(records)}],
        },
    }
    return write_study(tmp_path, "gpus", spec), records


def most_at_once(records: list[dict], cuda: str | None = None) -> int:
    """The most records whose [start, end] overlap at one moment (of one device, if given)."""
    edges = sorted(
        [(r["start"], 1) for r in records if cuda is None or r["cuda"] == cuda]
        + [(r["end"], -1) for r in records if cuda is None or r["cuda"] == cuda]
    )
    now = best = 0
    for _, step in edges:
        now += step
        best = max(best, now)
    return best


def test_up_to_per_gpu_processes_run_on_each_visible_gpu(run_hpo: RunHpo, tmp_path: Path) -> None:
    path, records_dir = probe_study(tmp_path, total=8, parallelism=6, perGPU=2)
    result = run_hpo("run", str(path), cwd=tmp_path, env={"CUDA_VISIBLE_DEVICES": "0,1"})
    assert result.code == 0, result.text
    assert "trial processes pinned to 2 GPU(s) (0,1), up to 2 on each (spec.trials.perGPU)" in result.text
    assert "4 at once, not spec.trials.parallelism (6)" in result.text
    records = [json.loads(p.read_text()) for p in records_dir.iterdir()]
    assert sorted(r["trial"] for r in records) == list(range(8))
    assert {r["cuda"] for r in records} == {"0", "1"}  # each process sees one GPU
    assert most_at_once(records) == 4
    assert most_at_once(records, "0") == 2 and most_at_once(records, "1") == 2
    assert len(load_local(path, "gpus").get_trials()) == 8


def test_without_a_gpu_per_gpu_has_no_effect_and_says_so(run_hpo: RunHpo, tmp_path: Path) -> None:
    path, records_dir = probe_study(tmp_path, total=3, parallelism=3, perGPU=4)
    result = run_hpo("run", str(path), cwd=tmp_path, env={"CUDA_VISIBLE_DEVICES": ""})
    assert result.code == 0, result.text
    assert "spec.trials.perGPU (4) has no effect: no GPU is visible" in result.text
    records = [json.loads(p.read_text()) for p in records_dir.iterdir()]
    assert sorted(r["trial"] for r in records) == [0, 1, 2]
    assert {r["cuda"] for r in records} == {""}  # not pinned: the environment's own value
    assert most_at_once(records) == 3  # the parallelism, uncapped


def test_per_gpu_one_pins_one_process_per_gpu(run_hpo: RunHpo, tmp_path: Path) -> None:
    path, records_dir = probe_study(tmp_path, total=3, parallelism=2)
    result = run_hpo("run", str(path), cwd=tmp_path, env={"CUDA_VISIBLE_DEVICES": "3"})
    assert result.code == 0, result.text
    assert "1 at once, not spec.trials.parallelism (2)" in result.text
    records = [json.loads(p.read_text()) for p in records_dir.iterdir()]
    assert {r["cuda"] for r in records} == {"3"} and most_at_once(records) == 1
