"""``hpo status`` and the cluster side of ``hpo trials``/``report``/``dashboard``: HPOStudies on Kubernetes.

The current kubeconfig (``KUBECONFIG`` or ``~/.kube/config``, its current context and namespace) is used,
as ``kubectl`` does. The study's storage URL is read from its storage Secret (``spec.storage.secretRef``
or the operator's ``<name>-storage``) unless ``--storage`` gives it.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from hpo_operator.cli.errors import EXIT_FAILED, EXIT_OK, CLIError
from hpo_operator.core import names
from hpo_operator.core.events import fmt_params, fmt_value, fmt_values

if TYPE_CHECKING:
    from hpo_operator.shell.kube import Kube

PHASE_STYLE = {"Succeeded": "green", "Failed": "red", "Running": "cyan", "Pending": "yellow"}


@dataclass(frozen=True)
class ClusterStudy:
    name: str
    namespace: str
    study_name: str
    metrics: tuple[str, ...] | None
    storage_url: str


def _kube() -> tuple[Kube, str]:
    """The Kubernetes API (``hpo_operator.shell.kube``, as the operator uses it) and the current
    context's namespace. Imported here: ``hpo run`` never loads the Kubernetes client."""
    from hpo_operator.shell.kube import Kube, KubeUnavailable, connect_kubeconfig

    try:
        api, namespace = connect_kubeconfig()
    except KubeUnavailable as e:
        raise CLIError(str(e)) from None
    return Kube(api), namespace


def kube_client() -> Kube:
    """The Kubernetes API of the current kubeconfig context."""
    return _kube()[0]


def get_study(name: str, namespace: str | None) -> tuple[dict[str, Any], str]:
    """The HPOStudy object (a dict) and its namespace."""
    from hpo_operator.shell.kube import KubeUnavailable

    kube, default_ns = _kube()
    ns = namespace or default_ns
    try:
        obj = kube.read_study(ns, name)
    except KubeUnavailable as e:
        raise CLIError(str(e)) from None
    if obj is None:
        raise CLIError(f"no {names.KIND} {name!r} in namespace {ns!r}")
    return obj, ns


def _secret_ref(obj: Mapping[str, Any]) -> tuple[str, str]:
    name = obj["metadata"]["name"]
    ref = ((obj.get("spec") or {}).get("storage") or {}).get("secretRef") or {}
    if ref.get("name"):
        return ref["name"], ref.get("key") or names.DEFAULT_SECRET_KEY
    return names.default_secret_name(name), names.DEFAULT_SECRET_KEY


def read_storage_url(obj: Mapping[str, Any], namespace: str) -> str:
    """The study's storage URL from its Secret; what is missing is said with how to go on."""
    from hpo_operator.shell.kube import KubeUnavailable, SecretMissing, SecretProblem

    secret_name, key = _secret_ref(obj)
    kube, _ = _kube()
    try:
        return kube.read_secret_value(namespace, secret_name, key)
    except SecretMissing as e:
        what = f"Secret {e.namespace}/{e.name}"
        missing = f"{what} has no key {e.key!r}" if e.key is not None else f"{what}: not found"
        raise CLIError(f"{missing}; pass the storage URL with --storage") from None
    except (SecretProblem, KubeUnavailable) as e:
        raise CLIError(f"{e}; pass the storage URL with --storage") from None


def cluster_target(name: str, namespace: str | None, *, storage: str | None) -> ClusterStudy:
    """An HPOStudy on the cluster, with the storage to read its trials from."""
    from hpo_operator.cli.storage import open_storage, redact

    obj, ns = get_study(name, namespace)
    status = obj.get("status") or {}
    study_name = status.get("studyName")
    if not study_name:
        phase = status.get("phase") or "not yet reconciled"
        raise CLIError(f"{names.KIND} {ns}/{name} has no Optuna study yet (phase: {phase})")
    objective = (obj.get("spec") or {}).get("objective") or []
    metrics = tuple(o.get("metric", "") for o in objective) or None
    url = storage or read_storage_url(obj, ns)
    if storage is None:
        # The Secret's URL names a host inside the cluster, which may not resolve from here.
        import sqlalchemy

        try:
            engine = open_storage(url).engine
            with engine.connect():
                pass
        except (CLIError, sqlalchemy.exc.SQLAlchemyError) as e:
            detail = str(e).replace(url, redact(url)).splitlines()[0]
            raise CLIError(
                f"the storage of {ns}/{name} ({redact(url)}) is not reachable from here: {detail}; "
                "pass --storage URL (for example through `kubectl port-forward`)"
            ) from None
    return ClusterStudy(name, ns, study_name, metrics, url)


