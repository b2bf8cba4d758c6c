"""``python -m hpo_operator`` (or ``hpo-operator``): run the operator with kopf.

The configuration comes from the environment (see :mod:`hpo_operator.config`), parsed once here;
``--namespace`` (repeatable) overrides ``HPO_WATCH_NAMESPACES``. Without namespaces the operator
watches the whole cluster.

With ``HPO_LEADER_ELECTION=true`` (several replicas), the process first waits to hold the Lease
(:mod:`hpo_operator.shell.leader`), serving ``/metrics`` (``hpo_operator_leader 0``) and ``/healthz``
meanwhile, and only then starts kopf: a standby runs no handler at all. A leader that loses the Lease
exits at once (its pod restarts as a standby); one that stops cleanly waits for its in-flight work and
releases the Lease, so a standby takes over at its next try.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

import kopf

from hpo_operator import __version__
from hpo_operator.config import ConfigError, OperatorConfig

if TYPE_CHECKING:
    from hpo_operator.shell.leader import LeaderElector
    from hpo_operator.shell.metrics import Metrics
    from hpo_operator.shell.reports import ReportServer


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

    metrics = serve_metrics(config)
    memo = kopf.Memo(config=config, metrics=metrics)
    if config.report_port:
        memo.reports = _serve_reports(config)
    elector = None
    if config.leader_election is not None:
        elector = _lead(config, metrics)
        if elector is None:
            return 0  # stopped while on standby
    namespaces = tuple(args.namespace) or config.watch_namespaces
    try:
        kopf.run(
            clusterwide=not namespaces,
            namespaces=namespaces,
            standalone=True,
            # kopf would ask getpass for a user name, which fails for a uid without a passwd entry (the
            # image's 65532, or any runAsUser): the pod's host name identifies this operator instead.
            identity=f"hpo-operator@{socket.gethostname()}",
            liveness_endpoint=config.liveness_endpoint,
            memo=memo,
        )
    finally:
        if elector is not None and _idle(memo.get("executor"), timeout=10.0):
            elector.release()  # nothing of ours runs any more: a standby may take over now
    return 0


def serve_metrics(config: OperatorConfig) -> Metrics:
    """``/metrics``, served from the start. A candidate for the Lease exports ``hpo_operator_leader 0``
    from its first scrape: it acts only once it holds the Lease (a 1 before the election starts would
    show two leaders, or a leader that holds no Lease)."""
    from hpo_operator.shell.metrics import Metrics

    metrics = Metrics()
    if config.leader_election is not None:
        metrics.leader.set(0)
    metrics.serve(config.metrics_port)
    return metrics


def _lead(config: OperatorConfig, metrics: Metrics) -> LeaderElector | None:
    """Wait on standby until this process holds the Lease; then keep it renewed, exiting the moment it
    is lost. ``None`` if stopped (SIGTERM, Ctrl-C) while waiting."""
    from hpo_operator.shell.leader import LeaderElector, StandbyHealth, candidate_identity

    log = logging.getLogger("hpo_operator.leader")
    assert config.leader_election is not None

    def lost(why: str) -> None:
        # Another replica may take the Lease soon: stop acting now, mid-reconcile or not (what is stored
        # is consistent after any crash). The pod restarts as a standby.
        log.critical("lost the leader Lease (%s); exiting", why)
        logging.shutdown()
        os._exit(1)

    identity = candidate_identity(config.identity)
    elector = LeaderElector.connect(config.leader_election, identity, on_lost=lost)
    metrics.leader.set(0)
    health = StandbyHealth(config.liveness_endpoint)
    stop = threading.Event()
    previous = {s: signal.signal(s, lambda *_: stop.set()) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        if not elector.acquire(stop):
            return None
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        health.close()
    elector.keep()
    metrics.leader.set(1)
    return elector


def _serve_reports(config: OperatorConfig) -> ReportServer:
    """The report endpoint, served from the start (a standby serves it as well as the leader: it needs
    only the HPOStudy and its storage). Its storage engines are its own: a burst of reports does not
    take the connections the reconciles need."""
    from hpo_operator.shell.kube import Kube, connect
    from hpo_operator.shell.reports import ClusterStudies, ReportServer, ReportService
    from hpo_operator.shell.storage import Storages

    storages = Storages()
    studies = ClusterStudies(Kube(connect(config.worker_threads)), storages, config.default_storage_url)
    server = ReportServer(ReportService(studies), config.report_host, config.report_port)
    return server.start()


def _idle(executor: ThreadPoolExecutor | None, timeout: float) -> bool:
    """Wait up to ``timeout`` seconds for the operator's blocking work (a reconcile in a thread outlives
    kopf's stop) to finish; whether it did."""
    if executor is None:
        return True
    waiter = threading.Thread(target=executor.shutdown, kwargs={"wait": True}, daemon=True)
    waiter.start()
    waiter.join(timeout)
    return not waiter.is_alive()


if __name__ == "__main__":
    sys.exit(main())
