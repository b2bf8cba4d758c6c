"""``trainer.saveModel`` mode best on a real control plane: the operator is killed and started again in
the middle of the study, and at the end exactly one model is on the volume, the status points at it
(derived from the storage by an operator that never saw the earlier trials), and ``hpo export`` copies it.

The trials run the built-in recipe (``python -m hpo_trial``) on the offline tiny BERT; the harness's node
agent runs them as local processes with the ``hostPath`` volume as the host directory itself, mounted at
the same path, so the models land where this test (and ``hpo export``) can see them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import optuna
import pytest
from hpo_operator.core import names
from hpo_operator.core.export import EXPORT_LABEL
from hpo_trial.contract import ATTR_MODEL_PATH
from optuna.trial import TrialState

from tests.cli.test_builtin import OBJECTIVE
from tests.integration.operator_env import (
    Operator,
    apply,
    get_study,
    load_study,
    wait_for,
    wait_phase,
)
from tests.trial.conftest import hf_home, tiny_data, tiny_model
from tests.trial.helpers import OFFLINE_ENV, TinyData

__all__ = ["hf_home", "tiny_data", "tiny_model"]


def best_only_study(name: str, namespace: str, model: str, data: TinyData, models: Path, hf: str) -> dict:
    env = {**OFFLINE_ENV, "HF_HOME": hf, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    spec: dict[str, Any] = {
        "objective": [{"metric": OBJECTIVE, "direction": "maximize"}],
        "searchSpace": [
            {"name": "learning_rate", "type": "float", "low": 1e-4, "high": 1e-2, "log": True},
            {"name": "warmup_ratio", "type": "float", "low": 0.0, "high": 0.2},
        ],
        "trials": {"total": 3, "parallelism": 1, "maxFailed": 0},
        "sampler": {"type": "TPE", "seed": 1},
        # From a learning rate too small to learn anything up: models are saved, then replaced.
        "enqueue": [
            {"learning_rate": 1e-4, "warmup_ratio": 0.1},
            {"learning_rate": 1e-3, "warmup_ratio": 0.1},
            {"learning_rate": 5e-3, "warmup_ratio": 0.0},
        ],
        "trainer": {
            "model": model,
            "train": {"files": data.pairs_train},
            "loss": {"name": "CoSENTLoss"},
            "evaluator": {
                "name": "EmbeddingSimilarityEvaluator",
                "dataset": {"files": data.pairs_dev},
                "args": {"name": "sts-dev", "main_similarity": "cosine"},
            },
            "arguments": {
                "per_device_train_batch_size": 16,
                "num_train_epochs": 1,
                "seed": 7,
                "use_cpu": True,
            },
            "saveModel": {"path": str(models), "mode": "best"},
        },
        "template": {
            # The node agent runs commands, not images: the built-in runner on this machine's Python.
            "command": ["python", "-m", "hpo_trial"],
            "env": [{"name": k, "value": v} for k, v in env.items()],
            "resources": {"limits": {"cpu": "1"}},
            "volumes": [{"name": "models", "hostPath": {"path": str(models), "type": "DirectoryOrCreate"}}],
            "volumeMounts": [{"name": "models", "mountPath": str(models)}],
        },
    }
    return {
        "apiVersion": names.API_VERSION,
        "kind": names.KIND,
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


@pytest.mark.slow
def test_best_only_keeps_one_model_and_the_status_points_at_it_across_an_operator_restart(
    cluster: Any,
    namespace: str,
    operator: Operator,
    storage_url: str,
    tiny_model: str,
    tiny_data: TinyData,
    hf_home: str,
    tmp_path: Path,
) -> None:
    models = tmp_path / "models"
    apply(cluster, best_only_study("keep", namespace, tiny_model, tiny_data, models, hf_home))

    def first_complete() -> bool:
        status = (get_study(cluster, namespace, "keep").get("status") or {}).get("bestTrial") or {}
        return bool(status.get("modelPath"))

    wait_for("a best trial with its model", first_complete, timeout=300)
    operator.kill()  # no memory survives: the next operator reads everything from storage and the API
    operator.start()
    body = wait_phase(cluster, namespace, "keep", ("Succeeded", "Failed"), timeout=600)
    assert body["status"]["phase"] == "Succeeded", body["status"]

    study: optuna.Study = load_study(storage_url, body)
    trials = study.get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 3
    best = study.best_trial
    saved = [t.number for t in trials if ATTR_MODEL_PATH in t.user_attrs]
    assert len(saved) >= 2, f"only trials {saved} saved a model: nothing was replaced"
    assert sorted(p.name for p in models.iterdir()) == [f"trial-{best.number}"]  # exactly one model
    model_path = str((models / f"trial-{best.number}").resolve())
    assert body["status"]["bestTrial"]["number"] == best.number
    assert body["status"]["bestTrial"]["modelPath"] == model_path
    assert (Path(model_path) / "config.json").is_file()

    # Started once more after the end: the status it keeps still points at the model.
    operator.stop()
    operator.start()
    wait_for(
        "the restarted operator to resume the finished study",
        lambda: (
            "Resuming is processed" in operator.log.split(f"===== operator start {operator.starts} =====")[-1]
        ),
        timeout=60,
    )
    time.sleep(3)  # a few reconcile intervals (1 s)
    assert get_study(cluster, namespace, "keep")["status"]["bestTrial"]["modelPath"] == model_path

    out = tmp_path / "exported"
    done = subprocess.run(
        [sys.executable, "-m", "hpo_operator.cli.main", "export", "keep", str(out), "-n", namespace],
        env={**os.environ, "KUBECONFIG": str(cluster.kubeconfig)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"Exported trial {best.number}'s model to {out}" in done.stdout
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in Path(model_path).iterdir())
    shutil.rmtree(models)
    gone = subprocess.run(
        [
            sys.executable,
            "-m",
            "hpo_operator.cli.main",
            "export",
            "keep",
            str(tmp_path / "again"),
            "-n",
            namespace,
        ],
        env={**os.environ, "KUBECONFIG": str(cluster.kubeconfig)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    # Not seen from here any more: the copy goes through a pod that mounts the study's volume. The
    # harness's node agent has no exec, so the copy fails, saying so in one line, and the pod goes.
    assert gone.returncode == 1, gone.stdout + gone.stderr
    assert f"Copying trial {best.number}'s model from {model_path} through pod" in gone.stderr, gone.stderr
    assert "cannot run tar in pod" in gone.stderr and "<html" not in gone.stderr.lower(), gone.stderr
    assert not (tmp_path / "again").exists() or not any((tmp_path / "again").iterdir())
    wait_for(
        "the export pod to be deleted",
        lambda: (
            not cluster.core().list_namespaced_pod(namespace, label_selector=f"{EXPORT_LABEL}=keep").items
        ),
        timeout=60,
    )
