"""Every kopf decorator of the operator; each handler is a few lines around the driver
(:class:`hpo_operator.shell.driver.Driver`).

* start-up: settings (annotations for kopf's own bookkeeping, so the status stays ours; Events only
  for warnings), the driver, the metrics endpoint; then it waits until the API server serves
  HPOStudies (kopf looks them up once, right after start-up);
* create / resume / spec update: check the spec (a bad one: condition, Event, and the daemon stays
  idle until the spec changes) and wake the study's daemon;
* one daemon per HPOStudy: reconcile every ``HPO_RECONCILE_INTERVAL`` seconds, or at once when one of
  its pods changes; idle once the study finished, until its spec changes;
* trial pod events: wake their study's daemon;
* delete: remove the Optuna study when ``spec.storage.deleteStudyOnDelete``; pods go by garbage
  collection (ownerReferences), and the study's RUNNING trials are told FAIL as its daemon exits.

kopf puts its finalizer (``hpo.dev/finalizer``) on every HPOStudy, as it does for any resource with a
daemon, so that the daemon stops before the resource goes: deleting an HPOStudy while no operator runs
waits for one (or for the finalizer to be removed by hand).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import kopf

from hpo_operator.core import names
from hpo_operator.core.spec import SpecError
from hpo_operator.shell.driver import Driver, Waiting
from hpo_operator.shell.kube import Kube, KubeUnavailable, connect
from hpo_operator.shell.metrics import Metrics
from hpo_operator.shell.storage import Storages, StorageUnavailable

STUDIES = {"group": names.GROUP, "version": names.VERSION, "plural": names.PLURAL}
TRIAL_PODS = {names.LABEL_MANAGED_BY: names.MANAGER}
IDLE_CHECK_S = 300.0  # a finished study is looked at again this often (in case its pods changed)
SERVED_LOG_S = 30.0  # while start-up waits for HPOStudies to be served, a line this often
T = TypeVar("T")
log = logging.getLogger("hpo_operator")


async def _blocking(memo: kopf.Memo, fn: Callable[..., T], *args: Any) -> T:
    """Run blocking work (API and database calls) on the operator's own executor, sized by
    ``HPO_WORKER_THREADS``: not the loop's default one (a few threads on a small pod), so studies
    waiting on a slow database cannot starve the others of threads."""
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(memo.executor, functools.partial(fn, *args))


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    settings.persistence.finalizer = f"{names.GROUP}/finalizer"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=names.GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=names.GROUP, key="last-handled-configuration"
    )
    settings.posting.level = logging.WARNING
    settings.watching.server_timeout = 300
    settings.execution.max_workers = memo.config.worker_threads
    settings.background.instant_exit_timeout = 5.0  # a stopped daemon exits within a second or two
    metrics: Metrics | None = memo.get("metrics")  # served by __main__ from the start (standby included)
    if metrics is None:
        metrics = Metrics()
        metrics.serve(memo.config.metrics_port)
    memo.executor = ThreadPoolExecutor(max_workers=memo.config.worker_threads, thread_name_prefix="hpo-work")
    memo.driver = Driver(memo.config, Kube(connect(memo.config.worker_threads)), Storages(), metrics)
    memo.wakers = {}
    await _until_served(memo)


async def _until_served(memo: kopf.Memo) -> None:
    """Wait until the API server's discovery lists HPOStudies.

    kopf resolves the resources it serves once, right after start-up, from the API server's discovery,
    and serves a CRD missed then only once that CRD changes. An API server that is itself starting (a
    restart, an upgrade) answers ``/readyz`` before its discovery lists the CRDs: an operator started
    then would never serve HPOStudies. So start-up waits here, saying why every 30 s.
    """
    kube: Kube = memo.driver.kube
    told = -SERVED_LOG_S
    loop = asyncio.get_running_loop()
    while True:
        try:
            if await _blocking(memo, kube.serves, names.GROUP, names.VERSION, names.PLURAL):
                return
            why = "its discovery does not list them yet (is the CRD installed?)"
        except KubeUnavailable as e:
            why = str(e)
        if loop.time() - told >= SERVED_LOG_S:
            log.warning(
                "waiting for the API server to serve %s.%s/%s: %s",
                names.PLURAL,
                names.GROUP,
                names.VERSION,
                why,
            )
            told = loop.time()
        await asyncio.sleep(1.0)


@kopf.on.cleanup()
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    await _blocking(memo, memo.driver.close)
    memo.executor.shutdown(wait=False, cancel_futures=True)


@kopf.on.create(**STUDIES)
@kopf.on.resume(**STUDIES)
@kopf.on.update(**STUDIES, field="spec")
async def spec_changed(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    try:
        await _blocking(memo, memo.driver.check, body)
    except SpecError:
        # Reported already (SpecValid=False, an InvalidSpec Event, one warning in the log); not a
        # handler failure for kopf to log again at every restart. The next spec change is checked anew.
        return
    except (KubeUnavailable, StorageUnavailable) as e:
        raise kopf.TemporaryError(str(e), delay=10) from None
    _waker(memo, body).set()


@kopf.daemon(**STUDIES, cancellation_timeout=30)
async def run_study(
    stopped: kopf.DaemonStopped, body: kopf.Body, memo: kopf.Memo, logger: Any, **_: Any
) -> None:
    driver: Driver = memo.driver
    interval = memo.config.reconcile_interval
    wake = _waker(memo, body)
    try:
        while not stopped:
            wait = interval
            try:
                outcome = await _blocking(memo, driver.reconcile, body)
                wait = IDLE_CHECK_S if outcome.terminal else interval
            except SpecError:
                wait = IDLE_CHECK_S  # reported; a spec change wakes the daemon
            except Waiting as e:
                wait = e.delay
            except Exception as e:  # never let the daemon die: log, back off, try again
                logger.exception("reconcile failed: %s", e)
                driver.metrics.reconcile_errors.labels("other").inc()
                wait = 30.0
            await _pause(stopped, wake, wait)
    finally:
        meta = body.get("metadata", {})
        memo.wakers.pop((meta.get("namespace"), meta.get("name")), None)
        await _blocking(memo, driver.abandon, meta.get("namespace"), meta.get("name"), meta.get("uid"))


@kopf.on.event("", "v1", "pods", labels=TRIAL_PODS)
async def trial_pod_changed(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    study = body.get("metadata", {}).get("labels", {}).get(names.LABEL_STUDY)
    waker = memo.wakers.get((body.get("metadata", {}).get("namespace"), study))
    if waker is not None:
        waker.set()


def _deletes_study(spec: kopf.Spec, **_: Any) -> bool:
    return bool((spec.get("storage") or {}).get("deleteStudyOnDelete"))


@kopf.on.delete(**STUDIES, when=_deletes_study, retries=10, backoff=6)
async def delete_optuna_study(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    try:
        await _blocking(memo, memo.driver.delete_study, body)
    except (StorageUnavailable, KubeUnavailable) as e:
        raise kopf.TemporaryError(str(e), delay=6) from None
    except SpecError as e:
        raise kopf.PermanentError(f"cannot delete the Optuna study: {e}") from None


def _waker(memo: kopf.Memo, body: kopf.Body) -> asyncio.Event:
    meta = body.get("metadata", {})
    key = (meta.get("namespace"), meta.get("name"))
    if key not in memo.wakers:
        memo.wakers[key] = asyncio.Event()
    return memo.wakers[key]  # type: ignore[no-any-return]


async def _pause(stopped: kopf.DaemonStopped, wake: asyncio.Event, seconds: float) -> None:
    """Sleep up to ``seconds``; return early when woken or stopped."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while not stopped and not wake.is_set():
        left = deadline - loop.time()
        if left <= 0:
            break
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(wake.wait(), timeout=min(left, 1.0))
    wake.clear()
