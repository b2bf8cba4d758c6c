"""``hpo report``, ``hpo dashboard`` and ``hpo trials``: commands that read a study from its storage.

A study is named by a manifest file (its local study, in the SQLite file next to it unless
``--storage`` says otherwise), by the name of an HPOStudy on the cluster (the storage URL read from its
Secret, or ``--storage``), or by ``--storage URL --study NAME``. Each command says which on its first
line (on stderr, so that ``-o json`` stays clean).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

from hpo_operator.cli.errors import EXIT_INVALID, EXIT_OK, CLIError
from hpo_operator.cli.storage import load_study, open_storage, redact, study_names


@dataclass(frozen=True)
class Target:
    """A study to read: where it is stored and its name, plus what the manifest or resource says."""

    storage_url: str
    study_name: str
    metrics: tuple[str, ...] | None
    label: str  # how to name it in messages (never the URL: it may hold a password)
    default_output: Path  # where `hpo report` writes by default
    kind: str  # "manifest" (its local study), "cluster" (an HPOStudy) or "storage" (--storage/--study)
    source: str  # the manifest's path, namespace/name of the HPOStudy, or the study's name
    params: tuple[str, ...] | None = None  # the search space's parameters, in the spec's order

    def describe(self) -> str:
        """Which study this is, in words (the URL's password hidden)."""
        where = redact(self.storage_url)
        if self.kind == "manifest":
            return f"the local study {self.study_name} of {self.source} (hpo run), in {where}"
        if self.kind == "cluster":
            return f"HPOStudy {self.source} on the cluster: Optuna study {self.study_name} in {where}"
        return f"the study {self.study_name} in {where}"


def is_manifest(target: str | None) -> bool:
    """Whether a command-line target names a manifest file (else an HPOStudy on the cluster)."""
    if not target:
        return False
    return target.endswith((".yaml", ".yml", ".json")) or "/" in target or Path(target).is_file()


def resolve_target(args: argparse.Namespace) -> Target:
    """The study named on the command line (see the module docstring)."""
    if is_manifest(args.target) and not getattr(args, "cluster_only", False):
        from hpo_operator.cli.manifest import ManifestError, load_manifest

        try:
            m = load_manifest(args.target)
        except ManifestError as e:
            raise CLIError(str(e), EXIT_INVALID) from None
        url = args.storage or m.default_storage_url
        if args.storage is None and not Path(url.removeprefix("sqlite:///")).exists():
            raise CLIError(
                f"{m.path.name} has no local study yet ({url.removeprefix('sqlite:///')} does not exist); "
                f"run `hpo run {args.target}` first, or pass --storage"
            )
        return Target(
            url,
            args.study or m.local_study_name,
            m.spec.metrics,
            label=args.study or m.local_study_name,
            default_output=m.dir / f"hpo-report-{m.path.stem}.html",
            kind="manifest",
            source=str(m.path),
            params=m.spec.param_names,
        )
    if args.target:
        from hpo_operator.cli.cluster import cluster_target

        ref = cluster_target(args.target, args.namespace, storage=args.storage)
        return Target(
            ref.storage_url,
            args.study or ref.study_name,
            ref.metrics,
            label=f"{ref.namespace}/{ref.name}",
            default_output=Path.cwd() / f"hpo-report-{ref.name}.html",
            kind="cluster",
            source=f"{ref.namespace}/{ref.name}",
        )
    if not args.storage:
        raise CLIError("name a study: a manifest file, an HPOStudy name, or --storage URL", EXIT_INVALID)
    name = args.study
    if name is None:
        names = study_names(args.storage)
        if len(names) != 1:
            listed = ", ".join(names) if names else "none"
            raise CLIError(
                f"--study: required, the storage holds {len(names)} studies ({listed})", EXIT_INVALID
            )
        name = names[0]
    safe = name.replace("/", "_")
    return Target(
        args.storage,
        name,
        None,
        label=name,
        default_output=Path.cwd() / f"hpo-report-{safe}.html",
        kind="storage",
        source=name,
    )


def say(message: str) -> None:
    """A line for the person at the terminal, on stderr (stdout may be a document for a program)."""
    Console(stderr=True, highlight=False, soft_wrap=True).print(message, markup=False)


def say_reading(target: Target) -> None:
    """The first line of a read command: which study it reads."""
    say(f"Reading {target.describe()}")


def report_command(args: argparse.Namespace, console: Console) -> int:
    from hpo_operator.cli.report import render_report

    target = resolve_target(args)
    say_reading(target)
    study = load_study(target.storage_url, target.study_name)
    out = Path(args.output) if args.output else target.default_output
    html = render_report(study, target.metrics, title=f"HPO study {target.label}", params=target.params)
    try:
        out.write_text(html, encoding="utf-8")
    except OSError as e:
        raise CLIError(f"-o: cannot write {out}: {e.strerror}") from None
    n = len(study.get_trials(deepcopy=False))
    console.print(f"Wrote the report of {target.label} ({n} trials) to {out}", markup=False, soft_wrap=True)
    return EXIT_OK


def dashboard_command(args: argparse.Namespace, console: Console) -> int:
    from hpo_operator.cli.dashboard import build_server

    target = resolve_target(args)
    say_reading(target)
    storage = open_storage(target.storage_url)
    try:
        server, path = build_server(
            storage, target.study_name, target.metrics, args.host, args.port, writable=args.writable
        )
    except KeyError:
        load_study(target.storage_url, target.study_name)  # says which studies there are
        raise
    except OSError as e:
        raise CLIError(f"--port: cannot listen on {args.host}:{args.port}: {e.strerror}") from None
    host = f"[{args.host}]" if ":" in args.host else args.host
    mode = "read-write (--writable)" if args.writable else "read-only; --writable to edit"
    console.print(
        f"optuna-dashboard for {target.label} ({mode})\n  http://{host}:{args.port}{path}\nCtrl-C stops it.",
        markup=False,
        soft_wrap=True,
    )
    with server:
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            console.print("Stopped.", markup=False)
    return EXIT_OK


def trials_command(args: argparse.Namespace, console: Console) -> int:
    from hpo_operator.cli import trials

    target = resolve_target(args)
    if args.output == "table":
        say_reading(target)
    study = load_study(target.storage_url, target.study_name)
    data = trials.trial_list(
        study,
        metrics=target.metrics,
        params=target.params,
        source_kind=target.kind,
        source_name=target.source,
    )
    trials.render(data, args.output, console, title=f"Trials of {target.label}")
    return EXIT_OK


__all__ = [
    "Target",
    "dashboard_command",
    "is_manifest",
    "redact",
    "report_command",
    "resolve_target",
    "say",
    "say_reading",
    "trials_command",
]
