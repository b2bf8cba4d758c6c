"""The Optuna storage, as the operator uses it: one long-lived study object per HPOStudy.

Measured (Optuna 5.0, PostgreSQL 15, a 2-core machine): a fresh ``load_study`` plus a full read
costs 0.3 s at 1,000 trials, a read with ``deepcopy=False`` through Optuna's cached storage 1-3 ms. So
each storage URL gets one ``RDBStorage`` (a pool with ``pool_pre_ping``, shared by every study on it)
wrapped once in Optuna's cache, and each HPOStudy one :class:`StudyStore` kept for the operator's life.

Failures of the database surface as :class:`StorageUnavailable` with the URL masked.

**Finished trials are read once.** Optuna's cache already re-reads from the database only the trials
that can change and the new ones; on top of it a :class:`StudyStore` converts each finished trial to a
``TrialView`` once and adds it to the study's :class:`~hpo_operator.core.ledger.Ledger` (counts, best
trial, ...), and re-converts only the trials that were live (RUNNING, WAITING) and the new ones. At 5,000
finished trials, converting every trial each reconcile cost 74 ms; the ledger's figures replace the walks
over all of them in ``decide`` and the status. A restarted operator rebuilds the same ledger from the
stored trials on its first read.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import optuna
import sqlalchemy.exc
from hpo_trial.contract import ATTR_ATTEMPTS, ATTR_FAIL_REASON, engine_kwargs
from optuna.exceptions import StorageInternalError, UpdateFinishedTrialError
from optuna.trial import TrialState

from hpo_operator.core import search_space, tokens
from hpo_operator.core.ledger import Ledger, Summary
from hpo_operator.core.observe import (
    ATTR_ANNOUNCED,
    ATTR_ENQUEUED,
    ATTR_LAUNCHED,
    Announced,
    StudyView,
    TrialView,
    study_view,
    trial_view,
)
from hpo_operator.core.spec import SpecError, StudySpec
from hpo_operator.shell import redact

if TYPE_CHECKING:
    from hpo_operator.shell.kube import Kube

optuna.logging.set_verbosity(optuna.logging.WARNING)

# Where Optuna keeps a study's metric names (``Study.set_metric_names``, ``Study.metric_names``).
METRIC_NAMES_ATTR = "study:metric_names"


class StorageUnavailable(RuntimeError):
    """The storage did not answer (or failed); the message is free of secrets."""


class StorageURLInvalid(StorageUnavailable):
    """The URL names no database SQLAlchemy can open (unparsable, an unknown dialect or driver):
    not an outage, a value to fix. The message says why, never the URL."""


def check_url(url: str) -> None:
    """Raise :class:`StorageURLInvalid` unless SQLAlchemy can parse ``url`` and load its dialect.

    The message never quotes the URL or the parser's text: a password with an unencoded ``@`` or ``:``
    makes the parser read part of it as the host or port, and its error would show that part."""
    try:
        parsed = sqlalchemy.engine.make_url(url)
        _ = parsed.port  # parsed lazily in some versions: a password's tail taken for a port fails here
    except (sqlalchemy.exc.ArgumentError, ValueError):
        raise StorageURLInvalid(
            "not a usable storage URL (it does not parse as driver://user:password@host:port/database; "
            "percent-encode ':', '@' and '/' in the user name and password)"
        ) from None
    try:
        parsed.get_dialect()
    except sqlalchemy.exc.NoSuchModuleError:
        raise StorageURLInvalid(
            f"not a usable storage URL (no SQLAlchemy dialect or driver {parsed.drivername!r} is installed)"
        ) from None


@contextmanager
def storage_errors(doing: str) -> Iterator[None]:
    """Turn database errors into :class:`StorageUnavailable` with a redacted, one-line message."""
    try:
        yield
    except (sqlalchemy.exc.SQLAlchemyError, StorageInternalError, OSError) as e:
        # Optuna wraps a failed commit in StorageInternalError ("... e.g. exceeding max length"),
        # whatever the cause: say the cause (connection refused, a timeout), not Optuna's guess.
        cause = e.__cause__ if isinstance(e, StorageInternalError) and e.__cause__ is not None else e
        first = str(getattr(cause, "orig", None) or cause).strip().splitlines()
        detail = first[0] if first else type(cause).__name__
        raise StorageUnavailable(redact.redact(f"{doing}: {type(cause).__name__}: {detail}")) from None


def study_storage_url(kube: Kube, spec: StudySpec, namespace: str, default_url: str | None) -> str:
    """The study's storage URL: from its Secret, or the operator's default (registered for redaction)."""
    if spec.storage is not None and spec.storage.secret_ref is not None:
        ref = spec.storage.secret_ref
        return kube.read_secret_value(namespace, ref.name, ref.key)
    if default_url is None:  # check_spec refused this already
        raise SpecError.at("spec.storage.secretRef", "required: the operator has no default storage")
    return default_url


class Storages:
    """One RDBStorage (engine and pool) per URL, shared by every study on it; one Optuna cache per study.

    :meth:`open` gives a study its own cache in front of the URL's shared RDBStorage, so what a study
    caches (every trial it read) goes with its :class:`StudyStore`; :meth:`release` says a study no
    longer uses the URL, and the URL's engine is disposed once no study uses it.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_url: dict[str, optuna.storages.RDBStorage] = {}
        self._users: dict[str, set[str]] = {}

    def open(self, url: str, study_name: str) -> optuna.storages.BaseStorage:
        """A cached storage for ``study_name`` on ``url`` (the URL's engine is created on first use)."""
        return optuna.storages.get_storage(self.shared(url, study_name))  # a new cache, this study's alone

    def shared(self, url: str, user: str) -> optuna.storages.RDBStorage:
        """The URL's one RDBStorage, uncached (the report endpoint writes through it), for ``user``."""
        redact.register(url)
        with self._lock:
            rdb = self._by_url.get(url)
            if rdb is None:
                check_url(url)
                with storage_errors("cannot open the storage"):
                    rdb = optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs(url))
                self._by_url[url] = rdb
            self._users.setdefault(url, set()).add(user)
            return rdb

    def release(self, url: str, study_name: str) -> None:
        """``study_name`` no longer uses ``url``; dispose of the URL's engine if no study does."""
        with self._lock:
            users = self._users.get(url)
            if users is None:
                return
            users.discard(study_name)
            if users:
                return
            del self._users[url]
            rdb = self._by_url.pop(url, None)
        if rdb is not None:
            rdb.engine.dispose()

    def urls(self) -> list[str]:
        """The URLs with an open engine (for tests and diagnostics; never logged)."""
        with self._lock:
            return list(self._by_url)

    def dispose(self) -> None:
        with self._lock:
            engines = [rdb.engine for rdb in self._by_url.values()]
            self._by_url.clear()
            self._users.clear()
        for engine in engines:
            engine.dispose()


