"""``hpo run`` and the trial pod's volumes: a ConfigMap from the manifest file and an emptyDir become
local directories (paths rewritten in command, args and env); any other volume a path needs is refused."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from hpo_operator.cli.errors import EXIT_FAILED, EXIT_INVALID
from hpo_operator.cli.volumes import VolumeError, prepare, strings
from hpo_operator.core.parse import parse_spec
from optuna.trial import TrialState

from tests.cli.conftest import RunHpo, load_local, write_study

REPO = Path(__file__).resolve().parents[2]


def test_the_custom_container_example_runs_locally(tmp_path: Path, run_hpo: RunHpo) -> None:
    """The example mounts its script from a ConfigMap in the same file at /app."""
    path = tmp_path / "custom-container-study.yaml"
    shutil.copy(REPO / "examples" / "custom-container-study.yaml", path)
    result = run_hpo("run", str(path), "--trials", "3", cwd=tmp_path)
    assert result.code == 0, result.text
    trials = load_local(path, "logreg-custom").get_trials()
    assert len(trials) == 3
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)
    assert trials[0].state == TrialState.COMPLETE and trials[0].intermediate_values
    script = tmp_path / ".hpo" / "local.logreg-custom" / "volumes" / "code" / "objective.py"
    assert "reporting.current_trial()" in script.read_text()


def _spec(template: dict[str, object]) -> object:
    return parse_spec(
        {
            "objective": [{"metric": "loss"}],
            "searchSpace": [{"name": "x", "type": "float", "low": 0.0, "high": 1.0}],
            "template": template,
        }
    )


def test_mounts_become_local_directories(tmp_path: Path) -> None:
    spec = _spec(
        {
            "command": ["python", "/app/bin/run.py"],
            "volumes": [
                {
                    "name": "code",
                    "configMap": {"name": "cm", "items": [{"key": "main", "path": "bin/run.py"}]},
                },
                {"name": "scratch", "emptyDir": {}},
                {"name": "cfg", "configMap": {"name": "cm"}},
            ],
            "volumeMounts": [
                {"name": "code", "mountPath": "/app"},
                {"name": "scratch", "mountPath": "/app/tmp/"},
                {"name": "cfg", "mountPath": "/etc/settings.yaml", "subPath": "settings"},
            ],
        }
    )
    cms = {"cm": {"data": {"main": "print('hi')\n", "settings": "a: 1\n"}}}
    volumes = prepare(spec.template, cms, tmp_path)  # type: ignore[attr-defined]
    assert (tmp_path / "code" / "bin" / "run.py").read_text() == "print('hi')\n"
    assert (tmp_path / "scratch").is_dir() and not any((tmp_path / "scratch").iterdir())
    assert volumes.rewrite("/app/bin/run.py") == str(tmp_path / "code" / "bin" / "run.py")
    assert volumes.rewrite("/app/tmp/out") == str(tmp_path / "scratch" / "out")  # the longer mount wins
    assert volumes.rewrite("/etc/settings.yaml") == str(tmp_path / "cfg" / "settings")
    assert volumes.rewrite("/application") == "/application"  # a prefix of a name is not a path under it
    assert volumes.missing == {}


def test_a_path_on_a_volume_that_cannot_exist_here_is_refused(tmp_path: Path, run_hpo: RunHpo) -> None:
    template = {
        "command": ["python", "/data/train.py"],
        "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "datasets"}}],
        "volumeMounts": [{"name": "data", "mountPath": "/data"}],
    }
    with pytest.raises(VolumeError, match=r"^spec\.template\.command\[1\]: '/data/train.py' is on "):
        prepare(_spec(template).template, {}, tmp_path).check({"spec.template.command[1]": "/data/train.py"})  # type: ignore[attr-defined]

    spec = {
        "objective": [{"metric": "loss"}],
        "searchSpace": [{"name": "x", "type": "float", "low": 0.0, "high": 1.0}],
        "template": template,
    }
    path = write_study(tmp_path / "pvc", "pvc", spec)
    result = run_hpo("run", str(path), cwd=path.parent)
    assert result.code == EXIT_INVALID, result.text
    assert (
        "spec.template.command[1]: '/data/train.py' is on spec.template.volumes[0] "
        "(data: a persistentVolumeClaim volume), which hpo run cannot provide"
    ) in result.text
    assert not (path.parent / "study.hpo.db").exists()  # refused before the storage was opened


def test_a_failed_study_says_how_to_start_over(tmp_path: Path, run_hpo: RunHpo) -> None:
    spec = {
        "objective": [{"metric": "loss"}],
        "searchSpace": [{"name": "x", "type": "float", "low": 0.0, "high": 1.0}],
        "trials": {"total": 2, "maxFailed": 0},
        "template": {"command": ["python", "-c", "raise SystemExit(4)"]},
    }
    path = write_study(tmp_path / "boom", "boom", spec)
    result = run_hpo("run", str(path), cwd=path.parent)
    assert result.code == EXIT_FAILED, result.text
    assert "to start over, fix the cause and delete study.hpo.db" in result.text


def test_modes_unsafe_paths_and_the_longest_mount(tmp_path: Path) -> None:
    cms = {"cm": {"data": {"run": "#!/bin/sh\necho hi\n", "cfg": "a: 1\n"}}}
    spec = _spec(
        {
            "command": ["/scripts/run"],
            "volumes": [
                {"name": "scripts", "configMap": {"name": "cm", "defaultMode": 0o755}},
                {"name": "data", "persistentVolumeClaim": {"claimName": "datasets"}},
                {
                    "name": "cfg",
                    "configMap": {"name": "cm", "items": [{"key": "cfg", "path": "c.yaml", "mode": 0o600}]},
                },
            ],
            "volumeMounts": [
                {"name": "scripts", "mountPath": "/scripts"},
                {"name": "data", "mountPath": "/data"},
                {"name": "cfg", "mountPath": "/data/cfg"},
            ],
        }
    )
    volumes = prepare(spec.template, cms, tmp_path)  # type: ignore[attr-defined]
    assert (tmp_path / "scripts" / "run").stat().st_mode & 0o777 == 0o755  # a script keeps its x bit
    assert (tmp_path / "cfg" / "c.yaml").stat().st_mode & 0o777 == 0o600
    # The ConfigMap mounted inside the PVC's path is here; the rest of the PVC is not.
    volumes.check({"spec.template.args[0]": "/data/cfg/c.yaml"})
    with pytest.raises(
        VolumeError,
        match=r"^spec\.template\.args\[1\]: '/data/train\.jsonl' is on spec\.template\.volumes\[1\]",
    ):
        volumes.check({"spec.template.args[1]": "/data/train.jsonl"})
    # A recipe's data files count as paths too.
    trainer = {
        "train": {"files": ["/data/cfg/c.yaml", "local.jsonl"]},
        "eval": {"files": ["/data/dev.jsonl"]},
    }
    found = strings(trainer, "spec.trainer")
    assert found["spec.trainer.train.files[0]"] == "/data/cfg/c.yaml"
    assert volumes.rewrite_all(trainer)["train"]["files"] == [str(tmp_path / "cfg" / "c.yaml"), "local.jsonl"]
    with pytest.raises(VolumeError, match=r"^spec\.trainer\.eval\.files\[0\]: '/data/dev\.jsonl' is on "):
        volumes.check(found)

    for bad, field in [
        (
            {"name": "v", "configMap": {"name": "cm", "items": [{"key": "cfg", "path": "../../.bashrc"}]}},
            r"spec\.template\.volumes\[0\]\.configMap\.items\[0\]\.path",
        ),
        (
            {"name": "v", "configMap": {"name": "cm", "items": [{"key": "cfg", "path": "/etc/passwd"}]}},
            r"spec\.template\.volumes\[0\]\.configMap\.items\[0\]\.path",
        ),
    ]:
        escape = _spec(
            {"command": ["x"], "volumes": [bad], "volumeMounts": [{"name": "v", "mountPath": "/v"}]}
        )
        with pytest.raises(VolumeError, match=rf"^{field}: .* must be a relative path without '\.\.'"):
            prepare(escape.template, cms, tmp_path / "escape")  # type: ignore[attr-defined]
    sub = _spec(
        {
            "command": ["x"],
            "volumes": [{"name": "v", "emptyDir": {}}],
            "volumeMounts": [{"name": "v", "mountPath": "/v", "subPath": "../up"}],
        }
    )
    with pytest.raises(VolumeError, match=r"^spec\.template\.volumeMounts\[0\]\.subPath: '\.\./up' must be"):
        prepare(sub.template, cms, tmp_path / "sub")  # type: ignore[attr-defined]
    assert not (tmp_path / ".bashrc").exists() and not (tmp_path.parent / ".bashrc").exists()
