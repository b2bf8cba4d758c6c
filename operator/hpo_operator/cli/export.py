"""``hpo export STUDY DIR``: copy the best trial's saved model (``trainer.saveModel``) into a local directory.

Where the model is comes from the study's storage, never from a process's memory: the trial that saved
it recorded the path in its user attribute ``hpo:model_path``; the operator shows the best trial's as
``status.bestTrial.modelPath``.

* A manifest (its local study, ``hpo run``) or ``--storage``/``--study``: the best trial (``--trial N``
  for another, or for a study with several objectives) is read from the storage, and its model
  directory copied.
* An HPOStudy on the cluster: ``status.bestTrial.modelPath`` (``status.paretoFront`` with ``--trial``),
  read through the API. The directory is on the volume the trial pods mount; it is copied when this
  machine sees that path (a hostPath or NFS volume mounted at the same path here). Otherwise the error
  says how to copy it through a pod that mounts the volume's claim (``kubectl cp``): the command does
  not start pods in the cluster itself.
"""

from __future__ import annotations

import argparse
import json
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hpo_trial.contract import ATTR_MODEL_PATH
from rich.console import Console

from hpo_operator.cli.errors import EXIT_INVALID, EXIT_OK, CLIError
from hpo_operator.core.events import fmt_value


def export_command(args: argparse.Namespace, console: Console) -> int:
    from hpo_operator.cli.commands import is_manifest, say

    if not args.target:
        raise CLIError("name a study: a manifest file (its local study) or an HPOStudy's name", EXIT_INVALID)
    dest = Path(args.dir)
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise CLIError(f"{dest} exists and is not an empty directory", EXIT_INVALID)
    if is_manifest(args.target) or args.storage:
        number, path, shown = _from_storage(args)
        volume_hint = ""
    else:
        number, path, shown, volume_hint = _from_cluster(args)
    src = Path(path)
    if not src.is_dir():
        if volume_hint:
            raise CLIError(
                f"trial {number}'s model is at {path} on the volume its pods mount, which this machine "
                f"does not see. {volume_hint}"
            )
        raise CLIError(f"trial {number}'s model directory {path} does not exist (it was moved or deleted)")
    say(f"Copying trial {number}'s model{shown} from {src}")
    shutil.copytree(src, dest, dirs_exist_ok=True)
    files = [p for p in dest.rglob("*") if p.is_file()]
    size = sum(p.stat().st_size for p in files)
    console.print(
        f"Exported trial {number}'s model to {dest} ({len(files)} files, {size / 1e6:.1f} MB)",
        soft_wrap=True,
        markup=False,
    )
    return EXIT_OK


def _from_storage(args: argparse.Namespace) -> tuple[int, str, str]:
    """The trial and its model path, from the study's storage."""
    from optuna.trial import TrialState

    from hpo_operator.cli.commands import resolve_target, say_reading
    from hpo_operator.cli.storage import load_study

    target = resolve_target(args)
    say_reading(target)
    study = load_study(target.storage_url, target.study_name)
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if args.trial is not None:
        trial = next((t for t in study.get_trials(deepcopy=False) if t.number == args.trial), None)
        if trial is None:
            raise CLIError(f"the study has no trial {args.trial}", EXIT_INVALID)
    elif not complete:
        raise CLIError("the study has no complete trial yet")
    elif len(study.directions) > 1:
        front = ", ".join(str(t.number) for t in study.best_trials)
        raise CLIError(
            f"the study has several objectives: name a trial of its Pareto front with --trial ({front})",
            EXIT_INVALID,
        )
    else:
        trial = study.best_trial
    path = trial.user_attrs.get(ATTR_MODEL_PATH)
    if not path:
        raise CLIError(f"trial {trial.number} saved no model (the recipe's trainer.saveModel)")
    metrics = target.metrics or ()
    shown = ""
    if trial.values and metrics:
        shown = f" ({metrics[0]} {fmt_value(trial.values[0])})"
    return trial.number, str(path), shown


def _from_cluster(args: argparse.Namespace) -> tuple[int, str, str, str]:
    """The trial and its model path from the HPOStudy's status, and how to copy it from its volume."""
    from hpo_operator.cli.cluster import get_study
    from hpo_operator.cli.commands import say

    obj, ns = get_study(args.target, args.namespace)
    say(f"Reading HPOStudy {ns}/{args.target} on the cluster: its status, kept by the operator")
    status = obj.get("status") or {}
    entries: list[Mapping[str, Any]] = []
    if status.get("bestTrial"):
        entries.append(status["bestTrial"])
    entries += list(status.get("paretoFront") or ())
    if args.trial is not None:
        entry = next((e for e in entries if e.get("number") == args.trial), None)
        if entry is None:
            raise CLIError(
                f"trial {args.trial} is not the best trial of {ns}/{args.target} (nor on its Pareto front); "
                "pass --storage URL to read any trial from the study's storage",
                EXIT_INVALID,
            )
    elif status.get("bestTrial"):
        entry = status["bestTrial"]
    elif entries:
        front = ", ".join(str(e.get("number")) for e in entries)
        raise CLIError(f"the study has several objectives: name a trial with --trial ({front})", EXIT_INVALID)
    else:
        raise CLIError(f"{ns}/{args.target} has no best trial yet (phase {status.get('phase')})")
    number = int(entry.get("number", -1))
    path = entry.get("modelPath")
    if not path:
        raise CLIError(f"trial {number} saved no model (the recipe's trainer.saveModel)")
    value = entry.get("value")
    shown = f" (value {fmt_value(value)})" if isinstance(value, int | float) else ""
    return number, str(path), shown, _copy_hint(obj, ns, str(path))


def _copy_hint(obj: Mapping[str, Any], namespace: str, path: str) -> str:
    """How to copy ``path`` out of the volume the study's template mounts there."""
    template = (obj.get("spec") or {}).get("template") or {}
    mounts = sorted(
        (m for m in template.get("volumeMounts") or () if path.startswith(str(m.get("mountPath", "")))),
        key=lambda m: len(str(m.get("mountPath", ""))),
    )
    if not mounts:
        return "The template mounts no volume there."
    mount = mounts[-1]
    volume = next((v for v in template.get("volumes") or () if v.get("name") == mount.get("name")), {})
    claim = (volume.get("persistentVolumeClaim") or {}).get("claimName")
    if not claim:
        return f"Mount the volume {mount.get('name')!r} here at {mount.get('mountPath')} and run this again."
    overrides = {
        "spec": {
            "volumes": [{"name": "m", "persistentVolumeClaim": {"claimName": claim, "readOnly": True}}],
            "containers": [
                {
                    "name": "hpo-export",
                    "image": "busybox",
                    "command": ["sleep", "3600"],
                    "volumeMounts": [{"name": "m", "mountPath": str(mount.get("mountPath"))}],
                }
            ],
        }
    }
    return (
        f"Copy it through a pod that mounts the claim {claim!r}: "
        f"`kubectl -n {namespace} run hpo-export --image=busybox --restart=Never "
        f"--overrides='{json.dumps(overrides, separators=(',', ':'))}'`, "
        f"then `kubectl -n {namespace} cp hpo-export:{path} DIR` and "
        f"`kubectl -n {namespace} delete pod hpo-export`."
    )


__all__ = ["export_command"]