class StudyStore:
    """The Optuna study of one HPOStudy: observe it, and carry out the storage side of a plan."""

    def __init__(self, storage: optuna.storages.BaseStorage, study_name: str) -> None:
        self.storage = storage
        self.study_name = study_name
        self._study: optuna.Study | None = None
        self._teller: optuna.Study | None = None
        self._sampler_key: Any = None
        self._forget()

    def _forget(self) -> None:
        """Drop what was read (the study was created or deleted, or it vanished)."""
        self._study_id: int | None = None
        self._report_key: str | None = None
        self._views: list[TrialView] = []  # every trial read, by number (Optuna numbers are 0, 1, ...)
        self._live: set[int] = set()  # the numbers of the trials that can still change
        self._ledger: Ledger | None = None
        self.converted = 0  # trials converted to views so far (each finished one once): for tests

    # ------------------------------------------------------------------------------------ observe

    def view(self) -> StudyView | None:
        """The stored study, or ``None`` if it does not exist yet."""
        with storage_errors("cannot read the study"):
            try:
                study_id = self._id()
                return study_view(
                    self.study_name,
                    self.storage.get_study_directions(study_id),
                    self.storage.get_study_system_attrs(study_id),
                )
            except KeyError:  # not created yet, or deleted behind the operator's back
                self._forget()
                return None

    def trials(self) -> tuple[TrialView, ...]:
        """Every trial, by number: the finished ones as first read, the others read afresh."""
        return self.read()[0]

    def read(self) -> tuple[tuple[TrialView, ...], Summary]:
        """Every trial (as :meth:`trials`) and the ledger's :class:`~hpo_operator.core.ledger.Summary`
        of them, for ``decide``: only the trials that were live and the new ones are converted."""
        with storage_errors("cannot read the trials"):
            study_id = self._id()
            frozen = self.storage.get_all_trials(study_id, deepcopy=False)
            if self._ledger is None:
                directions = study_view(self.study_name, self.storage.get_study_directions(study_id), {})
                self._ledger = Ledger(directions.directions)
            views, ledger = self._views, self._ledger
            if len(frozen) < len(views):  # trials never go: the study was replaced
                self._forget()
                return self.read()
            for n in [*sorted(self._live), *range(len(views), len(frozen))]:
                t = frozen[n]
                if t.number != n:  # pragma: no cover - Optuna numbers a study's trials 0, 1, ...
                    raise RuntimeError(f"trial numbers of {self.study_name} are not 0..{len(frozen) - 1}")
                v = trial_view(t)
                self.converted += 1
                if n < len(views):
                    views[n] = v
                else:
                    views.append(v)
                if v.finished:
                    self._live.discard(n)
                    ledger.add(v)
                else:
                    self._live.add(n)
            return tuple(views), ledger.summary(views[n] for n in self._live)

    def _id(self) -> int:
        """The study's id (kept: it never changes); KeyError if the study does not exist."""
        if self._study_id is None:
            self._study_id = self.storage.get_study_id_from_name(self.study_name)
        return self._study_id

    # ----------------------------------------------------------------------------------------- act

    def create(self, directions: Sequence[str], spec: StudySpec) -> None:
        with storage_errors("cannot create the study"):
            study = optuna.create_study(
                study_name=self.study_name,
                storage=self.storage,
                directions=list(directions),
                load_if_exists=True,
            )
            # The objectives' names, read back as ``study.metric_names``: optuna-dashboard and Optuna's
            # plots label the values with them. What ``Study.set_metric_names`` stores, without its
            # ExperimentalWarning.
            if METRIC_NAMES_ATTR not in self.storage.get_study_system_attrs(study._study_id):
                self.storage.set_study_system_attr(study._study_id, METRIC_NAMES_ATTR, list(spec.metrics))
        self._study = None
        self._forget()

    def study(self, spec: StudySpec, generation: int | None) -> optuna.Study:
        """The long-lived study object asking with the spec's sampler (rebuilt when the spec changes)."""
        key = (generation, spec.sampler)
        if self._study is None or self._sampler_key != key:
            with storage_errors("cannot load the study"):
                study_id = self._id()
                count = len(self.storage.get_all_trials(study_id, deepcopy=False))
                sampler = search_space.build_sampler(spec, trials_so_far=count)
                self._study = optuna.load_study(
                    study_name=self.study_name, storage=self.storage, sampler=sampler
                )
            self._sampler_key = key
        return self._study

    def enqueue(
        self, spec: StudySpec, generation: int | None, start: int, params: Sequence[Mapping[str, Any]]
    ) -> None:
        study = self.study(spec, generation)
        with storage_errors("cannot enqueue parameter sets"):
            for p in params:
                study.enqueue_trial(search_space.coerce_params(spec, p), skip_if_exists=True)
            self.storage.set_study_system_attr(study._study_id, ATTR_ENQUEUED, start + len(params))

    def ask(self, spec: StudySpec, generation: int | None) -> tuple[int, dict[str, Any]]:
        """A new trial (an enqueued one first) with the spec's distributions: its number and parameters."""
        study = self.study(spec, generation)
        with storage_errors("cannot ask for a trial"):
            trial = study.ask(search_space.distributions(spec))
            return trial.number, dict(trial.params)

    def finish_ask(self, spec: StudySpec, generation: int | None, number: int) -> None:
        """Store the parameters a RUNNING trial misses (its ``ask`` was cut short), as ``ask`` does."""
        study = self.study(spec, generation)
        with storage_errors("cannot complete a trial's parameters"):
            trial = optuna.Trial(study, self._trial_id(number))
            for name, dist in search_space.distributions(spec).items():
                _suggest(trial, name, dist)

    def report_key(self) -> str:
        """The study's key for the report endpoint's tokens, made the first time it is asked for."""
        if self._report_key is None:
            with storage_errors("cannot read the study's report key"):
                study_id = self._id()
                key = self.storage.get_study_system_attrs(study_id).get(tokens.ATTR_REPORT_KEY)
                if not isinstance(key, str):
                    self.storage.set_study_system_attr(study_id, tokens.ATTR_REPORT_KEY, tokens.new_key())
                    # As stored: of two writers at once (a leader and its successor), the last one's.
                    key = self.storage.get_study_system_attrs(study_id)[tokens.ATTR_REPORT_KEY]
            self._report_key = key
        return self._report_key

    def set_attempt(self, number: int, attempt: int) -> bool:
        """Record the attempt about to run (user attribute ``hpo:attempts`` = attempts so far)."""
        return self._set_attr(number, ATTR_ATTEMPTS, attempt + 1, user=True)

    def mark_launched(self, number: int, attempt: int) -> bool:
        return self._set_attr(number, ATTR_LAUNCHED, attempt, user=False)

    def fail(self, number: int, reason: str) -> None:
        """Tell a RUNNING trial FAIL with a reason; nothing if it finished meanwhile."""
        with storage_errors("cannot fail a trial"):
            trial_id = self._trial_id(number)
            if self.storage.get_trial(trial_id).state.is_finished():
                return
            try:
                self.storage.set_trial_user_attr(trial_id, ATTR_FAIL_REASON, redact.redact(reason)[:1000])
            except UpdateFinishedTrialError:
                return
            # Through a study with a plain sampler: the Grid sampler's after_trial may call
            # study.stop(), which raises outside study.optimize().
            self._tell_study().tell(number, state=TrialState.FAIL, skip_if_finished=True)

    def record_announced(self, announced: Announced) -> None:
        with storage_errors("cannot record announcements"):
            study_id = self._id()
            self.storage.set_study_system_attr(study_id, ATTR_ANNOUNCED, announced.to_json())

    def delete(self) -> bool:
        """Delete the study from the storage; ``False`` if it did not exist."""
        with storage_errors("cannot delete the study"):
            try:
                study_id = self.storage.get_study_id_from_name(self.study_name)
            except KeyError:
                return False
            self.storage.delete_study(study_id)
        self._study = self._teller = None
        self._forget()
        return True

    # ------------------------------------------------------------------------------------ helpers

    def _trial_id(self, number: int) -> int:
        study_id = self._id()
        return self.storage.get_trial_id_from_study_id_trial_number(study_id, number)

    def _tell_study(self) -> optuna.Study:
        if self._teller is None:
            self._teller = optuna.load_study(
                study_name=self.study_name, storage=self.storage, sampler=optuna.samplers.RandomSampler()
            )
        return self._teller

    def _set_attr(self, number: int, key: str, value: Any, *, user: bool) -> bool:
        with storage_errors("cannot update a trial"):
            trial_id = self._trial_id(number)
            try:
                if user:
                    self.storage.set_trial_user_attr(trial_id, key, value)
                else:
                    self.storage.set_trial_system_attr(trial_id, key, value)
            except UpdateFinishedTrialError:
                return False  # it finished meanwhile: a finished trial is final
            return True


def _suggest(trial: optuna.Trial, name: str, dist: optuna.distributions.BaseDistribution) -> None:
    """Suggest ``name`` from ``dist`` (one of the distributions ``ask`` uses) through the public API."""
    if isinstance(dist, optuna.distributions.CategoricalDistribution):
        trial.suggest_categorical(name, list(dist.choices))
    elif isinstance(dist, optuna.distributions.IntDistribution):
        trial.suggest_int(name, dist.low, dist.high, step=dist.step, log=dist.log)
    elif isinstance(dist, optuna.distributions.FloatDistribution):
        trial.suggest_float(name, dist.low, dist.high, step=dist.step, log=dist.log)
    else:  # pragma: no cover - search_space.distributions makes only these three
        raise TypeError(f"{name}: unsupported distribution {dist!r}")
