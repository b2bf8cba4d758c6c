"""A study's shared GPU claims on the cluster (``resource.k8s.io/v1`` ResourceClaims): the API calls.

What to do is :mod:`hpo_operator.core.claims`' (which claim a new pod takes, which claims go, what to
tell); this module lists the study's claims and pods, creates and deletes claims, and checks what the
claims need from the cluster: the DRA API and the DeviceClass. "Already exists" and "not found" are
success, so every call may be repeated after a crash.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from hpo_operator.core import claims, names
from hpo_operator.core.claims import ClaimView, GpuState, PodSlot
from hpo_operator.core.pods import Owner
from hpo_operator.core.spec import StudySpec
from hpo_operator.shell.kube import Kube, answering, api_error, api_message

PLURAL_CLAIMS = "resourceclaims"
PLURAL_CLASSES = "deviceclasses"


class GpuUnavailable(RuntimeError):
    """A trial pod cannot get a GPU claim now (no DRA API, no DeviceClass, a claim refused); the trial
    waits RUNNING with no pod and gets one once this is fixed. ``state`` says what to tell."""

    def __init__(self, state: GpuState) -> None:
        super().__init__(state.message)
        self.state = state


@dataclass(frozen=True)
class GpuClaims:
    """The ResourceClaims of one HPOStudy."""

    kube: Kube
    spec: StudySpec
    owner: Owner
    default_class: str | None

    @property
    def _custom(self) -> client.CustomObjectsApi:
        return self.kube.custom

    # -------------------------------------------------------------------------------- observation

    @answering
    def observe(self) -> tuple[list[ClaimView], list[PodSlot]]:
        """The study's claims, and its pods with the claim each references (read from the API now)."""
        ns, study = self.owner.namespace, self.owner.name
        try:
            listed = self._custom.list_namespaced_custom_object(
                claims.DRA_GROUP,
                claims.DRA_VERSION,
                ns,
                PLURAL_CLAIMS,
                label_selector=names.study_selector(study),
            )
        except ApiException as e:
            if e.status == 404:
                raise GpuUnavailable(self._no_api()) from None
            raise api_error(e, f"cannot list the ResourceClaims of {study}") from None
        views = [claims.claim_view(c) for c in listed.get("items") or ()]
        slots = [s for s in (claims.pod_slot(p) for p in self.kube.list_pods(ns, study)) if s is not None]
        return views, slots

    # ------------------------------------------------------------------------------------- checks

    def _no_api(self) -> GpuState:
        return GpuState(
            False,
            "DRAUnavailable",
            f"the cluster does not serve {claims.DRA_API_VERSION} (Dynamic Resource Allocation, GA in "
            "Kubernetes 1.34), so trials cannot share a GPU through ResourceClaims: set "
            "spec.trials.perGPU to 1 and remove spec.gpu to use nvidia.com/gpu limits",
            field=claims.sharing_field(self.spec),
        )

    @answering
    def check(self) -> None:
        """Raise :class:`GpuUnavailable` when the cluster lacks the DRA API or the DeviceClass."""
        try:
            client.ResourceV1Api(self.kube.api).get_api_resources()
        except ApiException as e:
            if e.status == 404:
                raise GpuUnavailable(self._no_api()) from None
            raise api_error(e, f"cannot read the {claims.DRA_API_VERSION} API") from None
        cls, where = claims.device_class(self.spec, self.default_class)
        try:
            self._custom.get_cluster_custom_object(claims.DRA_GROUP, claims.DRA_VERSION, PLURAL_CLASSES, cls)
        except ApiException as e:
            if e.status == 404:
                raise GpuUnavailable(
                    GpuState(
                        False,
                        "DeviceClassNotFound",
                        f"DeviceClass {cls!r} (from {where}) does not exist: no trial pod is started until "
                        "it does (install the GPU's DRA driver, or name an existing DeviceClass)",
                        field=where if where.startswith("spec.") else claims.sharing_field(self.spec),
                    )
                ) from None
            if e.status == 403:
                return  # not allowed to read DeviceClasses: the scheduler will say if it is missing
            raise api_error(e, f"cannot read DeviceClass {cls}") from None

    # ------------------------------------------------------------------------------------ actions

    def slot_for_new_pod(self) -> str:
        """The claim a new trial pod references (created first if it is new), chosen by
        :func:`~hpo_operator.core.claims.assign_slot` from the claims and pods as they are now."""
        self.check()
        views, slots = self.observe()
        slot = claims.assign_slot(self.owner.name, self.owner.uid, views, slots, self.spec.trials.per_gpu)
        if slot.create:
            self.create(slot.claim)
        return slot.claim

    @answering
    def create(self, name: str) -> None:
        body = claims.render_claim(self.spec, self.owner, name, self.default_class)
        try:
            self._custom.create_namespaced_custom_object(
                claims.DRA_GROUP, claims.DRA_VERSION, self.owner.namespace, PLURAL_CLAIMS, body
            )
        except ApiException as e:
            if e.status == 409:
                return  # ours from a reconcile cut short (a foreign one was seen and skipped by name)
            if e.status in (400, 403, 422) and " cannot create resource " not in api_message(e):
                raise GpuUnavailable(
                    GpuState(
                        False,
                        "ClaimRejected",
                        f"the API server refused ResourceClaim {name}: {api_message(e)}",
                        field="spec.gpu" if self.spec.gpu is not None else claims.sharing_field(self.spec),
                    )
                ) from None
            raise api_error(e, f"cannot create ResourceClaim {name}") from None

    @answering
    def delete(self, name: str) -> None:
        try:
            self._custom.delete_namespaced_custom_object(
                claims.DRA_GROUP, claims.DRA_VERSION, self.owner.namespace, PLURAL_CLAIMS, name
            )
        except ApiException as e:
            if e.status != 404:
                raise api_error(e, f"cannot delete ResourceClaim {name}") from None

    def tidy(self, *, phase: str, running: int, started: int, now: dt.datetime | None = None) -> GpuState:
        """After a reconcile's steps: delete the claims no trial needs (see
        :func:`~hpo_operator.core.claims.surplus`), and say how the rest stand."""
        views, slots = self.observe()
        wanted = claims.demand(self.spec, phase=phase, running=running, started=started)
        gone = claims.surplus(self.owner.uid, views, slots, self.spec.trials.per_gpu, wanted)
        for name in gone:
            self.delete(name)
        left = [v for v in views if v.name not in gone]
        return claims.gpu_state(
            self.spec, left, slots, now or dt.datetime.now(dt.UTC), default_class=self.default_class
        )
