"""``hpo``: run an HPOStudy manifest on this machine, validate it, report on it, watch a study on a cluster.

::

    hpo run examples/quickstart.yaml          # local mode: SQLite next to the manifest, trials as processes
    hpo validate study.yaml                   # the operator's validation, nothing run
    hpo report examples/quickstart.yaml       # self-contained HTML: history, importances, ...
    hpo dashboard examples/quickstart.yaml    # optuna-dashboard on the study's storage
    hpo status nli-distilbert -n team-a       # a study on the cluster (current kubeconfig)
    hpo trials nli-distilbert -n team-a       # its trials, from the storage

The read commands take either target. ``kubectl-hpo`` (installed with ``hpo``) is the same read commands
as a kubectl plugin, for HPOStudies only: ``kubectl hpo status nli-distilbert -n team-a``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import Any

from rich.console import Console

from hpo_operator.cli.errors import EXIT_INTERRUPTED, EXIT_INVALID, EXIT_OK, CLIError


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _port(text: str) -> int:
    value = _positive(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"must be at most 65535, got {value}")
    return value


def build_parser(kubectl: bool = False) -> argparse.ArgumentParser:
    """``hpo``'s command line; with ``kubectl``, the ``kubectl hpo`` plugin's: the read commands only, each
    taking the name of an HPOStudy on the kubeconfig's cluster."""
    if kubectl:
        parser = argparse.ArgumentParser(
            prog="kubectl hpo",
            description="HPOStudies on the cluster of your kubeconfig (KUBECONFIG or ~/.kube/config, its "
            "current context and namespace): status, trials, an HTML report, optuna-dashboard.",
        )
    else:
        parser = argparse.ArgumentParser(
            prog="hpo",
            description="Hyperparameter optimization with HPOStudy manifests, locally or on Kubernetes.",
        )
    parser.set_defaults(cluster_only=kubectl)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    if not kubectl:
        _add_local_commands(sub)

    def add_target(p: argparse.ArgumentParser) -> None:
        if kubectl:
            p.add_argument("target", metavar="NAME", help="the HPOStudy's name")
        else:
            p.add_argument(
                "target",
                nargs="?",
                metavar="STUDY",
                help="a manifest file (its local study), or the name of an HPOStudy on the cluster",
            )
        p.add_argument("--storage", metavar="URL", help="Optuna storage URL (instead of the default)")
        p.add_argument("--study", metavar="NAME", help="Optuna study name in --storage")
        p.add_argument("-n", "--namespace", help="namespace of the HPOStudy (default: the kubeconfig's)")

    _add_read_commands(sub, add_target)
    return parser


def _add_local_commands(sub: Any) -> None:
    """``hpo run`` and ``hpo validate``: a manifest on this machine."""
    run = sub.add_parser(
        "run",
        help="run a study on this machine (trials as local processes)",
        description="Run an HPOStudy manifest on this machine: the operator's validation, sampler, pruner, "
        "retries and budget, with trials as local processes. A second run resumes the same study.",
    )
    run.add_argument("manifest", metavar="STUDY.yaml")
    run.add_argument(
        "--storage",
        metavar="URL",
        help="Optuna storage URL (default: a SQLite file <manifest>.hpo.db next to the manifest)",
    )
    run.add_argument("--parallelism", type=_positive, metavar="N", help="override spec.trials.parallelism")
    run.add_argument("--trials", type=_positive, metavar="N", help="override spec.trials.total")
    run.add_argument(
        "--grace",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="on Ctrl-C, how long trial processes get to exit after SIGTERM before SIGKILL (default 10)",
    )

    validate = sub.add_parser(
        "validate",
        help="check a manifest with the operator's validation; nothing is run",
        description="Validate an HPOStudy manifest exactly as the operator does.",
    )
    validate.add_argument("manifest", metavar="STUDY.yaml")
    validate.add_argument(
        "--no-file-check",
        action="store_true",
        help="do not check that the local files the trials read (data files, a local model, a custom "
        "command's script) exist here: for a cluster whose trial image holds them",
    )