def status_command(args: argparse.Namespace, console: Console) -> int:
    obj, ns = get_study(args.name, args.namespace)
    console.print(render_status(obj, ns))
    phase = (obj.get("status") or {}).get("phase")
    return EXIT_FAILED if phase == "Failed" else EXIT_OK


def render_status(obj: Mapping[str, Any], namespace: str) -> Group:
    """A readable view of an HPOStudy's status: summary, best trial or Pareto front, recent trials."""
    name = obj["metadata"]["name"]
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    metrics = [o.get("metric", "?") for o in spec.get("objective") or []]
    phase = status.get("phase") or "Pending"
    parts: list[Any] = []

    summary = Table.grid(padding=(0, 2))
    summary.add_column(style="bold")
    summary.add_column()
    summary.add_row("HPOStudy", f"{namespace}/{name}")
    summary.add_row("Phase", Text(phase, style=PHASE_STYLE.get(phase, "")))
    if status.get("progress"):
        counts = status.get("trials") or {}
        kinds = ("running", "complete", "pruned", "failed")
        detail = ", ".join(f"{counts[k]} {k}" for k in kinds if counts.get(k))
        summary.add_row("Trials", f"{status['progress']} finished" + (f" ({detail})" if detail else ""))
    directions = [o.get("direction", "maximize") for o in spec.get("objective") or []]
    summary.add_row("Objective", ", ".join(f"{d} {m}" for m, d in zip(metrics, directions, strict=False)))
    if status.get("studyName"):
        summary.add_row("Optuna study", status["studyName"])
    if status.get("message"):
        summary.add_row("Message", status["message"])
    parts.append(summary)

    order = [p.get("name") for p in spec.get("searchSpace") or []]

    def in_order(params: Mapping[str, Any] | None) -> dict[str, Any]:
        """In the search space's order, as Events and `hpo trials` show them (the API server's JSON
        comes back with its keys sorted)."""
        given = dict(params or {})
        return {k: given.pop(k) for k in order if k in given} | given

    best = status.get("bestTrial")
    if best:
        values = best.get("values") or [best.get("value")]
        shown = fmt_value(values[0]) if len(values) == 1 else fmt_values(values)
        parts.append(
            Text(
                f"\nBest trial {best.get('number')}: value {shown}, "
                f"parameters {fmt_params(in_order(best.get('params')))}"
            )
        )
        if best.get("modelPath"):
            parts.append(Text(f"Best model: {best['modelPath']} (hpo export copies it)"))
    front = status.get("paretoFront")
    if front:
        table = Table(
            title=f"Pareto front ({status.get('paretoFrontSize', len(front))} trials)", title_justify="left"
        )
        table.add_column("#")
        for m in metrics:
            table.add_column(m)
        table.add_column("parameters", overflow="fold")
        for t in front:
            table.add_row(
                str(t.get("number")),
                *[fmt_value(v) for v in t.get("values") or []],
                fmt_params(in_order(t.get("params"))),
            )
        parts.append(table)

    recent = status.get("recentTrials") or []
    if recent:
        table = Table(title="Recent trials", title_justify="left")
        for col in ("#", "state", "value", "parameters", "note"):
            table.add_column(col, overflow="fold")
        for t in recent:
            if "values" in t:
                value = fmt_values(t["values"])
            else:
                value = fmt_value(t["value"]) if t.get("value") is not None else ""
            notes = []
            if t.get("attempts"):
                notes.append(f"{t['attempts']} attempts")
            if t.get("step") is not None:
                notes.append(f"step {t['step']}")
            if t.get("reason"):
                notes.append(t["reason"])
            table.add_row(
                str(t.get("number")),
                t.get("state", ""),
                value,
                fmt_params(in_order(t.get("params"))),
                "; ".join(notes),
            )
        parts.append(table)

    conditions = status.get("conditions") or []
    if conditions:
        table = Table(title="Conditions", title_justify="left")
        for col in ("type", "status", "reason", "message", "since"):
            table.add_column(col, overflow="fold")
        for c in conditions:
            table.add_row(
                c.get("type", ""),
                c.get("status", ""),
                c.get("reason", ""),
                c.get("message", ""),
                c.get("lastTransitionTime", ""),
            )
        parts.append(table)
    if not status:
        parts.append(Text("\nNo status yet: the operator has not reconciled this study (is it running?)."))
    return Group(*parts)
