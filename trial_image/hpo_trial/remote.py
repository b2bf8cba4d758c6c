"""The light way to the study: a trial process that reports through its report endpoint.

The operator (and ``hpo run``) serves the endpoint and gives each attempt its URL and its own token
(``HPO_REPORT_URL``, ``HPO_REPORT_TOKEN``). The trial process needs the standard library only: no
database driver, no SQLAlchemy, no Optuna, so a cheap trial starts in a fraction of the CPU time the
direct path (:mod:`hpo_trial.direct`) costs. The endpoint runs the same code the direct path does, on its
side, for the attempt the token names; the outage policy of :mod:`hpo_trial.reporting` is applied here,
so an endpoint that does not answer (an operator restarting) is an outage like a database restart.

The wire: ``POST <url>/v1/trials/<op>`` with ``Authorization: Bearer <token>`` and a JSON object naming
the study, the trial number and the attempt. Answers: 200 with a JSON object; 409 ``{"superseded": why}``
(this attempt no longer owns its trial); 503 ``{"error": why}`` (the storage behind it does not answer);
400, 403 and 404 ``{"error": why}`` (a bad request, a token that is not this attempt's, a study the
endpoint does not serve).
"""

from __future__ import annotations

import http.client
import json
import logging
import urllib.error
import urllib.request
from typing import Any

from hpo_trial.contract import TrialContract, storage_retry_seconds
from hpo_trial.policy import (
    AttemptSuperseded,
    EndpointUnavailable,
    StorageUnavailable,
    TrialBase,
)

log = logging.getLogger("hpo_trial")

API = "/v1/trials"
# A request's time limit: a call is a few statements, each under the endpoint's database statement
# timeout (60 s), so a slow database answers (or fails) before the trial gives up on the request.
TIMEOUT_S = 150.0
# What an endpoint that does not answer raises here (its own outage, or the storage's behind it).
ENDPOINT_ERRORS: tuple[type[BaseException], ...] = (EndpointUnavailable, StorageUnavailable)


class ReportRefused(RuntimeError):
    """The endpoint refused the request for good (a token that is not this attempt's, a study it does not
    serve, a malformed request): not an outage, nothing to retry; the message says why."""


class RemoteTrial(TrialBase):
    """One running trial of the shared study, reported through the report endpoint.

    The same calls, answers and outage policy as :class:`hpo_trial.direct.TrialHandle`, which the
    endpoint runs on its side. What the direct handle keeps in memory for a retry (its own reports, the
    rungs earlier attempts completed) is kept here and sent along, so an endpoint that restarted, or
    another replica of it, decides the same.
    """

    outage_errors = ENDPOINT_ERRORS

    def __init__(self, contract: TrialContract, retry_seconds: float | None = None) -> None:
        if not contract.report_url or not contract.report_token:
            raise ValueError("a RemoteTrial needs the contract's report URL and token")
        self.contract = contract
        self.retry_seconds = storage_retry_seconds() if retry_seconds is None else retry_seconds
        self.reported = {}
        self.missing_metric = None
        self.finished = False
        self.superseded: str | None = None
        self.url = contract.report_url.rstrip("/")
        opened = self._retried(
            lambda: self._call("open"), f"Trial {self.number}: opening study {contract.study_name}"
        )
        self._earlier_rungs: dict[str, Any] = dict(opened.get("earlierRungs") or {})

    # ---------------------------------------------------------------------------------- the calls

    def report_once(self, value: float, step: int) -> None:
        self._call("report", step=step, value=value)

    def _should_prune(self) -> bool:
        return bool(self._call("should_prune", **self._own()).get("prune"))

    def prune(self) -> None:
        """End the trial as PRUNED (retried while the endpoint or storage does not answer)."""
        if not self.finished:
            self._retried(lambda: self._call("prune", **self._own()), f"Trial {self.number}: telling PRUNED")
            self.finished = True
        log.info("Trial %d pruned.", self.number)

    def _finish(self, values: list[float]) -> None:
        if self.finished:
            return
        self._retried(
            lambda: self._call("complete", values=values), f"Trial {self.number}: telling the final value"
        )
        self.finished = True

    def fail(self, reason: str) -> bool:
        """End the trial as FAIL with a reason; whether this told it (False: it was already finished)."""
        told = False
        if not self.finished:
            extra = {"missingMetric": self.missing_metric} if self.missing_metric is not None else {}
            answer = self._retried(
                lambda: self._call("fail", reason=reason[:1000], **extra),
                f"Trial {self.number}: telling FAIL",
            )
            told = bool(answer.get("told"))
            self.finished = True
        self._told(told, reason)
        return told

    def set_attr(self, key: str, value: Any) -> None:
        """A user attribute on the trial (retried while the endpoint or storage does not answer)."""
        self._retried(
            lambda: self._call("set_attr", key=key, value=value), f"Trial {self.number}: setting {key}"
        )

    # ---------------------------------------------------------------------------------- the wire

    def _own(self) -> dict[str, Any]:
        """What a pruning decision of this attempt needs besides the stored trial."""
        return {
            "reported": {str(k): v for k, v in self.reported.items()},
            "earlierRungs": self._earlier_rungs,
        }

    def _call(self, op: str, **args: Any) -> dict[str, Any]:
        if self.superseded is not None:
            raise AttemptSuperseded(self.superseded)  # said once already
        c = self.contract
        # The pruner the attempt was started with (HPO_PRUNER) decides, as on the direct path.
        body = {
            "study": c.study_name,
            "trial": c.trial_number,
            "attempt": c.attempt,
            "pruner": c.pruner,
            **args,
        }
        request = urllib.request.Request(
            f"{self.url}{API}/{op}",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {c.report_token}"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
                answer = json.loads(response.read() or b"{}")
        except ValueError:  # a 200 that is not the endpoint's (a proxy's page): not there yet
            raise EndpointUnavailable(
                f"the report endpoint {self.url} answered with no JSON object"
            ) from None
        except urllib.error.HTTPError as e:
            payload = _payload(e)
            why = str(payload.get("error") or payload.get("superseded") or e.reason)
            if e.code == 409:
                self.superseded = why  # the endpoint's words name the trial and the attempt
                log.warning("%s", self.superseded)
                raise AttemptSuperseded(self.superseded) from None
            if e.code >= 500:
                raise EndpointUnavailable(f"{why} (the report endpoint {self.url})") from None
            if e.code == 400:
                raise ValueError(why) from None
            raise ReportRefused(
                f"the report endpoint {self.url} refused trial {self.number}: {why}"
            ) from None
        except (urllib.error.URLError, http.client.HTTPException, OSError) as e:
            reason = e.reason if isinstance(e, urllib.error.URLError) else e
            raise EndpointUnavailable(f"the report endpoint {self.url} does not answer: {reason}") from None
        if not isinstance(answer, dict):
            raise EndpointUnavailable(f"the report endpoint {self.url} answered with no JSON object")
        return answer


def _payload(error: urllib.error.HTTPError) -> dict[str, Any]:
    try:
        payload = json.loads(error.read() or b"{}")
    except (ValueError, OSError):
        return {}
    return payload if isinstance(payload, dict) else {}
