"""Fixtures for the ``hpo`` command's tests: the real command in a subprocess, studies written to temp dirs.

Most tests run a custom-container study (``tests/cli/objective.py``, the public reporting API, no model):
fast, and the same machinery as the built-in runner. The tiny BERT and its data come from the trial
runner's tests (``tests/trial``), built offline.
"""

from __future__ import annotations

import copy
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml

from tests.trial.conftest import tiny_data, tiny_model  # the trial runner's offline model and data
from tests.trial.helpers import OFFLINE_ENV

__all__ = ["tiny_data", "tiny_model"]

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]


@dataclass
class Result:
    code: int
    out: str
    err: str

    @property
    def text(self) -> str:
        return self.out + self.err


def hpo_env(extra: Mapping[str, str] | None = None, *, hf_home: Path | None = None) -> dict[str, str]:
    env = {**os.environ, **OFFLINE_ENV, "COLUMNS": "200"}
    if hf_home is not None:
        env["HF_HOME"] = str(hf_home)
    env.update(extra or {})
    return env


RunHpo = Callable[..., Result]


@pytest.fixture
def run_hpo(tmp_path_factory: pytest.TempPathFactory) -> RunHpo:
    """Run ``hpo ARGS`` (this interpreter, ``python -m hpo_operator.cli.main``) and capture its output."""
    hf_home = tmp_path_factory.mktemp("hf-home")

    def run(*args: str, cwd: Path, env: Mapping[str, str] | None = None, timeout: float = 300) -> Result:
        done = subprocess.run(
            [sys.executable, "-m", "hpo_operator.cli.main", *args],
            cwd=cwd,
            env=hpo_env(env, hf_home=hf_home),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        print(f"$ hpo {' '.join(args)}  (exit {done.returncode})\n{done.stdout}\n{done.stderr}")
        return Result(done.returncode, done.stdout, done.stderr)

    return run


CUSTOM_SPEC: dict[str, Any] = {
    "objective": [{"metric": "loss", "direction": "minimize"}],
    "searchSpace": [
        {"name": "x", "type": "float", "low": 0.0, "high": 1.0},
        {"name": "y", "type": "int", "low": 0, "high": 3},
    ],
    "trials": {"total": 5, "parallelism": 2, "maxFailed": 3, "retries": 0},
    "sampler": {"type": "TPE", "seed": 5},
    "enqueue": [{"x": 0.25, "y": 0}],
    "template": {"command": ["python", "objective.py"]},
}


def manifest(name: str, spec: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "hpo.dev/v1alpha1",
        "kind": "HPOStudy",
        "metadata": {"name": name},
        "spec": dict(spec),
    }


def write_study(directory: Path, name: str, spec: Mapping[str, Any], filename: str = "study.yaml") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / filename
    path.write_text(yaml.safe_dump(manifest(name, spec), sort_keys=False))
    return path


CustomStudy = Callable[..., Path]


@pytest.fixture
def custom_study(tmp_path: Path) -> CustomStudy:
    """A manifest running ``objective.py`` (copied next to it); keyword arguments update the spec."""

    def make(name: str = "quad", directory: Path | None = None, **changes: Any) -> Path:
        d = directory or tmp_path / name
        d.mkdir(parents=True, exist_ok=True)
        shutil.copy(HERE / "objective.py", d / "objective.py")
        spec = copy.deepcopy(CUSTOM_SPEC)
        for key, value in changes.items():
            if isinstance(value, dict) and isinstance(spec.get(key), dict):
                spec[key].update(value)
            else:
                spec[key] = value
        return write_study(d, name, spec)

    return make


MIXED_SPEC: dict[str, Any] = {
    "objective": [{"metric": "eval_loss", "direction": "minimize"}],
    "searchSpace": [
        {"name": "optim", "type": "categorical", "choices": ["adamw", "sgd", "adafactor_with_a_long_name"]},
        {"name": "fp16", "type": "categorical", "choices": [True, False]},
        {"name": "batch", "type": "categorical", "choices": [16, 32, 64]},
        {"name": "learning_rate", "type": "float", "low": 1.0e-6, "high": 1.0e-4, "log": True},
    ],
    "trials": {"total": 10, "parallelism": 1},
    "sampler": {"type": "TPE", "seed": 3},
    "pruner": {"type": "Median", "nStartupTrials": 2},
    "template": {"command": ["python", "objective_mixed.py"]},
}


@pytest.fixture(scope="session")
def mixed_study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished local study (``hpo run`` once per session) over string, boolean and integer choices and
    a log-scaled float, in that order (not alphabetical), with completed and pruned trials; the manifest's
    path. Read-only: tests that change the study make their own."""
    d = tmp_path_factory.mktemp("mixed")
    shutil.copy(HERE / "objective_mixed.py", d / "objective_mixed.py")
    path = write_study(d, "mixed", MIXED_SPEC)
    done = subprocess.run(
        [sys.executable, "-m", "hpo_operator.cli.main", "run", str(path)],
        cwd=d,
        env=hpo_env(),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    states = {t.state.name for t in load_local(path, "mixed").get_trials()}
    assert states == {"COMPLETE", "PRUNED"}, states
    return path


def local_storage(path: Path) -> str:
    """The SQLite URL ``hpo run`` uses for a manifest by default."""
    return f"sqlite:///{path.parent / (path.stem + '.hpo.db')}"


def load_local(path: Path, name: str) -> optuna.Study:
    return optuna.load_study(study_name=f"local.{name}", storage=local_storage(path))
