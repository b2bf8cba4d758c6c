"""``hpo status``: a study's phase, progress, best trial and latest trials, for either kind of target.

A manifest file names its local study (what ``hpo run`` made: the SQLite file next to it, or
``--storage``), read from the storage; a name is an HPOStudy on the cluster, read from its status
(:mod:`hpo_operator.cli.cluster`). The first line (stderr) says which.

A local study has no operator to keep a phase, so it is worked out here: **Running** while an ``hpo run``
holds the study's lock, **Succeeded** once the budget's trials have finished, **Failed** once more than
``maxFailed`` trials have failed, else **Stopped** (``hpo run`` resumes it).
"""

from __future__ import annotations

import argparse
import fcntl
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hpo_trial.contract import ATTR_MODEL_PATH
from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from hpo_operator.cli.errors import EXIT_FAILED, EXIT_INVALID, EXIT_OK, CLIError
from hpo_operator.cli.values import fmt_param
from hpo_operator.core.events import fmt_value

PHASE_STYLE = {"Succeeded": "green", "Failed": "red", "Running": "cyan", "Stopped": "yellow"}
RECENT = 10  # trials shown, the latest


def status_command(args: argparse.Namespace, console: Console) -> int:
    from hpo_operator.cli.commands import is_manifest

    if not args.target:
        raise CLIError("name a study: a manifest file (its local study) or an HPOStudy's name", EXIT_INVALID)
    if is_manifest(args.target) and not getattr(args, "cluster_only", False):
        return local_status_command(args, console)
    from hpo_operator.cli import cluster

    args.name = args.target
    from hpo_operator.cli.commands import say

    where = (
        f"{args.namespace}/{args.target}" if args.namespace else f"{args.target} (the kubeconfig's namespace)"
    )
    say(f"Reading HPOStudy {where} on the cluster: its status, kept by the operator")
    return cluster.status_command(args, console)


def _running(work_dir: Path) -> bool:
    """Whether an ``hpo run`` holds the study's lock (``<work dir>/lock``, taken with ``flock``)."""
    path = work_dir / "lock"
    if not path.exists():
        return False
    with path.open("a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(f, fcntl.LOCK_UN)
    return False


def local_phase(counts: Mapping[str, int], total: int, max_failed: int, running: bool) -> str:
    finished = counts.get("COMPLETE", 0) + counts.get("PRUNED", 0) + counts.get("FAIL", 0)
    if running:
        return "Running"
    if counts.get("FAIL", 0) > max_failed:
        return "Failed"
    if finished >= total and not counts.get("RUNNING"):
        return "Succeeded"
    return "Stopped"


def local_status_command(args: argparse.Namespace, console: Console) -> int:
    from hpo_operator.cli import trials
    from hpo_operator.cli.commands import resolve_target, say_reading
    from hpo_operator.cli.manifest import load_manifest
    from hpo_operator.cli.storage import load_study, redact

    target = resolve_target(args)
    say_reading(target)
    m = load_manifest(target.source)
    study = load_study(target.storage_url, target.study_name)
    data = trials.trial_list(
        study, metrics=target.metrics, params=target.params, source_kind="manifest", source_name=target.source
    )
    counts = Counter(t["state"] for t in data["trials"])
    spec = m.spec
    phase = local_phase(counts, spec.trials.total, spec.trials.max_failed, _running(m.work_dir))
    finished = counts["COMPLETE"] + counts["PRUNED"] + counts["FAIL"]

    summary = Table.grid(padding=(0, 2))
    summary.add_column(style="bold")
    summary.add_column()
    summary.add_row("Local study", f"{study.study_name} (hpo run of {m.path.name})")
    summary.add_row("Storage", redact(target.storage_url))
    summary.add_row("Phase", Text(phase, style=PHASE_STYLE.get(phase, "")))
    kinds = (("RUNNING", "running"), ("COMPLETE", "complete"), ("PRUNED", "pruned"), ("FAIL", "failed"))
    detail = ", ".join(f"{counts[k]} {word}" for k, word in kinds if counts[k])
    summary.add_row("Trials", f"{finished}/{spec.trials.total} finished" + (f" ({detail})" if detail else ""))
    summary.add_row("Objective", ", ".join(f"{o['direction']} {o['metric']}" for o in data["objectives"]))
    if phase == "Stopped":
        summary.add_row("Next", f"`hpo run {args.target}` resumes it")
    parts: list[Any] = [summary]

    best = [t for t in data["trials"] if t["best"]]
    if len(best) == 1 and len(data["objectives"]) == 1:
        t = best[0]
        shown = ", ".join(f"{p}={fmt_param(v)}" for p, v in t["params"].items())
        metric = data["objectives"][0]["metric"]
        parts.append(Text(f"\nBest trial {t['number']}: {metric} {fmt_value(t['values'][0])}, {shown}"))
        model_path = study.best_trial.user_attrs.get(ATTR_MODEL_PATH)
        if model_path:
            parts.append(Text(f"Best model: {model_path} (hpo export copies it)"))
    elif best:
        parts.append(Text(f"\nPareto front: trials {', '.join(str(t['number']) for t in best)}"))

    latest = {**data, "trials": data["trials"][-RECENT:]}
    if latest["trials"]:
        n = len(data["trials"])
        title = "Trials" if n <= RECENT else f"Latest {RECENT} of {n} trials (hpo trials lists them all)"
        parts.append(Text(""))
        parts.append(trials.to_table(latest, title, console.width))
    console.print(Group(*parts))
    return EXIT_FAILED if phase == "Failed" else EXIT_OK


__all__ = ["local_phase", "local_status_command", "status_command"]
