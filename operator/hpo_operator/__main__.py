"""``python -m hpo_operator`` (or ``hpo-operator``): run the operator with kopf.

The configuration comes from the environment (see :mod:`hpo_operator.config`), parsed once here;
``--namespace`` (repeatable) overrides ``HPO_WATCH_NAMESPACES``. Without namespaces the operator
watches the whole cluster.
"""

from __future__ import annotations

import argparse
import logging
import socket
import sys

import kopf

from hpo_operator import __version__
from hpo_operator.config import ConfigError, OperatorConfig


class TransientRetries(logging.Filter):
    """The clients' own retries while the API server restarts are not errors.

    A reconcile that meets an API server (or a database) that does not answer says so in one warning
    line with its back-off. Below it, urllib3 logs a warning per retry of the failing call (dropped
    here: that call's failure is the reconcile's line), and kopf an error per retry of each watch stream
    ("Request attempt #1/9 failed; will retry", a warning here; its "escalating" stays an error).
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno == logging.WARNING and record.name.startswith("urllib3"):
            return not record.getMessage().startswith("Retrying (")
        retrying = record.levelno == logging.ERROR and record.name.startswith("kopf")
        if retrying and "failed; will retry" in record.getMessage():
            record.levelno, record.levelname = logging.WARNING, logging.getLevelName(logging.WARNING)
        return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="hpo-operator",
        description="Runs HPOStudy resources as Optuna studies, one pod per trial.",
    )
    parser.add_argument(
        "-n",
        "--namespace",
        action="append",
        default=[],
        help="watch this namespace (repeatable; default: HPO_WATCH_NAMESPACES, else the whole cluster)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log what each reconcile does")
    parser.add_argument("--debug", action="store_true", help="log kopf's own debugging output too")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    args = parser.parse_args(argv)
    try:
        config = OperatorConfig.from_env()
    except ConfigError as e:
        print(f"hpo-operator: {e}", file=sys.stderr)
        return 2

    from hpo_operator.shell import redact

    redact.install_log_redaction()
    redact.register(config.default_storage_url)
    kopf.configure(verbose=args.verbose, debug=args.debug)
    for handler in logging.getLogger().handlers:
        handler.addFilter(TransientRetries())
    logging.getLogger("hpo_operator").setLevel(logging.DEBUG if args.verbose or args.debug else logging.INFO)
    logging.getLogger("kubernetes.client.rest").setLevel(logging.WARNING)
    if not (args.verbose or args.debug):
        # kopf logs every handler run at INFO (one line per trial pod event); keep warnings and errors.
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)

    import hpo_operator.handlers  # noqa: F401  (registers the handlers)

    namespaces = tuple(args.namespace) or config.watch_namespaces
    kopf.run(
        clusterwide=not namespaces,
        namespaces=namespaces,
        standalone=True,
        # kopf would ask getpass for a user name, which fails for a uid without a passwd entry (the
        # image's 65532, or any runAsUser): the pod's host name identifies this operator instead.
        identity=f"hpo-operator@{socket.gethostname()}",
        liveness_endpoint=config.liveness_endpoint,
        memo=kopf.Memo(config=config),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