def _add_read_commands(sub: Any, add_target: Callable[[argparse.ArgumentParser], None]) -> None:
    """``report``, ``dashboard``, ``status``, ``trials``: a study, local or on the cluster."""
    report = sub.add_parser(
        "report",
        help="write a self-contained HTML report of a study",
        description="Write one HTML file (plotly inlined, no network needed to open it) with the study's "
        "optimization history, parameter importances, parallel coordinates and intermediate values.",
    )
    add_target(report)
    report.add_argument(
        "-o", "--output", metavar="FILE", help="output file (default: hpo-report-<study>.html)"
    )

    dashboard = sub.add_parser(
        "dashboard",
        help="start optuna-dashboard on a study (read-only)",
        description="Start optuna-dashboard on one study, opening on its page. It shows only that study "
        "and only reads unless --writable; Ctrl-C stops it.",
    )
    add_target(dashboard)
    dashboard.add_argument("--port", type=_port, default=8080, help="port to listen on (default 8080)")
    dashboard.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    dashboard.add_argument(
        "--writable",
        action="store_true",
        help="let the page change the study (notes, user attributes, telling trials, deleting it); "
        "without it the dashboard only reads",
    )

    status = sub.add_parser(
        "status",
        help="show a study: phase, progress, best trial, latest trials",
        description="Show a study's phase, progress, best trial and latest trials: a manifest's local study "
        "(read from its storage), or an HPOStudy on the cluster (read from its status, with its conditions).",
    )
    add_target(status)

    export = sub.add_parser(
        "export",
        help="copy the best trial's saved model (trainer.saveModel) into a local directory",
        description="Copy the best trial's saved model (trainer.saveModel) into DIR: a manifest's local "
        "study (from its storage) or an HPOStudy (status.bestTrial.modelPath: copied directly when this "
        "machine sees the volume it is on, otherwise through a short-lived pod that mounts that volume "
        "read-only in the study's namespace, deleted afterwards).",
    )
    add_target(export)
    export.add_argument("dir", metavar="DIR", help="where to copy it (a new or empty directory)")
    export.add_argument(
        "--trial", type=int, metavar="N", help="another trial's model (or one of a Pareto front's)"
    )
    export.add_argument(
        "--image",
        metavar="IMAGE",
        help="the copying pod's image, one with tar (default: the study's trial image)",
    )

    trials = sub.add_parser(
        "trials",
        help="list every trial of a study (from its storage)",
        description="List every trial of a study, read from its Optuna storage: a manifest's local study, "
        "an HPOStudy on the cluster (storage URL from its Secret, or --storage), or --storage/--study.",
    )
    add_target(trials)
    trials.add_argument(
        "-o",
        "--output",
        choices=("table", "json", "yaml", "csv"),
        default="table",
        help="table (the default: a table on a terminal, aligned plain text through a pipe), "
        "json or yaml (every field of every trial; the schema is in the README), or csv",
    )


def main(argv: Sequence[str] | None = None, *, kubectl: bool = False) -> None:
    args = build_parser(kubectl).parse_args(argv)
    console = Console(highlight=False)
    errors = Console(stderr=True, highlight=False)
    try:
        code = dispatch(args, console)
    except CLIError as e:
        errors.print(f"[bold red]error:[/] {e}", markup=True, soft_wrap=True)
        code = e.code
    except KeyboardInterrupt:
        errors.print("interrupted")
        code = EXIT_INTERRUPTED
    sys.exit(code)


def kubectl_main() -> None:
    """``kubectl-hpo``: kubectl runs it for ``kubectl hpo ...`` once it is on PATH (kubectl's plugins)."""
    main(kubectl=True)


def dispatch(args: argparse.Namespace, console: Console) -> int:
    # Imports per command: `hpo validate` should not pay for plotly or the Kubernetes client.
    if getattr(args, "storage", None):
        from hpo_operator.cli.storage import absolute_sqlite

        # Trial processes run in the manifest's directory: a relative SQLite path means the user's.
        args.storage = absolute_sqlite(args.storage)
    if args.command == "validate":
        from hpo_operator.cli.manifest import (
            ManifestError,
            check_local_files,
            load_manifest,
            local_files,
            summary,
        )

        try:
            m = load_manifest(args.manifest)
        except ManifestError as e:
            raise CLIError(str(e), EXIT_INVALID) from None
        try:
            if not args.no_file_check:
                check_local_files(m)
        except ManifestError as e:
            hint = "; --no-file-check skips this check (for a cluster whose trial image has the file)"
            raise CLIError(f"{e}{hint}", EXIT_INVALID) from None
        files = None if args.no_file_check else local_files(m)
        console.print(summary(m, files), soft_wrap=True, markup=False)
        return EXIT_OK
    if args.command == "run":
        from hpo_operator.cli.local import run_command
        from hpo_operator.cli.manifest import ManifestError, MissingFile, check_local_files, load_manifest

        # A file the trials read and this machine lacks is said now, not after a trial has failed on it.
        # (An invalid manifest is left to run_command, which says why with the overrides applied.)
        try:
            check_local_files(load_manifest(args.manifest))
        except MissingFile as e:
            raise CLIError(str(e), EXIT_INVALID) from None
        except ManifestError:
            pass

        return run_command(args, console)
    if args.command == "report":
        from hpo_operator.cli.commands import report_command

        return report_command(args, console)
    if args.command == "dashboard":
        from hpo_operator.cli.commands import dashboard_command

        return dashboard_command(args, console)
    if args.command == "status":
        from hpo_operator.cli.status import status_command

        return status_command(args, console)
    if args.command == "export":
        from hpo_operator.cli.export import export_command

        return export_command(args, console)
    if args.command == "trials":
        from hpo_operator.cli.commands import trials_command

        return trials_command(args, console)
    raise CLIError(f"unknown command {args.command!r}", EXIT_INVALID)


if __name__ == "__main__":
    main()
