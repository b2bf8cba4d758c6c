"""Several trials on one GPU: shared DRA claims on a cluster, pinned processes locally.

With ``spec.trials.perGPU`` > 1 (or ``spec.gpu`` given) a trial pod does not ask for ``nvidia.com/gpu``:
it references a ResourceClaim (``resource.k8s.io/v1``) owned by the study, ``<name>-gpu-<index>``, which
asks for exactly one device of a DeviceClass (``spec.gpu.deviceClassName``, else the operator's default,
``gpu.nvidia.com``: the NVIDIA DRA driver's), with the driver's opaque configuration passed through
(``spec.gpu.driverConfig``: time-slicing or MPS settings). Up to ``perGPU`` pods reference one claim, so
the scheduler puts them on the one device it allocated to it: that is how DRA shares a device.

Everything here is a pure function of what was observed (claims and pods as the API server's JSON),
never of what an earlier reconcile remembered: the claim controller de-allocates a claim once no pod
uses it, so between waves a claim may land on another device. The shell (``hpo_operator.shell.gpu``)
lists, creates and deletes; this module decides:

* :func:`assign_slot`: which claim a new trial pod references: the fullest claim with a free slot (so
  trials pack onto as few GPUs as possible), else a new claim with the lowest free index;
* :func:`surplus`: which claims go: those no active pod uses, beyond what the trials still to run need
  (none once no trial is left to start);
* :func:`gpu_state`: what to tell: the claims, their devices and trials, or that a claim stays
  unallocated (past :data:`ALLOCATION_GRACE`), naming the field to look at;
* :func:`attach`: a rendered trial pod's GPU taken from the claim instead of ``nvidia.com/gpu``;
* :func:`assign_device`, :func:`local_parallelism`: the same for ``hpo run``'s processes on local GPUs.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from hpo_operator.core import names
from hpo_operator.core.observe import parse_time
from hpo_operator.core.pods import Owner
from hpo_operator.core.spec import GPU_CLAIM, GPU_RESOURCE, StudySpec

DRA_GROUP = "resource.k8s.io"
DRA_VERSION = "v1"
DRA_API_VERSION = f"{DRA_GROUP}/{DRA_VERSION}"
DEFAULT_DEVICE_CLASS = "gpu.nvidia.com"  # the NVIDIA DRA driver's DeviceClass
DEVICE_CLASS_SETTING = "HPO_GPU_DEVICE_CLASS (the chart's gpu.deviceClassName)"
REQUEST = GPU_CLAIM  # the device request's name in the claim, and the pod's name for the claim
# A claim that a pod waits for stays unallocated this long before the study says so.
ALLOCATION_GRACE = dt.timedelta(seconds=30)

COND_GPU_CLAIMS = "GPUClaimsReady"
MAX_LISTED = 10  # claims named in the condition's message
_CLAIM_NAME = re.compile(r"^(?P<study>.+)-gpu-(?P<index>\d+)$")


# ---------------------------------------------------------------------------------------- settings


def device_class(spec: StudySpec, default: str | None) -> tuple[str, str]:
    """The DeviceClass the study's claims ask for, and where it is set (a field, or the operator's)."""
    if spec.gpu is not None and spec.gpu.device_class_name:
        return spec.gpu.device_class_name, "spec.gpu.deviceClassName"
    return default or DEFAULT_DEVICE_CLASS, DEVICE_CLASS_SETTING


def sharing_field(spec: StudySpec) -> str:
    """The field that asks for DRA claims: ``spec.trials.perGPU`` when above 1, else ``spec.gpu``."""
    return "spec.trials.perGPU" if spec.trials.per_gpu > 1 else "spec.gpu"


def claim_name(study: str, index: int) -> str:
    return f"{study}-gpu-{index}"


# ---------------------------------------------------------------------------------------- rendering


def render_claim(spec: StudySpec, owner: Owner, name: str, default_class: str | None) -> dict[str, Any]:
    """A ResourceClaim for one GPU, owned by the HPOStudy (garbage-collected with it)."""
    cls, _ = device_class(spec, default_class)
    devices: dict[str, Any] = {
        "requests": [
            {
                "name": REQUEST,
                "exactly": {"deviceClassName": cls, "allocationMode": "ExactCount", "count": 1},
            }
        ]
    }
    if spec.gpu is not None and spec.gpu.driver_config is not None:
        config = spec.gpu.driver_config
        devices["config"] = [
            {
                "requests": [REQUEST],
                "opaque": {"driver": config.driver, "parameters": dict(config.parameters)},
            }
        ]
    return {
        "apiVersion": DRA_API_VERSION,
        "kind": "ResourceClaim",
        "metadata": {
            "name": name,
            "namespace": owner.namespace,
            "labels": {names.LABEL_STUDY: owner.name, names.LABEL_MANAGED_BY: names.MANAGER},
            "ownerReferences": [owner.reference()],
        },
        "spec": {"devices": devices},
    }


def attach(pod: dict[str, Any], claim: str) -> dict[str, Any]:
    """The trial pod ``pod`` (as :func:`hpo_operator.core.pods.render_pod` made it) with its GPU from
    the ResourceClaim ``claim``: a pod-level claim reference and the container's ``resources.claims``,
    and no ``nvidia.com/gpu`` (the default template's; the spec refuses an explicit one)."""
    spec = pod["spec"]
    spec["resourceClaims"] = [
        *(c for c in spec.get("resourceClaims") or () if c.get("name") != REQUEST),
        {"name": REQUEST, "resourceClaimName": claim},
    ]
    container = spec["containers"][0]
    resources = dict(container.get("resources") or {})
    for section in ("limits", "requests"):
        quantities = resources.get(section)
        if isinstance(quantities, Mapping) and GPU_RESOURCE in quantities:
            kept = {k: v for k, v in quantities.items() if k != GPU_RESOURCE}
            if kept:
                resources[section] = kept
            else:
                del resources[section]
    resources["claims"] = [
        *(c for c in resources.get("claims") or () if c.get("name") != REQUEST),
        {"name": REQUEST},
    ]
    container["resources"] = resources
    return pod


# -------------------------------------------------------------------------------------- observation


@dataclass(frozen=True)
class ClaimView:
    """One ResourceClaim of a study, as observed."""

    name: str
    index: int | None  # the N of <study>-gpu-N; None for a name the operator would not give
    owner_uid: str | None
    device: str | None  # the allocated device as driver/pool/device; None: not allocated
    deleting: bool = False
    created: dt.datetime | None = None
    reserved_for: tuple[str, ...] = ()  # the pods the claim is reserved for (status.reservedFor)


@dataclass(frozen=True)
class PodSlot:
    """A trial pod and the claim it references; ``active`` while it uses (or waits for) the GPU."""

    pod: str
    claim: str
    active: bool
    created: dt.datetime | None = None
    waiting: str | None = None  # why the scheduler has not placed it (PodScheduled=False's message)


def claim_view(claim: Mapping[str, Any]) -> ClaimView:
    meta = claim.get("metadata") or {}
    name = str(meta.get("name"))
    match = _CLAIM_NAME.match(name)
    owner = next(
        (o.get("uid") for o in meta.get("ownerReferences") or () if o.get("kind") == names.KIND),
        None,
    )
    status = claim.get("status") or {}
    results = ((status.get("allocation") or {}).get("devices") or {}).get("results") or ()
    device = next(
        (
            f"{r.get('driver')}/{r.get('pool')}/{r.get('device')}"
            for r in results
            if r.get("request") == REQUEST
        ),
        None,
    )
    return ClaimView(
        name=name,
        index=int(match.group("index")) if match else None,
        owner_uid=owner,
        device=device,
        deleting=bool(meta.get("deletionTimestamp")),
        created=parse_time(meta.get("creationTimestamp")),
        reserved_for=tuple(str(r.get("name")) for r in status.get("reservedFor") or ()),
    )


def pod_claim(pod: Mapping[str, Any]) -> str | None:
    """The ResourceClaim a trial pod takes its GPU from, if it references one."""
    for ref in (pod.get("spec") or {}).get("resourceClaims") or ():
        if ref.get("name") == REQUEST and ref.get("resourceClaimName"):
            return str(ref["resourceClaimName"])
    return None


def pod_slot(pod: Mapping[str, Any]) -> PodSlot | None:
    """A trial pod → :class:`PodSlot`; ``None`` if it references no claim."""
    claim = pod_claim(pod)
    if claim is None:
        return None
    meta = pod.get("metadata") or {}
    status = pod.get("status") or {}
    phase = status.get("phase") or "Pending"
    waiting = None
    if phase == "Pending":
        for c in status.get("conditions") or ():
            if c.get("type") == "PodScheduled" and c.get("status") == "False":
                waiting = str(c.get("message") or c.get("reason") or "not scheduled")
    return PodSlot(
        pod=str(meta.get("name")),
        claim=claim,
        active=phase not in ("Succeeded", "Failed"),
        created=parse_time(meta.get("creationTimestamp")),
        waiting=waiting,
    )


def occupancy(claims: Iterable[ClaimView], pods: Iterable[PodSlot]) -> dict[str, int]:
    """Active pods per claim (every claim listed, 0 for an idle one)."""
    used = {c.name: 0 for c in claims}
    for p in pods:
        if p.active:
            used[p.claim] = used.get(p.claim, 0) + 1
    return used


# ----------------------------------------------------------------------------------------- decisions


@dataclass(frozen=True)
class Slot:
    """Where a new trial pod goes: ``claim``, to be created first when ``create``."""

    claim: str
    create: bool


def assign_slot(
    study: str, owner_uid: str, claims: Sequence[ClaimView], pods: Sequence[PodSlot], per_gpu: int
) -> Slot:
    """The claim a new trial pod references: the fullest of the study's claims with fewer than
    ``per_gpu`` active pods (a claim being deleted takes none), else a new one with the lowest free
    index (a name held by anything, even a claim being deleted, is not reused)."""
    used = occupancy(claims, pods)
    open_ = [
        c
        for c in claims
        if c.owner_uid == owner_uid and not c.deleting and c.index is not None and used[c.name] < per_gpu
    ]
    if open_:
        best = min(open_, key=lambda c: (-used[c.name], c.index))
        return Slot(best.name, create=False)
    taken = {c.name for c in claims} | {p.claim for p in pods}
    index = 0
    while claim_name(study, index) in taken:
        index += 1
    return Slot(claim_name(study, index), create=True)


def demand(spec: StudySpec, *, phase: str, running: int, started: int) -> int:
    """How many trials may want a slot soon: the RUNNING ones and those still to be asked, up to the
    parallelism; none once the study is finished or suspended (running pods keep their claims anyway)."""
    if phase in ("Succeeded", "Failed", "Suspended"):
        return 0
    return min(spec.trials.parallelism, running + max(0, spec.trials.total - started))


def surplus(
    owner_uid: str, claims: Sequence[ClaimView], pods: Sequence[PodSlot], per_gpu: int, wanted: int
) -> list[str]:
    """The study's claims to delete: those no active pod uses, beyond the ``ceil(wanted / per_gpu)``
    claims the trials still to run need (claims in use count towards those; the lowest indexes stay)."""
    used = occupancy(claims, pods)
    mine = [c for c in claims if c.owner_uid == owner_uid and not c.deleting]
    busy = [c for c in mine if used[c.name] > 0]
    idle = sorted(
        (c for c in mine if used[c.name] == 0), key=lambda c: (c.index is None, c.index or 0, c.name)
    )
    keep = max(0, math.ceil(wanted / per_gpu) - len(busy))
    return [c.name for c in idle[keep:]]


def _by_index(c: ClaimView) -> tuple[bool, int, str]:
    return (c.index is None, c.index or 0, c.name)


@dataclass(frozen=True)
class GpuState:
    """What to tell about the study's GPUs: ``ok`` (``GPUClaimsReady`` True) or a problem, its reason
    (``DRAUnavailable``, ``DeviceClassNotFound``, ``ClaimsUnallocated``, ``ClaimRejected``) and the field."""

    ok: bool
    reason: str
    message: str
    field: str | None = None


def gpu_state(
    spec: StudySpec,
    claims: Sequence[ClaimView],
    pods: Sequence[PodSlot],
    now: dt.datetime,
    *,
    default_class: str | None,
) -> GpuState:
    """The claims as they stand: a claim that active pods wait for and that stays unallocated past
    :data:`ALLOCATION_GRACE` is a problem (with the scheduler's word); else a summary."""
    cls, where = device_class(spec, default_class)
    used = occupancy(claims, pods)
    for c in sorted(claims, key=lambda c: c.name):
        if c.device is not None or c.deleting or used.get(c.name, 0) == 0:
            continue
        waiting = [p for p in pods if p.active and p.claim == c.name]
        since = min((p.created for p in waiting if p.created is not None), default=c.created)
        if since is None or now - since < ALLOCATION_GRACE:
            continue
        said = next((p.waiting for p in waiting if p.waiting), None)
        why = f": {said}" if said else ""
        waited = int((now - since).total_seconds())
        return GpuState(
            False,
            "ClaimsUnallocated",
            f"ResourceClaim {c.name} (DeviceClass {cls}, from {where}) has not been allocated a device "
            f"for {waited}s while {len(waiting)} trial pod(s) wait for it{why}"[:900],
            field=where if where.startswith("spec.") else sharing_field(spec),
        )
    live = [c for c in claims if not c.deleting]
    if not live:
        return GpuState(True, "NoClaims", f"no ResourceClaim is needed now (DeviceClass {cls})")
    parts = []
    for c in sorted(live, key=_by_index)[:MAX_LISTED]:
        device = c.device.rsplit("/", 1)[-1] if c.device else "no device yet"
        parts.append(f"{c.name} on {device} ({used.get(c.name, 0)} trial(s))")
    if len(live) > MAX_LISTED:
        parts.append(f"and {len(live) - MAX_LISTED} more")
    return GpuState(
        True,
        "ClaimsAllocated",
        f"{len(live)} ResourceClaim(s) of DeviceClass {cls}, up to {spec.trials.per_gpu} trial(s) each: "
        + ", ".join(parts),
    )


# ------------------------------------------------------------------------------------ hpo run (local)


def local_parallelism(parallelism: int, gpus: int, per_gpu: int) -> int:
    """How many trial processes ``hpo run`` runs at once: the parallelism, at most ``per_gpu`` per
    visible GPU (no GPU: the parallelism; ``perGPU`` has no effect)."""
    if gpus <= 0:
        return parallelism
    return min(parallelism, gpus * per_gpu)


def assign_device(devices: Sequence[str], in_use: Iterable[str], per_gpu: int) -> str | None:
    """The GPU (a ``CUDA_VISIBLE_DEVICES`` entry) a new local trial process is pinned to: the least
    used one with fewer than ``per_gpu`` processes (the first such, on a tie); ``None`` if all are full."""
    counts = {d: 0 for d in devices}
    for d in in_use:
        if d in counts:
            counts[d] += 1
    free = [d for d in devices if counts[d] < per_gpu]
    if not free:
        return None
    return min(free, key=lambda d: (counts[d], devices.index(d)))
