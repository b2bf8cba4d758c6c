"""``hpo export STUDY DIR``: copy the best trial's saved model (``trainer.saveModel``) into a local directory.

Where the model is comes from the study's storage, never from a process's memory: the trial that saved
it recorded the path in its user attribute ``hpo:model_path``; the operator shows the best trial's as
``status.bestTrial.modelPath``.

* A manifest (its local study, ``hpo run``) or ``--storage``/``--study``: the best trial (``--trial N``
  for another, or for a study with several objectives) is read from the storage, and its model
  directory copied.
* An HPOStudy on the cluster: ``status.bestTrial.modelPath`` (``status.paretoFront`` with ``--trial``),
  read through the API. The directory is on the volume the trial pods mount; it is copied directly when
  this machine sees that path (a hostPath or NFS volume mounted at the same path here), otherwise through
  a short-lived pod (:mod:`hpo_operator.core.export`) that mounts the same volume read-only: ``tar``
  in the pod, streamed over the exec API, unpacked here; the pod is deleted afterwards.
"""

from __future__ import annotations

import argparse
import shutil
import tarfile
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, BinaryIO

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
    study: tuple[dict[str, Any], str] | None = None
    if is_manifest(args.target) or args.storage:
        number, path, shown = _from_storage(args)
    else:
        number, path, shown, study = _from_cluster(args)
    src = Path(path)
    if src.is_dir():
        say(f"Copying trial {number}'s model{shown} from {src}")
        shutil.copytree(src, dest, dirs_exist_ok=True)
    elif study is not None:
        _copy_through_pod(*study, number, path, dest, args.image)
    else:
        raise CLIError(f"trial {number}'s model directory {path} does not exist (it was moved or deleted)")
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


def _from_cluster(args: argparse.Namespace) -> tuple[int, str, str, tuple[dict[str, Any], str]]:
    """The trial and its model path from the HPOStudy's status, and the HPOStudy with its namespace."""
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
    return number, str(path), shown, (obj, ns)


def _copy_through_pod(
    obj: dict[str, Any], ns: str, number: int, path: str, dest: Path, image: str | None
) -> None:
    """Copy ``path`` out of the study's volume through a pod that mounts it read-only (then deleted)."""
    from hpo_operator.cli.cluster import kube_client
    from hpo_operator.cli.commands import say
    from hpo_operator.core.export import NoVolume, export_pod
    from hpo_operator.shell.kube import KubeUnavailable

    name = obj["metadata"]["name"]
    template = (obj.get("spec") or {}).get("template") or {}
    kube = kube_client()
    try:
        image = image or template.get("image") or _trial_image(kube.list_pods(ns, name))
        if not image:
            raise CLIError(
                f"trial {number}'s model is at {path} on a volume this machine does not see, and the study "
                "names no image to copy it with: pass --image IMAGE (an image with tar)",
                EXIT_INVALID,
            )
        try:
            pod = export_pod(obj, path, image)
        except NoVolume as e:
            raise CLIError(f"trial {number}'s model is at {path}, not seen from here, and {e}") from None
        pod_name = pod["metadata"]["name"]
        say(f"Copying trial {number}'s model from {path} through pod {ns}/{pod_name} (mounts its volume)")
        kube.start_pod(pod)
        try:
            _wait_running(kube, ns, pod_name)
            with tempfile.TemporaryFile() as buf:
                kube.exec_out(ns, pod_name, ["tar", "-C", path, "-cf", "-", "."], buf)
                _check_complete(buf, f"the copy of {path} through pod {ns}/{pod_name}")
                buf.seek(0)
                _unpack(buf, dest)
        finally:
            kube.delete_pod(ns, pod_name)
    except KubeUnavailable as e:
        raise CLIError(str(e)) from None


def _unpack(buf: BinaryIO, dest: Path) -> None:
    """Unpack the copied tar into ``dest``, refusing what a model directory never holds: a path outside
    ``dest``, a link, a device. ``tarfile``'s ``data`` filter does this from Python 3.11.4 (and distributions'
    backports); an older 3.11, such as Debian bookworm's without the backport, gets the same refusals here."""
    refused = "the copied model holds what a model directory never does"
    with tarfile.open(fileobj=buf) as tar:
        if hasattr(tarfile, "data_filter"):
            try:
                tar.extractall(dest, filter="data")
            except tarfile.FilterError as e:
                raise CLIError(f"{refused}: {e}") from None
            return
        root = dest.resolve()
        for member in tar.getmembers():
            if not (root / member.name).resolve().is_relative_to(root):
                raise CLIError(f"{refused}: {member.name!r} is outside the destination")
            if not (member.isfile() or member.isdir()):
                raise CLIError(f"{refused}: {member.name!r} is a link or a special file")
        tar.extractall(dest)


def _check_complete(buf: BinaryIO, what: str) -> None:
    """Refuse a tar stream that lost its end: tar ends an archive with two zero blocks, and ``tarfile``
    reads an archive cut short between two members as complete, so a truncated copy would be silent."""
    size = buf.seek(0, 2)
    if size >= _TAR_END and size % _TAR_BLOCK == 0:
        buf.seek(size - _TAR_END)
        if not buf.read(_TAR_END).strip(b"\0"):
            return
    raise CLIError(f"{what} arrived incomplete ({size} bytes, without the archive's end); run it again")


_TAR_BLOCK = 512
_TAR_END = 2 * _TAR_BLOCK


def _trial_image(pods: list[dict[str, Any]]) -> str | None:
    """The image the study's trial pods ran (the operator's default trial image when the template names
    none): the node could pull it, and the trial image has tar."""
    for pod in pods:
        for c in (pod.get("spec") or {}).get("containers") or ():
            if c.get("image"):
                return str(c["image"])
    return None


def _wait_running(kube: Any, ns: str, name: str, timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    why = "not scheduled yet"
    while time.monotonic() < deadline:
        pod = kube.read_pod(ns, name) or {}
        status = pod.get("status") or {}
        phase = status.get("phase")
        if phase == "Running":
            return
        if phase in ("Succeeded", "Failed"):
            raise CLIError(f"the copying pod {ns}/{name} ended ({phase}) before the copy")
        for c in status.get("containerStatuses") or ():
            waiting = (c.get("state") or {}).get("waiting") or {}
            if waiting.get("reason") in ("ErrImagePull", "ImagePullBackOff", "InvalidImageName"):
                raise CLIError(
                    f"the copying pod {ns}/{name} cannot pull its image ({waiting.get('reason')}: "
                    f"{waiting.get('message', '')}); pass --image IMAGE"
                )
            if waiting.get("reason"):
                why = f"{waiting['reason']}: {waiting.get('message', '')}".rstrip(": ")
        for cond in status.get("conditions") or ():
            if cond.get("type") == "PodScheduled" and cond.get("status") == "False":
                why = cond.get("message") or cond.get("reason") or why
        time.sleep(1.0)
    raise CLIError(f"the copying pod {ns}/{name} did not start within {timeout:.0f} s ({why})")


__all__ = ["export_command"]
